"""Sweeps that feed sweeps (trainables/chain.py): a sources sweep, then an ATTEMPT sweep that
takes its prompts, as one chain; the source runs named on every ATTEMPT run; a missing source
sweep stops the second spec before any work."""

from pathlib import Path

import pytest
import yaml

from superpos.cli import main

COMMON = {
    "base": {"model": "tiny-t5", "batch_size": 8, "eval_batch_size": 16, "max_train_examples": 16, "max_eval_examples": 8,
             "device": "cpu", "dropout": False},
    "epochs": 1, "resources": {"cpu": 1}, "max_failures": 0,
}


def write_specs(tmp_path: Path) -> tuple[Path, Path]:
    sources = {"name": "src", "experiment": "chain-src", **COMMON, "grid": {"task": ["cb", "rte"]},
               "base": {**COMMON["base"], "method": "simple"}}
    attempt = {"name": "att", "experiment": "chain-att", **COMMON, "grid": {"task": ["mrpc", "cb"]},
               "base": {**COMMON["base"], "method": "attempt", "prompt_len": 10},
               "method_options": {"attempt": {"source_prompts": {"sweep": "src", "tasks": ["rte", "cb"]}}}, "group_size": 2}
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(yaml.safe_dump(sources))
    b.write_text(yaml.safe_dump(attempt))
    return a, b


def runs(client, experiment, role="trial"):
    exp = client.get_experiment_by_name(experiment)
    return [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("superpos.role") == role]


