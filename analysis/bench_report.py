"""Benchmark (figures, not a test): how fast ``superpos report`` reads a big sweep back.

    python -m analysis.bench_report [--runs 600] [--evaluations 80] [--workdir DIR] [--no-server] [--baseline] [--stages]

Writes a synthetic sweep in the documented layout (docs/mlflow-layout.md: one parent run, one
child run per trial with the tags ``analysis/`` reads, 8 metrics logged at each of
``--evaluations`` evaluations) into a sqlite store, then times ``analysis.runs.load_experiment``
(reading runs and histories) and the whole ``build_report`` (tables, figures, HTML): on the
sqlite store, and through a local ``mlflow server`` on that store (127.0.0.1, a free port);
each cold (an empty history cache) and warm (the cache of the cold run). A store written
before is reused when ``--workdir`` holds one with the same runs and evaluations.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from unittest import mock
from urllib.parse import urlparse

import numpy as np

from analysis import history

TASKS = ("rte", "cb", "copa", "wic", "boolq", "mrpc", "stsb", "cola", "sst2", "qnli")
METHODS = ("simple", "residual", "superpos", "lowrank", "full")
MODELS = ("google/t5-small-lm-adapt", "google/t5-base-lm-adapt")
EXPERIMENT = "bench"
#: a SuperPos prompt's shape in the synthetic sweep: n prompt tokens, m sampled embeddings each
PROMPT_LENGTH, M = 10, 128


#: metrics in the order each evaluation logs them (docs/mlflow-layout.md)
KEYS = ("score", "best_score", "accuracy", "f1", "train_loss", "epoch", "examples", "invalid_rate")
#: child runs written per transaction: a commit (an fsync) per run would cost more than its rows,
#: one for the whole sweep would hold millions of rows in memory
CHUNK = 100


def write_sweep(uri: str, artifacts: Path, runs: int, evaluations: int) -> None:
    """The synthetic sweep: the rows ``MlflowClient`` would write run by run (create_run, log_batch
    of the tags and metrics, set_terminated; tests/test_bench_report.py compares the two), the child
    runs' inserted in bulk. Through the client a run cost 0.1 to 0.7 s (several transactions, a
    latest-metric lookup per batch), an hour or more for 5,000 runs. The experiment and the parent
    run still go through the client, which also creates the schema."""
    from mlflow import MlflowClient
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlRun, SqlTag
    from mlflow.utils.time import get_current_time_millis
    from mlflow.utils.uri import append_to_uri_path
    from sqlalchemy import insert

    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment(EXPERIMENT, artifact_location=artifacts.as_uri())
    parent = client.create_run(exp, tags={"superpos.role": "sweep", "superpos.sweep": EXPERIMENT}, run_name=EXPERIMENT).info.run_id
    location, engine = client.get_experiment(exp).artifact_location, client._tracking_client.store.engine
    cells = itertools.cycle(itertools.product(range(3), MODELS, METHODS, (True, False), TASKS))
    rng, prompt_rng = np.random.default_rng(0), np.random.default_rng(1)  # the metrics' draws as before prompts were written
    steps = [(j + 1) * 100 for j in range(evaluations)]
    stamps = [1_700_000_000_000 + j for j in range(evaluations)]
    # columns of the metrics that do not depend on the run: train_loss, epoch, examples, invalid_rate
    fixed = np.array([[1 / (j + 1), j + 1.0, steps[j] * 32.0, 0.0] for j in range(evaluations)]).reshape(evaluations, 4)
    last_start = 0
    for first in range(0, runs, CHUNK):
        run_rows, tag_rows, metric_rows, latest_rows = [], [], [], []
        for i in range(first, min(first + CHUNK, runs)):
            seed, model, method, dropout, task = next(cells)
            rid = uuid.uuid4().hex
            # strictly increasing, as the client's one run after another: load_experiment orders a
            # cell's repeated trials by start time
            last_start = start = max(get_current_time_millis(), last_start + 1)
            tags = {"mlflow.runName": f"trial{i}", "mlflow.parentRunId": parent, "superpos.role": "trial", "superpos.trial_id": f"t{i}",
                    "task": task, "method": method, "model": model, "dropout": str(dropout).lower(), "softmax": "false",
                    "m": "128" if method == "superpos" else "", "seed": str(seed), "sweep": EXPERIMENT, "status": "finished"}
            curve = np.maximum.accumulate(np.clip(0.5 + np.cumsum(rng.normal(0.004, 0.02, evaluations)), 0, 1))
            values = np.column_stack([curve, np.maximum.accumulate(curve), curve, curve * 0.98, fixed]).tolist()
            metric_rows += [{"run_uuid": rid, "key": k, "value": v, "timestamp": stamps[j], "step": steps[j], "is_nan": False}
                            for j, row in enumerate(values) for k, v in zip(KEYS, row)]
            # the latest of each key by (step, timestamp, value), as MLflow keeps it: the last evaluation's
            latest_rows += metric_rows[-len(KEYS):] if evaluations else []
            tag_rows += [{"run_uuid": rid, "key": k, "value": v} for k, v in tags.items()]
            artifact_uri = append_to_uri_path(location, rid, "artifacts")
            if method == "superpos":  # Figure 2d reads it; every run samples the same tokens, as a shared seed does
                write_prompt(Path(urlparse(artifact_uri).path), prompt_rng)
            run_rows.append({"run_uuid": rid, "name": f"trial{i}", "artifact_uri": artifact_uri,
                             "experiment_id": int(exp), "source_type": "UNKNOWN", "source_name": "", "entry_point_name": "",
                             "user_id": "unknown", "status": "FINISHED", "start_time": start,
                             "end_time": max(get_current_time_millis(), start), "deleted_time": None, "source_version": "",
                             "lifecycle_stage": "active"})
        with engine.begin() as connection:
            for table, rows in ((SqlRun, run_rows), (SqlTag, tag_rows), (SqlMetric, metric_rows), (SqlLatestMetric, latest_rows)):
                if rows:
                    connection.execute(insert(table.__table__), rows)
    client.set_terminated(parent, "FINISHED")


def write_prompt(artifacts: Path, rng) -> None:
    """A SuperPos run's prompt.safetensors: p_prime (PROMPT_LENGTH, M), the M token_ids."""
    from safetensors.numpy import save_file

    artifacts.mkdir(parents=True, exist_ok=True)
    p_prime = rng.standard_normal((PROMPT_LENGTH, M), dtype=np.float32)
    save_file({"p_prime": p_prime, "token_ids": np.arange(M, dtype=np.int64) * 7}, str(artifacts / "prompt.safetensors"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(db_uri: str, artifacts: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", db_uri, "--default-artifact-root", artifacts.as_uri(),
         "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {proc.returncode}") from None
            time.sleep(0.5)
    else:
        stop_server(proc)
        raise RuntimeError("mlflow server did not answer within 180 s")
    from analysis.runs import client

    for _ in range(8):  # each worker opens its store at its first call; a long-running server has done so
        client(url).search_experiments()
    return proc, url


def timed(what: str, uri: str, out: Path) -> float:
    """Seconds for ``load_experiment`` (reading runs and histories) or the whole ``build_report``."""
    from analysis.report import build_report
    from analysis.runs import load_experiment

    start = time.perf_counter()
    load_experiment(uri, EXPERIMENT) if what == "load_experiment" else build_report(uri, EXPERIMENT, out)
    return time.perf_counter() - start


def stages(uri: str, out: Path) -> dict[str, tuple[float, float]]:
    """Stage -> (wall s, CPU s) of one ``build_report`` with the history cache off."""
    from analysis import report

    spent: dict[str, tuple[float, float]] = {}

    def timed_stage(name: str, fn):
        def run(*args, **kwargs):
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                before = spent.get(name, (0.0, 0.0))
                spent[name] = (before[0] + time.perf_counter() - wall, before[1] + time.process_time() - cpu)
        return run

    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.dict(os.environ, {history.CACHE_ENV: "0"}))
        stack.enter_context(mock.patch.object(report, "load_experiment", timed_stage("read runs + histories", report.load_experiment)))
        stack.enter_context(mock.patch.object(report, "_tables", timed_stage("tables", report._tables)))
        stack.enter_context(mock.patch.dict(report.PANELS, {p: timed_stage(f"figure {p}", b) for p, b in report.PANELS.items()}))
        timed_stage("whole report", report.build_report)(uri, EXPERIMENT, out)
    return spent


def stop_server(proc: subprocess.Popen) -> None:
    """The server and the workers and job runners it started (its own process group)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=20)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=600)
    parser.add_argument("--evaluations", type=int, default=80)
    parser.add_argument("--workdir", default=None, help="keep the store here (default: a temporary folder)")
    parser.add_argument("--no-server", action="store_true", help="sqlite only")
    parser.add_argument("--stages", action="store_true", help="also time each stage of one cold report (module docstring)")
    parser.add_argument("--baseline", action="store_true", help="also time load_experiment with one history call per run and key, uncached (before analysis/history.py)")
    args = parser.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_report_"))
    store = work / f"sweep_{args.runs}x{args.evaluations}"
    store.mkdir(parents=True, exist_ok=True)
    db, artifacts = f"sqlite:///{store / 'mlflow.db'}", store / "artifacts"
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if not (store / "done").exists():
        start = time.perf_counter()
        write_sweep(db, artifacts, args.runs, args.evaluations)
        (store / "done").write_text("")
        print(f"wrote {args.runs} runs x {args.evaluations} evaluations x 8 metrics in {time.perf_counter() - start:.1f} s ({store})")
    server, targets = None, [("sqlite", db)]
    try:
        if not args.no_server:
            server, url = start_server(db, artifacts)
            targets.append(("server", url))
        print("store    what             baseline s  cold s  warm s")
        for name, uri in targets:
            for what in ("load_experiment", "report"):
                baseline = "-"
                if args.baseline and what == "load_experiment":
                    with mock.patch.object(history, "fetch", history.fetch_one_by_one), mock.patch.dict(os.environ, {history.CACHE_ENV: "0"}):
                        baseline = f"{timed(what, uri, work / 'report'):.1f}"
                cache = work / f"cache_{name}_{what}"
                shutil.rmtree(cache, ignore_errors=True)
                os.environ["SUPERPOS_CACHE"] = str(cache)  # cold: an empty cache of its own; warm: what cold left
                cold, warm = (timed(what, uri, work / "report") for _ in range(2))
                print(f"{name:8} {what:16} {baseline:>10} {cold:7.1f} {warm:7.1f}", flush=True)
        for name, uri in targets if args.stages else []:
            for stage, (wall, cpu) in stages(uri, work / "report").items():
                print(f"{name:8} {stage:24} wall {wall:6.1f} s  CPU {cpu:6.1f} s", flush=True)
    finally:
        if server is not None:
            stop_server(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
