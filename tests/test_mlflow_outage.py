"""An MLflow outage longer than the client's retry budget does not kill a sweep (issue 11,
fault 4): a real `mlflow server` on 127.0.0.1 is stopped after the first step is logged and
restarted later; the driver buffers on disk (trainables/outbox.py), the sweep finishes, every
step is logged exactly once with the trial's artifacts, and a warning names the outage."""

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.faults, pytest.mark.slow]

EPOCHS = 10
STEPS = [2 * (k + 1) for k in range(EPOCHS)]  # 16 examples / batch 8
OUTAGE_S = 3  # plus the restart (~20 s here): longer than the client's retry budget below (one retry after 1 s)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(tmp_path: Path, port: int) -> subprocess.Popen:
    mlflow = Path(sys.executable).parent / "mlflow"
    cmd = [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{tmp_path}/server.db", "--artifacts-destination", str(tmp_path / "artifacts")]
    proc = subprocess.Popen(cmd, stdout=open(tmp_path / "server.log", "a"), stderr=subprocess.STDOUT, start_new_session=True)
    end = time.time() + 120
    while time.time() < end:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    stop(proc)
    raise AssertionError((tmp_path / "server.log").read_text()[-2000:])


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # a crash: no graceful shutdown
        proc.wait(30)
    except ProcessLookupError:
        pass


def logged_steps(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return con.execute("select count(*) from metrics where key = 'score'").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_sweep_rides_out_a_tracking_server_outage(data_dir, tmp_path):
    from mlflow.tracking import MlflowClient

    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_server(tmp_path, port)
    driver = None
    try:
        spec = {"name": "outage", "experiment": "outage", "epochs": EPOCHS, "resources": {"cpu": 1}, "tracking_uri": uri, "storage_path": str(tmp_path / "ray"),
                "base": {"task": "cb", "model": "tiny-t5", "method": "superpos", "m": 8, "batch_size": 8, "max_train_examples": 16, "max_eval_examples": 8, "device": "cpu"}}
        (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
        env = dict(os.environ, MLFLOW_HTTP_REQUEST_MAX_RETRIES="1", MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="1", MLFLOW_HTTP_REQUEST_TIMEOUT="20", SUPERPOS_MLFLOW_WAIT_S="180", SUPERPOS_MLFLOW_BACKOFF_MAX_S="4")
        cmd = [sys.executable, "-m", "superpos.cli", "sweep", str(tmp_path / "spec.yaml"), "--data-dir", str(data_dir)]
        driver = subprocess.Popen(cmd, stdout=open(tmp_path / "driver.log", "w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
        end = time.time() + 180
        while logged_steps(tmp_path / "server.db") == 0 and driver.poll() is None and time.time() < end:
            time.sleep(0.2)
        stop(server)  # mid-sweep: the trial goes on training and reporting
        time.sleep(OUTAGE_S)
        assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
        server = start_server(tmp_path, port)
        assert driver.wait(300) == 0, (tmp_path / "driver.log").read_text()[-3000:]
        log = (tmp_path / "driver.log").read_text()
        assert "unreachable" in log and "was unreachable for" in log, log[-3000:]

        client = MlflowClient(uri)
        runs = client.search_runs([client.get_experiment_by_name("outage").experiment_id])
        parent = [r for r in runs if r.data.tags.get("superpos.role") == "sweep"]
        (child,) = [r for r in runs if r.data.tags.get("superpos.role") == "trial"]
        assert parent[0].info.status == "FINISHED" and child.info.status == "FINISHED" and child.data.tags["status"] == "finished"
        assert [m.step for m in client.get_metric_history(child.info.run_id, "score")] == STEPS
        assert {"prompt.safetensors", "config.json", "result.json"} <= {a.path for a in client.list_artifacts(child.info.run_id)}
        assert not (tmp_path / "ray" / "outage" / "mlflow-outbox" / "journal.jsonl").exists()
    finally:
        if driver is not None and driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        stop(server)
