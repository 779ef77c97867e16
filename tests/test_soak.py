"""The chaos soak in CI (tests/soak/, docs/reliability.md): 6 minutes of faults on a real
three-node Ray cluster, a real MLflow server over HTTP and S3 storage (moto), each kind of
fault once; then `superpos audit` is clean, all 48 trials FINISHED, and every trial's numbers
equal the fault-free run's bit for bit. The harness ends every process it started, also when
it fails or is interrupted."""

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import psutil
import pytest

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))  # the soak package lives beside the tests

from soak.chaos import KINDS, schedule  # noqa: E402
from soak.harness import Soak, SoakOptions, sweep_size  # noqa: E402
from soak.processes import wait_for  # noqa: E402
from soak.timing import time_lost  # noqa: E402

pytestmark = [pytest.mark.faults, pytest.mark.slow]


def still_running(pids_file: Path) -> list[int]:
    """PIDs the harness recorded that still run as the same process."""
    data = json.loads(pids_file.read_text())
    alive = []
    for pid, created in data["created"].items():
        try:
            p = psutil.Process(int(pid))
            if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(int(pid))
        except psutil.Error:
            pass
    return alive


def test_short_schedule_fires_each_kind_once_and_is_seeded():
    plan = schedule(6, seed=3, slots=("w1", "w2"))
    assert sorted(f.kind for f in plan) == sorted(KINDS)
    assert plan == schedule(6, seed=3, slots=("w1", "w2")) and plan != schedule(6, seed=4, slots=("w1", "w2"))
    full = schedule(60, seed=0, slots=("w1", "w2"))
    assert all(60 <= f.gap_s <= 240 for f in full) and set(f.kind for f in full) <= set(KINDS)
    assert all(60 <= f.hold_s <= 120 for f in full if f.kind == "node_stop")
    assert all(30 <= f.hold_s <= 150 for f in full if f.kind == "mlflow_restart")


def test_time_lost_is_wall_time_beyond_the_median_evaluation_pace(tmp_path):
    """Two groups of two trials, evaluations every 10 s but one 100-s gap (a fault): the
    fault-free estimate is the start-up plus 10 s per group evaluation over two workers."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("soak")
    start = 1_000_000.0
    for group, times in {"g1": [5, 15, 25, 125, 135], "g2": [6, 16, 26, 36, 46]}.items():
        for member in range(2):
            run = client.create_run(exp, tags={"superpos.role": "trial", "superpos.group": group})
            client.log_batch(run.info.run_id, metrics=[Metric("score", 0.5, int((start + t + member) * 1000), k) for k, t in enumerate(times)])
    got = time_lost(uri, "soak", start, sweep_wall_s=140.0, workers=2)
    assert got["group_evaluations"] == 10 and got["median_s_per_group_evaluation"] == 10.0
    assert got["first_evaluation_after_s"] == 5.0
    assert got["fault_free_estimate_s"] == 5.0 + 10.0 * 10 / 2 and got["time_lost_s"] == 140.0 - 55.0

def test_six_minute_soak(data_dir, tmp_path):
    epochs, examples = sweep_size(6)
    report = Soak(SoakOptions(6, tmp_path / "soak", data_dir, seed=0, epochs=epochs, max_train_examples=examples)).run()
    assert Counter(f["kind"] for f in report.faults) == Counter(KINDS), report.faults
    assert report.audit_rc == 0, report.audit
    assert report.trials == 48 == report.trials_finished, report
    assert report.evaluations_logged == 48 * epochs
    assert not report.mismatches, report.mismatches[:10]
    # the time-lost estimate counts each group's evaluations once (12 groups of 4 trials)
    assert report.time_lost["group_evaluations"] == 12 * epochs, report.time_lost
    assert 0 < report.time_lost["fault_free_estimate_s"] and report.time_lost["median_s_per_group_evaluation"] > 0
    # only the planned driver kill needed a resume, unless the machine ran out of memory (Ray's
    # memory monitor kills a worker; Tune's driver then exits: a fault of the host, not of the soak)
    assert all("running low on memory" in e["tail"] for e in report.driver_exits), report.driver_exits
    assert not report.left_running and not still_running(tmp_path / "soak" / "pids.json")


def test_soak_ends_its_processes_when_it_fails(data_dir, tmp_path, monkeypatch):
    from soak import cluster

    def head_fails(self):
        raise RuntimeError("the head node did not start")

    monkeypatch.setattr(cluster.Services, "start_head", head_fails)
    soak = Soak(SoakOptions(6, tmp_path / "soak", data_dir))
    with pytest.raises(RuntimeError, match="head node"):
        soak.run()
    names = {e.name for e in soak.procs.started}
    assert {"s3", "mlflow"} <= names  # it had started servers
    assert soak.procs.recorded() and not soak.procs.alive() and not still_running(tmp_path / "soak" / "pids.json")


def test_soak_ends_its_processes_when_interrupted(data_dir, tmp_path):
    work = tmp_path / "soak"
    env = dict(os.environ, PYTHONPATH=str(TESTS))
    cmd = [sys.executable, "-m", "soak", "--minutes", "6", "--work", str(work), "--data-dir", str(data_dir)]
    proc = subprocess.Popen(cmd, cwd=TESTS, env=env, stdout=open(tmp_path / "soak.log", "w"), stderr=subprocess.STDOUT)
    try:
        events = work / "chaos.jsonl"
        wait_for(lambda: events.exists() and '"driver started"' in events.read_text(), 300, "the soak's cluster and driver")
        recorded = json.loads((work / "pids.json").read_text())["pids"]
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(600) != 0  # a ceiling: it ends as soon as it has stopped what it started
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(recorded) >= 5  # servers, three Ray nodes, the driver
    assert not still_running(work / "pids.json"), (tmp_path / "soak.log").read_text()[-2000:]
