"""End to end on a local Ray: `superpos sweep` (smoke spec, fused groups) and `superpos search`
(Optuna + ASHA) write the MLflow layout of docs/mlflow-layout.md; a second run resumes idempotently."""

import json
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from superpos.cli import main

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
        assert {"prompt.safetensors", "config.json", "result.json"} <= artifacts
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
    assert {c.data.tags["status"] for c in children} <= {"finished", "stopped"}
    tags = parents[0].data.tags
    chosen = yaml.safe_load(best.read_text())
    assert chosen["method"] == "superpos" and set(chosen["per_task"]["cb"]) == {"lr", "m"}
    assert float(tags["best.cb.lr"]) == chosen["per_task"]["cb"]["lr"] and 1 <= int(tags["best.cb.m"]) <= 32
    import optuna

    study = optuna.load_study(study_name="s-cb", storage=f"sqlite:///{tmp_path}/ray/s/optuna.db")
    assert len(study.trials) == 3
    # every child's params are its sampled config
    assert {json.loads(c.data.params["m"]) for c in children} == {t.params["m"] for t in study.trials}
