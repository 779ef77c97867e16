"""Shared by the real-launch tests (test_slurm_launch.py, test_onprem_launch.py): free
loopback ports, waiting for an event, processes found by a path in their command line, and
the MLflow runs of a sweep."""

import os
import shutil
import signal
import socket
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv")) / "bin"


def missing(*programs: str) -> list[str]:
    return [p for p in programs if shutil.which(p) is None and not Path(p).is_file()]


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_for(predicate, timeout: float, what: str, proc=None):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the process ended first (exit code {proc.returncode})")
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def pids_with(text: str) -> set[int]:
    """Processes whose command line holds ``text`` (a test's own temp path)."""
    found = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if text in (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.add(int(d.name))
            except OSError:
                pass
    return found - {os.getpid()}


def end(pids, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL what is still there after ``grace`` seconds."""
    pids = {p for p in pids if p}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + grace
        while time.time() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of this process is gone for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def alive(pids) -> set[int]:
    return {p for p in pids if _alive(p)}


def small_spec(path: Path, name: str, epochs: int, **extra) -> Path:
    """A tiny-t5 grid of two fused groups (2 Ray trials, 1 CPU each) on CB."""
    spec = {
        "name": name, "experiment": f"launch-{name}",
        "base": {"task": "cb", "model": "tiny-t5", "method": "superpos", "m": 8, "batch_size": 8, "eval_batch_size": 16,
                 "max_train_examples": 16, "max_eval_examples": 8, "device": "cpu"},
        "grid": {"dropout": [True, False]}, "seeds": [0], "epochs": epochs, "resources": {"cpu": 1}, "max_failures": 3, **extra,
    }
    path.write_text(yaml.safe_dump(spec))
    return path


def sweep_runs(uri: str, experiment: str):
    """(parent runs, child runs) of an experiment."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    found = client.search_runs([exp.experiment_id], max_results=1000) if exp else []
    return [r for r in found if r.data.tags.get("superpos.role") == "sweep"], [r for r in found if r.data.tags.get("superpos.role") == "trial"]


def metric_steps(uri: str, run_id: str) -> list[int]:
    from mlflow.tracking import MlflowClient

    return [m.step for m in MlflowClient(uri).get_metric_history(run_id, "score")]
