"""The benchmark's synthetic sweep (analysis/bench_report.py): its bulk writer leaves the store
that MlflowClient would, run by run."""

from __future__ import annotations

import itertools

import pandas as pd

from analysis import bench_report


def _write_through_client(uri, artifacts, runs, evaluations):
    """The sweep logged the ordinary way (how write_sweep wrote it before its bulk inserts)."""
    import numpy as np
    from mlflow import MlflowClient
    from mlflow.entities import Metric, RunTag

    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment(bench_report.EXPERIMENT, artifact_location=artifacts.as_uri())
    parent = client.create_run(exp, tags={"superpos.role": "sweep", "superpos.sweep": "bench"}, run_name="bench").info.run_id
    cells = itertools.cycle(itertools.product(range(3), bench_report.MODELS, bench_report.METHODS, (True, False), bench_report.TASKS))
    rng = np.random.default_rng(0)
    for i in range(runs):
        seed, model, method, dropout, task = next(cells)
        tags = {"mlflow.parentRunId": parent, "superpos.role": "trial", "superpos.trial_id": f"t{i}", "task": task, "method": method,
                "model": model, "dropout": str(dropout).lower(), "softmax": "false", "m": "128" if method == "superpos" else "",
                "seed": str(seed), "sweep": "bench", "status": "finished"}
        rid = client.create_run(exp, run_name=f"trial{i}").info.run_id
        curve = np.maximum.accumulate(np.clip(0.5 + np.cumsum(rng.normal(0.004, 0.02, evaluations)), 0, 1))
        metrics = []
        for j in range(evaluations):
            step, t = (j + 1) * 100, 1_700_000_000_000 + j
            values = {"score": curve[j], "best_score": curve[: j + 1].max(), "accuracy": curve[j], "f1": curve[j] * 0.98,
                      "train_loss": 1 / (j + 1), "epoch": j + 1.0, "examples": step * 32.0, "invalid_rate": 0.0}
            metrics += [Metric(k, float(v), t, step) for k, v in values.items()]
        client.log_batch(rid, metrics=metrics, tags=[RunTag(k, v) for k, v in tags.items()])
        client.set_terminated(rid, "FINISHED")
    client.set_terminated(parent, "FINISHED")


def _as_read(uri, root):
    """What MLflow answers about the sweep, with run ids replaced by run names and ``root`` dropped;
    and the trials' (start, end) times in the order they were written."""
    from mlflow import MlflowClient

    from analysis.runs import load_experiment

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("bench").experiment_id], max_results=1000)
    names = {r.info.run_id: r.info.run_name for r in runs}
    answers = {}
    for r in runs:
        answers[r.info.run_name] = {
            "tags": {k: names.get(v, v) for k, v in r.data.tags.items()}, "params": r.data.params, "metrics": r.data.metrics,
            "info": (r.info.status, r.info.user_id, r.info.lifecycle_stage, r.info.artifact_uri.replace(r.info.run_id, r.info.run_name).replace(root, "")),
            "histories": {k: [(m.step, m.timestamp, m.value) for m in client.get_metric_history(r.info.run_id, k)] for k in r.data.metrics},
        }
    experiment = load_experiment(uri, "bench")
    history = experiment.history.assign(run_id=experiment.history["run_id"].map(names)).sort_values(["run_id", "step"], ignore_index=True)
    trials = sorted((r for r in runs if r.info.run_name != "bench"), key=lambda r: int(r.info.run_name.removeprefix("trial")))
    times = [(r.info.start_time, r.info.end_time) for r in trials]
    return answers, experiment.runs.drop(columns=["run_id", "start_time"]), history, times


def test_bulk_writer_leaves_what_the_client_would(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_report, "CHUNK", 3)  # several transactions, the last one short
    runs, evaluations = 7, 4
    for name, write in (("client", _write_through_client), ("bulk", bench_report.write_sweep)):
        (tmp_path / name).mkdir()
        write(f"sqlite:///{tmp_path / name / 'mlflow.db'}", tmp_path / name / "artifacts", runs, evaluations)
    want, want_runs, want_history, _ = _as_read(f"sqlite:///{tmp_path / 'client' / 'mlflow.db'}", str(tmp_path / "client"))
    got, got_runs, got_history, times = _as_read(f"sqlite:///{tmp_path / 'bulk' / 'mlflow.db'}", str(tmp_path / "bulk"))

    assert sorted(got) == ["bench"] + [f"trial{i}" for i in range(runs)]
    assert got == want
    assert got["trial6"]["tags"]["mlflow.parentRunId"] == "bench" and got["trial6"]["tags"]["superpos.trial_id"] == "t6"
    assert got["trial6"]["metrics"]["examples"] == evaluations * 100 * 32.0
    assert [(s, t) for s, t, _ in got["trial6"]["histories"]["score"]] == [(100 * (j + 1), 1_700_000_000_000 + j) for j in range(4)]
    pd.testing.assert_frame_equal(got_runs, want_runs)
    pd.testing.assert_frame_equal(got_history, want_history)
    assert len(got_history) == runs * evaluations
    # a cell's repeated trials are told apart by start time (load_experiment sorts on it)
    starts = [s for s, _ in times]
    assert starts == sorted(set(starts)) and all(end >= start for start, end in times)


def test_superpos_runs_have_a_prompt_figure_2d_reads(tmp_path):
    from analysis.runs import load_experiment, load_prompt

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    bench_report.write_sweep(uri, tmp_path / "artifacts", 60, 2)  # the cells cycle: runs 40-59 are superpos
    runs = load_experiment(uri, bench_report.EXPERIMENT).runs
    superpos = runs[runs["method"] == "superpos"]
    assert len(superpos) >= 2
    prompts = [load_prompt(uri, r) for r in superpos["run_id"]]
    assert all(p["p_prime"].shape == (bench_report.PROMPT_LENGTH, bench_report.M) for p in prompts)
    assert all((p["token_ids"] == prompts[0]["token_ids"]).all() for p in prompts)
    assert not (prompts[0]["p_prime"] == prompts[1]["p_prime"]).all()
