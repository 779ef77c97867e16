"""Fault tolerance of `superpos sweep` (marked `faults`; a few minutes on 2 cores):

(a) a worker node of a local two-node Ray cluster dies mid-trial: the trial retries from its
    last checkpoint (FailureConfig) and the sweep completes;
(b) the driver gets SIGINT, later SIGKILL; `superpos sweep --resume` completes the sweep;
(c) a trial diverges (lr 1e12 -> NaN loss): recorded as `diverged`, its group-mate goes on.

After each: exactly one ended MLflow child run per trial, none missing, none duplicated, and
every evaluation step logged exactly once.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.faults, pytest.mark.slow]

EPOCHS = 8  # long enough that a fault injected after the first checkpoint lands mid-trial
STEPS = [6 * (k + 1) for k in range(EPOCHS)]  # 48 examples / batch 8 = 6 steps per epoch


def write_spec(tmp_path, name, **extra) -> Path:
    spec = {
        "name": name, "experiment": f"faults-{name}",
        "base": {"task": "cb", "model": "tiny-t5", "method": "superpos", "m": 8, "batch_size": 8, "eval_batch_size": 16,
                 "max_train_examples": 48, "max_eval_examples": 8, "device": "cpu"},
        "seeds": [0, 1], "epochs": EPOCHS, "resources": {"cpu": 1}, "max_failures": 3,
        "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "storage_path": str(tmp_path / "ray"),
        **extra,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def sweep_cmd(spec: Path, data_dir, *extra) -> list[str]:
    return [sys.executable, "-m", "superpos.cli", "sweep", str(spec), "--data-dir", str(data_dir), *extra]


def start(cmd, tmp_path, log: str) -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_OFFLINE="1", RAY_DEDUP_LOGS="0")
    # own session: the driver and the local Ray it starts can be cleaned up as a group
    return subprocess.Popen(cmd, stdout=open(tmp_path / log, "w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)


def wait_for(predicate, timeout: float, what: str):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def checkpoints(tmp_path, name) -> list[Path]:
    return sorted((tmp_path / "ray" / name / "grid").glob("*/checkpoint_*"))


def finish(proc: subprocess.Popen, timeout: float) -> int:
    try:
        return proc.wait(timeout)
    finally:
        kill_group(proc)


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def assert_one_run_per_trial(tmp_path, name, n_trials, statuses=("finished",)):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name(f"faults-{name}")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    children = [r for r in runs if r.data.tags.get("superpos.role") == "trial"]
    assert len([r for r in runs if r.data.tags.get("superpos.role") == "sweep"]) == 1
    ids = [r.data.tags["superpos.trial_id"] for r in children]
    assert len(ids) == n_trials == len(set(ids)), ids
    for r in children:
        assert r.info.status == "FINISHED" and r.data.tags["status"] in statuses, (r.data.tags, r.info.status)
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "score")]
        if r.data.tags["status"] == "finished":
            assert steps == STEPS, steps
        assert len(steps) == len(set(steps))
    return children


def test_worker_node_dies_trial_retries_from_checkpoint(data_dir, tmp_path):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    proc = None
    try:
        worker = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        spec = write_spec(tmp_path, "node")
        proc = start(sweep_cmd(spec, data_dir, "--address", cluster.address), tmp_path, "node.log")
        wait_for(lambda: checkpoints(tmp_path, "node"), 180, "the first checkpoint")
        cluster.remove_node(worker, allow_graceful=False)  # the node dies mid-trial
        cluster.add_node(num_cpus=1)  # the autoscaler's replacement
        assert finish(proc, 240) == 0, (tmp_path / "node.log").read_text()[-3000:]
    finally:
        if proc is not None:
            kill_group(proc)
        cluster.shutdown()
    assert_one_run_per_trial(tmp_path, "node", 2)
    # the killed trial was restored from a checkpoint, not restarted from scratch
    results = [json.loads(line) for f in (tmp_path / "ray" / "node" / "grid").glob("*/result.json") for line in f.read_text().splitlines()]
    assert any(r["iterations_since_restore"] < r["training_iteration"] for r in results)


def test_driver_sigint_then_sigkill_then_resume(data_dir, tmp_path):
    spec = write_spec(tmp_path, "driver")
    proc = start(sweep_cmd(spec, data_dir), tmp_path, "run1.log")
    wait_for(lambda: checkpoints(tmp_path, "driver"), 180, "the first checkpoint")
    proc.send_signal(signal.SIGINT)  # Ctrl-C: Tune saves its state and stops
    assert finish(proc, 120) != 0

    n = len(checkpoints(tmp_path, "driver"))
    proc = start(sweep_cmd(spec, data_dir, "--resume"), tmp_path, "run2.log")
    wait_for(lambda: len(checkpoints(tmp_path, "driver")) > n, 180, "a checkpoint after resume")
    proc.send_signal(signal.SIGKILL)  # no chance to save anything
    finish(proc, 60)

    proc = start(sweep_cmd(spec, data_dir, "--resume"), tmp_path, "run3.log")
    assert finish(proc, 240) == 0, (tmp_path / "run3.log").read_text()[-3000:]
    assert_one_run_per_trial(tmp_path, "driver", 2)


def test_diverging_trial_is_recorded_and_the_sweep_goes_on(data_dir, tmp_path):
    spec = write_spec(tmp_path, "diverge", grid={"lr": [0.01, 1e12]}, seeds=[0], group_size=2)
    proc = start(sweep_cmd(spec, data_dir), tmp_path, "diverge.log")
    assert finish(proc, 240) == 0, (tmp_path / "diverge.log").read_text()[-3000:]
    children = assert_one_run_per_trial(tmp_path, "diverge", 2, statuses=("finished", "diverged"))
    by_lr = {float(r.data.params["lr"]): r for r in children}
    assert by_lr[1e12].data.tags["status"] == "diverged" and by_lr[0.01].data.tags["status"] == "finished"
