"""End to end on a local Ray: `superpos sweep` (smoke spec, fused groups) and `superpos search`
(Optuna + ASHA) write the MLflow layout of docs/mlflow-layout.md; a second run resumes idempotently."""

import json
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from superpos.cli import main
from superpos.environment import collect, from_tags

SMOKE = Path(__file__).resolve().parent.parent / "sweeps" / "smoke.yaml"
EVAL_KEYS = {"score", "best_score", "train_loss", "epoch", "examples", "invalid_rate", "accuracy", "macro_f1"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def child_runs(uri, experiment):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("superpos.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("superpos.role") == "trial"]
    return client, parents, children


def test_smoke_sweep_logs_one_child_per_trial(local_ray, data_dir, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = ["sweep", str(SMOKE), "--storage-path", str(tmp_path / "ray"), "--tracking-uri", uri, "--data-dir", str(data_dir)]
    assert main(args) == 0
    client, parents, children = child_runs(uri, "superpos-smoke")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 6 and len({c.data.tags["superpos.trial_id"] for c in children}) == 6
    assert len({c.data.tags["superpos.group"] for c in children}) == 2  # 6 trials fused in 2 Ray trials
    for run in children:
        tags, params = run.data.tags, run.data.params
        assert run.info.status == "FINISHED" and tags["status"] == "finished"
        assert tags["mlflow.parentRunId"] == parents[0].info.run_id and tags["sweep"] == "smoke"
        assert tags["task"] == "cb" and tags["dropout"] in ("true", "false") and tags["seed"] == "0"
        assert tags["m"] == ("16" if tags["method"] == "superpos" else "") and tags["softmax"] == "false"
        assert params["epochs"] == "2" and params["method"] == tags["method"]
        assert EVAL_KEYS <= set(run.data.metrics)
        history = client.get_metric_history(run.info.run_id, "score")
        assert [m.step for m in history] == [4, 8]  # 32 examples / batch 8 = 4 steps per epoch
        assert [m.value for m in client.get_metric_history(run.info.run_id, "epoch")] == [1.0, 2.0]
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"prompt.safetensors", "config.json", "result.json", "environment.json"} <= artifacts
        # the worker's environment, here this machine's; its intra-op thread count is the Ray
        # worker's own (pytest's process, e.g. a pytest-xdist worker, may run another)
        worker, here = from_tags(tags), json.loads(json.dumps(collect()))
        assert isinstance(worker.pop("cpu_threads"), int) and worker == {k: v for k, v in here.items() if k != "cpu_threads"}
        if tags["method"] == "superpos":
            local = client.download_artifacts(run.info.run_id, "prompt.safetensors", str(tmp_path))
            tensors = load_file(local)
            assert tensors["p_prime"].shape == (10, 16) and tensors["E"].shape == (10, 64, 16)

    # --resume of a finished sweep changes nothing: no new runs, no repeated steps
    assert main(args + ["--resume"]) == 0
    client, parents, again = child_runs(uri, "superpos-smoke")
    assert len(parents) == 1 and len(again) == 6
    assert all(len(client.get_metric_history(r.info.run_id, "score")) == 2 for r in again)
    # starting it afresh in the same place is refused (it would mix two sweeps)
    assert main(args) == 2


def test_optuna_search_with_asha_writes_best(local_ray, data_dir, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    best = tmp_path / "best.yaml"
    args = ["search", "--task", "cb", "--method", "superpos", "--epochs", "2", "--batch-size", "8", "--max-train-examples", "16",
            "--max-eval-examples", "8", "--num-samples", "3", "--grace-period", "1", "--m-max", "32", "--name", "s",
            "--storage-path", str(tmp_path / "ray"), "--tracking-uri", uri, "--best-file", str(best), "--data-dir", str(data_dir)]
    assert main(args) == 0
    client, parents, children = child_runs(uri, "superpos-search")
    assert len(parents) == 1 and len(children) == 3
    # tiny-t5 scores 0 for every lr, so ASHA stops no trial: each trains its 2 epochs and ends
    # with its own artifacts (ASHA's max_t lies past the trainable's final report)
    for c in children:
        assert c.info.status == "FINISHED" and c.data.tags["status"] == "finished", c.data.tags
        assert {"prompt.safetensors", "config.json", "result.json"} <= {a.path for a in client.list_artifacts(c.info.run_id)}
    # ... so the study ties, and no winner is named (issue 11): tags, best file
    tags = parents[0].data.tags
    chosen = yaml.safe_load(best.read_text())
    assert chosen["method"] == "superpos" and "cb" not in chosen["per_task"] and "all 3 trials tied" in chosen["tied"]["cb"]
    assert tags["best.cb.tied"] == chosen["tied"]["cb"] and "best.cb.lr" not in tags and float(tags["best.cb.best_score"]) == 0.0
    import optuna

    study = optuna.load_study(study_name="s-cb", storage=f"sqlite:///{tmp_path}/ray/s/optuna.db")
    assert len(study.trials) == 3
    # every child's params are its sampled config
    assert {json.loads(c.data.params["m"]) for c in children} == {t.params["m"] for t in study.trials}


def test_asha_stopped_trial_logs_its_prompt_and_result(local_ray, data_dir, tmp_path):
    """A trial that ASHA stops early still gets config.json, the prompt of its last evaluation
    and a result.json (status "stopped", best score so far); its run ends FINISHED.

    ASHA's decision depends on the order trials reach a rung, so the two trials run one after
    the other in a fixed order (a grid, max_concurrent 1; a search trial takes the same path
    through trainable.py and tracking.py): MiniLM on SST-2 scores 0.81 after one epoch with
    lr 0.1, 0.56 with lr 0.01, which ASHA (grace period 1) stops."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    spec = {
        "name": "asha", "experiment": "superpos-asha",
        "base": {"task": "sst2", "model": "minilm", "method": "superpos", "m": 4, "batch_size": 8, "eval_batch_size": 16,
                 "max_train_examples": 16, "max_eval_examples": 16, "device": "cpu"},
        "grid": {"lr": [0.1, 0.01]}, "epochs": 2, "scheduler": {"type": "asha", "grace_period": 1},
        "max_concurrent": 1, "resources": {"cpu": 1},
    }
    path = tmp_path / "asha.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["sweep", str(path), "--storage-path", str(tmp_path / "ray"), "--tracking-uri", uri, "--data-dir", str(data_dir)]) == 0
    client, parents, children = child_runs(uri, "superpos-asha")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    by_lr = {json.loads(c.data.params["lr"]): c for c in children}
    kept, stopped = by_lr[0.1], by_lr[0.01]
    assert kept.data.tags["status"] == "finished" and stopped.data.tags["status"] == "stopped", [c.data.tags["status"] for c in children]
    assert kept.info.status == stopped.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(stopped.info.run_id, "score")] == [2]  # 16 examples / batch 8: 2 steps per epoch

    files = {}
    for run in (kept, stopped):
        assert {"prompt.safetensors", "config.json", "result.json"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
        out = tmp_path / run.data.tags["status"]
        files[run.data.tags["status"]] = {name: client.download_artifacts(run.info.run_id, name, str(out)) for name in ("prompt.safetensors", "result.json")}
    result = json.loads(Path(files["stopped"]["result.json"]).read_text())
    finished = json.loads(Path(files["finished"]["result.json"]).read_text())
    assert result["status"] == "stopped" and "ASHA" in result["message"]
    assert result["best_score"] == stopped.data.metrics["best_score"] < finished["best_score"]
    assert (result["steps"], result["best_step"], result["examples"]) == (2, 2, 16)
    assert result["trainable_parameters"] == finished["trainable_parameters"]
    # the stopped trial's prompt: the method's export at its last evaluation, as a finished trial's
    from safetensors import safe_open

    prompt, done = load_file(files["stopped"]["prompt.safetensors"]), load_file(files["finished"]["prompt.safetensors"])
    assert {k: v.shape for k, v in prompt.items()} == {k: v.shape for k, v in done.items()} and {"p_prime", "E", "prompt"} <= set(prompt)
    with safe_open(files["stopped"]["prompt.safetensors"], framework="pt") as f:
        assert f.metadata()["step"] == "2"
    # one after the other, the second trial ran in the first one's worker (reuse_actors): one pid in Tune's results
    results = [f for f in (tmp_path / "ray").rglob("result.json") if f.parent.parent.name == "grid"]
    assert len(results) == 2 and len({json.loads(line)["pid"] for f in results for line in f.read_text().splitlines()}) == 1