@pytest.mark.slow
def test_a_chain_feeds_attempt_the_best_source_runs_and_a_missing_source_stops_before_work(data_dir, tmp_path, capsys):
    import ray
    from mlflow.tracking import MlflowClient

    a, b = write_specs(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    common = ["--tracking-uri", uri, "--data-dir", str(data_dir)]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        args = ["sweep", str(a), str(b), "--storage-path", str(tmp_path / "ray"), *common]
        assert main(args) == 0
        client = MlflowClient(uri)
        source_ids = {r.data.tags["task"]: r.info.run_id for r in runs(client, "chain-src")}
        attempt = runs(client, "chain-att")
        assert len(attempt) == 2 and all(r.data.tags["status"] == "finished" for r in attempt)
        for run in attempt:
            tags = run.data.tags
            assert tags["superpos.sources"] == "sweep" and tags["superpos.source_sweep"] == "src"
            assert tags["superpos.source_runs"] == f"rte={source_ids['rte']},cb={source_ids['cb']}"  # the spec's order
            assert source_ids["cb"] in run.data.params["source_prompts"]
        fetched = sorted((tmp_path / "ray" / "att" / "sources" / "src" / "tiny-t5").iterdir())
        assert [p.name.split("-")[0] for p in fetched] == ["cb", "rte"]

        # --resume of the finished chain: both stages skipped, nothing new
        assert main(args + ["--resume"]) == 0
        assert "sweep src has finished; skipped" in capsys.readouterr().out
        assert len(runs(client, "chain-att")) == 2

        # the source sweep removed: the ATTEMPT spec stops before any work, naming it
        (parent,) = runs(client, "chain-src", role="sweep")
        client.delete_run(parent.info.run_id)
        fresh = tmp_path / "ray2"
        assert main(["sweep", str(b), "--storage-path", str(fresh), *common]) == 2
        assert "source sweep 'src' not found" in capsys.readouterr().err
        assert not fresh.exists() and len(runs(client, "chain-att", role="sweep")) == 1
    finally:
        ray.shutdown()


@pytest.mark.slow  # an MLflow sqlite store takes 10-30 s to create on the shared 2-core machine
def test_resolution_takes_the_best_finished_run_per_task_and_model_and_names_what_is_missing(tmp_path):
    """A synthetic store (docs/mlflow-layout.md): an unfinished source sweep is refused; once
    finished, per (task, model) the finished run with the highest best_score is taken (a diverged
    run with a higher score is not); a task without a finished run is named."""
    import torch
    from mlflow import MlflowClient
    from safetensors.torch import save_file

    from superpos.errors import ConfigError
    from trainables.chain import fetch_sources, resolve_sources
    from trainables.spec import parse_spec

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("src", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(exp, tags={"superpos.role": "sweep", "superpos.sweep": "src"}).info.run_id
    ids = {}
    for name, task, score, status in (("low", "cb", 0.5, "finished"), ("high", "cb", 0.7, "finished"),
                                      ("diverged", "cb", 0.9, "diverged"), ("rte", "rte", 0.6, "finished")):
        rid = client.create_run(exp, tags={"mlflow.parentRunId": parent, "superpos.role": "trial", "task": task, "model": "tiny-t5",
                                           "status": status}).info.run_id
        client.log_metric(rid, "best_score", score)
        path = tmp_path / name / "prompt.safetensors"
        path.parent.mkdir()
        save_file({"prompt": torch.full((10, 64), score)}, str(path))
        client.log_artifact(rid, str(path))
        client.set_terminated(rid, "FINISHED")
        ids[name] = rid

    def spec(tasks):
        raw = {"name": "att", "experiment": "att", "base": {"method": "attempt", "model": "tiny-t5", "task": "mrpc"},
               "method_options": {"attempt": {"source_prompts": {"sweep": "src", "tasks": tasks}}}}
        return parse_spec(raw, "att.yaml")

    root = str(tmp_path / "ray" / "att")
    with pytest.raises(ConfigError, match="source sweep 'src' has not finished"):
        resolve_sources(spec(["cb"]), root, uri)
    client.set_terminated(parent, "FINISHED")
    with pytest.raises(ConfigError, match="att.yaml.*'src'.*no finished run of wic x tiny-t5"):
        resolve_sources(spec(["cb", "wic"]), root, uri)
    with pytest.raises(ConfigError, match="source sweep 'other' not found"):
        resolve_sources(parse_spec({"name": "x", "experiment": "x", "base": {"method": "attempt"},
                                    "method_options": {"attempt": {"source_prompts": {"sweep": "other", "tasks": ["cb"]}}}}, "x.yaml"), root, uri)
    s = spec(["cb", "rte"])
    resolve_sources(s, root, uri)
    fetch_sources(s, uri)
    (member,) = s.members()
    paths = member.config.method_options["source_prompts"]
    assert [Path(p).name for p in paths] == [f"cb-{ids['high']}.safetensors", f"rte-{ids['rte']}.safetensors"]
    from safetensors.torch import load_file

    assert float(load_file(paths[0])["prompt"][0, 0]) == pytest.approx(0.7)


def test_source_files_under_a_storage_uri_are_copied_to_the_local_cache(tmp_path, monkeypatch):
    """gs:// / s3:// storage: the training node reads its source prompts from a local copy at a
    path that is the same on every node (file:// stands in for the bucket)."""
    from superpos.config import TrainConfig
    from trainables.sources import localize

    monkeypatch.setenv("SUPERPOS_CACHE", str(tmp_path / "cache"))
    remote = tmp_path / "bucket" / "att" / "sources" / "src" / "tiny-t5" / f"cb-{'a' * 32}.safetensors"
    remote.parent.mkdir(parents=True)
    remote.write_bytes(b"prompt bytes")
    config = TrainConfig(method="attempt", method_options={"source_prompts": [remote.as_uri()]})
    (local,) = localize(config).method_options["source_prompts"]
    assert Path(local).read_bytes() == b"prompt bytes" and Path(local).is_relative_to(tmp_path / "cache" / "sources")
    assert localize(config).method_options["source_prompts"] == [local]  # the same path again
    plain = TrainConfig(method="attempt", method_options={"source_prompts": [str(remote)]})
    assert localize(plain) is plain
