"""Bad input that only a trial can meet fails it once, and failed starts leave nothing behind
(issue 11, faults 2, 7, 11), on a local Ray in this process."""

from pathlib import Path

import pytest
import yaml

from superpos.cli import main

pytestmark = [pytest.mark.faults, pytest.mark.slow]

BASE = {"task": "cb", "model": "tiny-t5", "method": "superpos", "m": 8, "batch_size": 8, "max_train_examples": 8, "max_eval_examples": 4, "device": "cpu"}


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def runs(uri: str, experiment: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    found = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=100)
    return [r for r in found if r.data.tags.get("superpos.role") == "sweep"], [r for r in found if r.data.tags.get("superpos.role") == "trial"]


def test_config_error_in_a_trial_fails_once_and_every_path_stays_under_storage(local_ray, data_dir, tmp_path, monkeypatch):
    from trainables import guards

    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    raw = {"name": "bad-m", "experiment": "failures", "base": BASE, "epochs": 1, "grid": {"m": [8, 100000]}, "max_failures": 3,
           "resources": {"cpu": 1000}, "tracking_uri": uri, "storage_path": str(tmp_path / "ray")}
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(raw))
    args = ["sweep", str(spec), "--data-dir", str(data_dir)]
    # m beyond the vocabulary, as if the pre-launch check had missed it: the trial meets it
    monkeypatch.setattr(guards, "check_trials", lambda *a, **k: None)

    # no local cluster can place cpu: 1000: refused, and nothing blocks the corrected command
    assert main(args) == 2
    assert not (tmp_path / "ray" / "bad-m" / "superpos_sweep.json").exists()
    parents, children = runs(uri, "failures")
    assert [p.info.status for p in parents] == ["FAILED"] and "cpu 1000" in parents[0].data.tags["superpos.error"] and not children

    spec.write_text(yaml.safe_dump(dict(raw, resources={"cpu": 1})))
    before = files(tmp_path)
    assert main(args) == 1
    parents, children = runs(uri, "failures")
    parent = [p for p in parents if "superpos.error" not in p.data.tags]  # not the refused start's
    assert len(parent) == 1 and parent[0].info.status == "FAILED" and parent[0].data.tags["superpos.failed_trials"] == "1"
    by_m = {r.data.tags["m"]: r for r in children}
    assert by_m["8"].info.status == "FINISHED" and by_m["8"].data.tags["status"] == "finished"
    bad = by_m["100000"]
    assert bad.info.status == "FAILED" and bad.data.tags["status"] == "failed"
    assert "m = 100000 exceeds the vocabulary" in bad.data.tags["superpos.error"]
    # not retried: the trial reported once and never errored
    (trial_dir,) = [d for d in (tmp_path / "ray" / "bad-m" / "grid").iterdir() if d.is_dir() and bad.data.tags["superpos.group"] in d.name]
    assert len((trial_dir / "result.json").read_text().splitlines()) == 1 and not (trial_dir / "error.txt").exists()

    written = files(tmp_path) - before
    allowed = (tmp_path / "ray" / "bad-m", tmp_path / "mlartifacts")
    assert written and all(p.is_relative_to(allowed[0]) or p.is_relative_to(allowed[1]) or p.name.startswith("mlflow.db") for p in written), sorted(written)
    assert not files(work)


def test_a_study_whose_trials_all_tie_names_no_winner(local_ray, data_dir, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    best = tmp_path / "best.yaml"
    # lr about 1e-9: every trial keeps its (shared, seeded) initial prompt, so all score the same
    raw = {"name": "ties", "experiment": "ties", "base": BASE, "epochs": 1, "search": "optuna", "num_samples": 2,
           "space": {"lr": {"loguniform": [1e-9, 2e-9]}}, "resources": {"cpu": 1}, "tracking_uri": uri,
           "storage_path": str(tmp_path / "ray"), "best_file": str(best)}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(raw))
    assert main(["search", str(tmp_path / "spec.yaml"), "--data-dir", str(data_dir)]) == 0
    assert "study cb: all 2 trials tied at best_score" in capsys.readouterr().err
    data = yaml.safe_load(best.read_text())
    assert "cb" not in data["per_task"] and "all 2 trials tied" in data["tied"]["cb"]
    (parent,), _ = runs(uri, "ties")
    assert "all 2 trials tied" in parent.data.tags["best.cb.tied"] and "best.cb.lr" not in parent.data.tags
    assert parent.info.status == "FINISHED" and parent.data.tags["superpos.best_file"] == str(best.resolve())
