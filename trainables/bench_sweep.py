"""``superpos bench-sweep``: what the sweep driver's bookkeeping costs at scale, a figure, not a test
(docs/benchmarks.md, "Sweep bookkeeping").

Two arms run in one command, one after the other, each on a fresh local Ray (loopback, no
dashboard) with the same logical CPUs, trials and concurrency:

* ``bare``: plain Ray Tune; a function trainable sleeps ``sleep_s`` and ``tune.report``s, ``results``
  times, each report with a checkpoint about the size of the superpos arm's; no MLflow.
* ``superpos``: the real driver path (``runner.run_sweep``: spec parsing and expansion, guards,
  the sweep lock and record, the MLflow parent and child runs over a local ``mlflow server`` on
  127.0.0.1, the outbox, checkpoints with manifests) with the training step replaced by the same
  sleep (``sleep_group``, passed as the trainable: nothing of the bench is on the production path).

Reported: each arm's wall time, the ideal minimum ``trials * results * sleep_s / concurrency``, the
overhead against it, superpos against bare Tune, results/s, the MLflow writes (counted at the
driver's HTTP client) and writes/s, the driver's RSS (sampled) growth from after ``ray.init``, and
whether any result was dropped (child runs finished with every step; ``superpos audit``'s findings).

Its runs can never pass for results: the MLflow experiment is named ``bench-...`` and tagged
``superpos.bench = sweep-overhead`` before any run exists, the parent and child runs carry that
tag, and ``superpos report`` refuses them (analysis/runs.py).

Not under ``superpos bench`` (superpos/bench/): the library layer never imports Ray or MLflow
(import-linter, docs/architecture.md), and this benchmark is about Ray Tune and MLflow.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from superpos.errors import ConfigError
from superpos.run_dir import BEST_PROMPT_FILE, CONFIG_FILE, METRICS_FILE, PROMPT_FILE, RESULT_FILE

from trainables.runner import run_sweep, start_local_ray
from trainables.spec import parse_spec
from trainables.spec.trial_config import members_of
from trainables.sweep_state import RunOptions
from trainables.tracking import BENCH, CUSTOM_MODEL_DEVELOPMENT, EXPERIMENT_KIND_TAG, PARENT, STEP_KEY
from trainables.trainable import _Reporter

BENCH_VALUE = "sweep-overhead"
EXPERIMENT = f"bench-{BENCH_VALUE}"
#: Ray's own Tune scalability benchmark (docs/benchmarks.md quotes it)
ANCHOR = {"trials": 10_000, "sleep_s": 1.0, "cpus": 16, "wall_s": 715.0, "minimum_s": 625.0, "overhead": 0.14}


@dataclass(frozen=True)
class SweepBenchOptions:
    trials: int = 100
    results: int = 3
    sleep_s: float = 1.0
    concurrency: int = 10
    #: Ray's logical CPUs; each trial reserves cpus / concurrency (fractional)
    cpus: float = 2.0
    #: the prompt each checkpoint carries (a real prompt: tens to hundreds of KB)
    payload_kb: int = 64
    #: where both arms' storage and the MLflow store go (default: a temporary directory, removed)
    workdir: str | None = None

    def check(self) -> None:
        for name, value, low in (("trials", self.trials, 1), ("results", self.results, 1), ("concurrency", self.concurrency, 1), ("payload_kb", self.payload_kb, 1)):
            if not isinstance(value, int) or value < low:
                raise ConfigError(f"bench-sweep: --{name.replace('_', '-')} = {value!r}; allowed: an integer >= {low}")
        if not self.sleep_s >= 0:
            raise ConfigError(f"bench-sweep: --sleep = {self.sleep_s!r}; allowed: seconds >= 0")
        if not self.cpus > 0:
            raise ConfigError(f"bench-sweep: --cpus = {self.cpus!r}; allowed: a number > 0 (Ray's logical CPUs)")
        if self.concurrency > self.trials:
            raise ConfigError(f"bench-sweep: --concurrency = {self.concurrency} exceeds --trials = {self.trials}; allowed: 1..{self.trials}")

    @property
    def minimum_s(self) -> float:
        return self.trials * self.results * self.sleep_s / self.concurrency


# -- the trainables (run in Ray workers) ----------------------------------------------------
def _payload(kb: int):
    import numpy as np

    # fixed values: a checkpoint's size, not its content, is what costs
    return {"prompt": np.zeros((kb * 256,), dtype=np.float32)}


def _score(step: int, results: int) -> float:
    return 0.5 + 0.25 * step / results


def sleeping_trainable(sleep_s: float, results: int, payload_kb: int):
    """``train_group``'s stand-in: the same members, reports and checkpoints (trainable._Reporter),
    each evaluation a sleep; every member ends ``finished`` with what ``superpos audit`` checks."""

    def sleep_group(config: dict, driver: dict | None = None) -> None:
        from ray import tune
        from safetensors.numpy import save_file

        members = members_of(config, tune.get_context().get_trial_id())
        out_root = Path.cwd().resolve() / "members"
        out_dirs = {m.id: out_root / m.id for m in members}
        reporter = _Reporter(members, out_dirs, out_root)
        for m in members:
            shutil.rmtree(out_dirs[m.id], ignore_errors=True)  # a retried trial starts afresh
            out_dirs[m.id].mkdir(parents=True)
            (out_dirs[m.id] / CONFIG_FILE).write_text(json.dumps(m.config.flat(), sort_keys=True, default=str))
            save_file(_payload(payload_kb), str(out_dirs[m.id] / PROMPT_FILE))
        for step in range(1, results + 1):
            time.sleep(sleep_s)
            score = _score(step, results)
            record = {"step": step, "epoch": float(step), "examples": step, "score": score, "best_score": score}
            for m in members:
                with open(out_dirs[m.id] / METRICS_FILE, "a") as f:
                    f.write(json.dumps(record) + "\n")
                reporter.round[m.id] = dict(record)
            reporter.report()
        best = _score(results, results)
        for m in members:
            shutil.copyfile(out_dirs[m.id] / PROMPT_FILE, out_dirs[m.id] / BEST_PROMPT_FILE)
            result = {"status": "finished", "best_score": best, "best_step": results, "best_epoch": float(results), "steps": results, "examples": results, "bench": BENCH_VALUE}
            (out_dirs[m.id] / RESULT_FILE).write_text(json.dumps(result))
        reporter.report()  # final, as train_group's: statuses and result.json in the checkpoint

    return sleep_group


def bare_trainable(config: dict, sleep_s: float, results: int, payload_kb: int) -> None:
    """Plain Tune: the same sleeps and reports, a checkpoint of the same size each, nothing else."""
    from ray import tune
    from safetensors.numpy import save_file

    for step in range(1, results + 1):
        time.sleep(sleep_s)
        with tempfile.TemporaryDirectory(prefix="bench-ckpt-") as tmp:
            save_file(_payload(payload_kb), f"{tmp}/{PROMPT_FILE}")
            Path(tmp, METRICS_FILE).write_text(json.dumps({"step": step, "score": _score(step, results)}) + "\n")
            tune.report({"score": _score(step, results), "step": step}, checkpoint=tune.Checkpoint.from_directory(tmp))


# -- measuring the driver -------------------------------------------------------------------
class RssSampler:
    """The driver process's RSS, sampled every ``every_s`` on a thread (peak between samples may
    be missed; ``ru_maxrss`` below is the process's exact lifetime peak)."""

    def __init__(self, every_s: float = 0.1):
        import psutil

        self.process, self.every_s = psutil.Process(), every_s
        self.baseline = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.end = self.process.memory_info().rss

    def figures(self) -> dict:
        mb = 1 << 20
        return {"rss_baseline_mb": round(self.baseline / mb, 1), "rss_peak_mb": round(self.peak / mb, 1), "rss_end_mb": round(self.end / mb, 1),
                "rss_growth_mb": round((self.peak - self.baseline) / mb, 1)}


class HttpCounter:
    """Counts the driver's HTTP requests to the tracking server by kind (MLflow's client, artifact
    uploads included, goes through ``requests.Session.request``); searches and gets are reads."""

    def __init__(self, base_url: str):
        self.base_url, self.writes, self.reads = base_url, 0, 0

    @contextlib.contextmanager
    def counting(self):
        import requests

        original = requests.Session.request

        def request(session, method, url, *args, **kwargs):
            if str(url).startswith(self.base_url):
                path = str(url)[len(self.base_url):]
                if method.upper() == "GET" or "/search" in path or "/get" in path:
                    self.reads += 1
                else:
                    self.writes += 1
            return original(session, method, url, *args, **kwargs)

        requests.Session.request = request
        try:
            yield self
        finally:
            requests.Session.request = original


@contextlib.contextmanager
def mlflow_server(workdir: Path):
    """A local ``mlflow server`` on a free loopback port (sqlite store, local artifacts); killed after."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mlflow = Path(sys.executable).parent / "mlflow"
    cmd = [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{workdir}/mlflow.db", "--artifacts-destination", str(workdir / "mlartifacts")]
    log = open(workdir / "mlflow-server.log", "a")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 180
        while True:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"mlflow server did not start: {(workdir / 'mlflow-server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        log.close()


@contextlib.contextmanager
def local_ray(cpus: float):
    """A new local Ray for one arm, never an existing cluster; the runner's ray_session sees it
    initialised and leaves it to this call, which shuts it down."""
    import ray

    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    start_local_ray(num_cpus=cpus, log_to_driver=False)  # on 127.0.0.1 only, like a sweep's
    try:
        yield
    finally:
        ray.shutdown()


# -- the arms -------------------------------------------------------------------------------
def _arm(wall_s: float, opts: SweepBenchOptions, rss: RssSampler) -> dict:
    results = opts.trials * opts.results
    return {"wall_s": round(wall_s, 2), "overhead_vs_minimum": round(wall_s / opts.minimum_s - 1, 4) if opts.minimum_s else None,
            "results": results, "results_per_s": round(results / wall_s, 3), **rss.figures()}


def run_bare(opts: SweepBenchOptions, storage: Path) -> dict:
    from ray import tune

    trainable = tune.with_parameters(bare_trainable, sleep_s=opts.sleep_s, results=opts.results, payload_kb=opts.payload_kb)
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": opts.cpus / opts.concurrency}),
        param_space={"trial": tune.grid_search(list(range(opts.trials)))},
        # what the runner sets too, so the arms differ in bookkeeping only
        tune_config=tune.TuneConfig(max_concurrent_trials=opts.concurrency, reuse_actors=True),
        run_config=tune.RunConfig(name="bare", storage_path=str(storage), checkpoint_config=tune.CheckpointConfig(num_to_keep=2), verbose=1),
    )
    with local_ray(opts.cpus), RssSampler() as rss:
        start = time.monotonic()
        grid = tuner.fit()
        wall = time.monotonic() - start
    errors = sum(1 for r in grid if r.error is not None)
    reported = sum(int(r.metrics.get("training_iteration", 0)) for r in grid if r.metrics)
    if errors or reported != opts.trials * opts.results:
        # Tune returns from fit() after Ctrl-C too: the arms would no longer compare like with like
        raise RuntimeError(f"bench-sweep: the bare Tune arm ended with {errors} trial(s) errored and {reported} of {opts.trials * opts.results} results (interrupted?); no figures")
    return _arm(wall, opts, rss) | {"trials_errored": errors, "results_reported": reported}


def bench_spec(opts: SweepBenchOptions, tracking_uri: str, storage: Path):
    """A grid of ``trials`` seeds, parsed and expanded by the real spec code (each seed one trial)."""
    raw = {
        "name": EXPERIMENT, "experiment": EXPERIMENT, "description": "sweep-overhead benchmark: every evaluation is a sleep, no training",
        "base": {"task": "cb", "model": "tiny-t5", "method": "simple", "device": "cpu", "epochs": opts.results},
        "seeds": list(range(opts.trials)), "resources": {"cpu": opts.cpus / opts.concurrency},
        "max_concurrent": opts.concurrency, "max_failures": 0, "tracking_uri": tracking_uri, "storage_path": str(storage),
    }
    return parse_spec(raw, "bench-sweep")


def create_bench_experiment(tracking_uri: str) -> None:
    """The experiment exists, tagged as a benchmark, before any run is logged into it."""
    from trainables.tracking import client_for

    client = client_for(tracking_uri)
    if client.get_experiment_by_name(EXPERIMENT) is None:
        client.create_experiment(EXPERIMENT, tags={BENCH: BENCH_VALUE, EXPERIMENT_KIND_TAG: CUSTOM_MODEL_DEVELOPMENT})


def run_superpos(opts: SweepBenchOptions, tracking_uri: str, storage: Path) -> dict:
    from trainables.audit import run_audit

    create_bench_experiment(tracking_uri)
    spec = bench_spec(opts, tracking_uri, storage)
    run_opts = RunOptions(storage_path=str(storage), yes=True, tags={BENCH: BENCH_VALUE})
    counter = HttpCounter(tracking_uri)
    with local_ray(opts.cpus), RssSampler() as rss, counter.counting():
        start = time.monotonic()
        unfinished = run_sweep(spec, run_opts, sleeping_trainable(opts.sleep_s, opts.results, opts.payload_kb))
        wall = time.monotonic() - start
    figures = _arm(wall, opts, rss) | {
        "trials_unfinished": unfinished, "mlflow_writes": counter.writes, "mlflow_reads": counter.reads,
        "mlflow_writes_per_s": round(counter.writes / wall, 2), "mlflow_requests_per_result": round((counter.writes + counter.reads) / (opts.trials * opts.results), 2),
    }
    figures |= completeness(tracking_uri, opts)
    audit = run_audit(tracking_uri, EXPERIMENT, EXPERIMENT)
    return figures | {"audit_findings": len(audit.findings), "audit": [f.line() for f in audit.findings[:20]]}


def completeness(tracking_uri: str, opts: SweepBenchOptions) -> dict:
    """After the clock: did every trial land, finished, with all its steps, tagged as a bench run?"""
    from trainables.tracking import client_for

    client = client_for(tracking_uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([exp.experiment_id], max_results=50000)
    parents = [r for r in runs if r.data.tags.get("superpos.role") == "sweep"]
    children = [r for r in runs if PARENT in r.data.tags]
    steps = {r.info.run_id: len(client.get_metric_history(r.info.run_id, STEP_KEY)) for r in children}
    complete = [r for r in children if r.info.status == "FINISHED" and r.data.tags.get("status") == "finished" and steps[r.info.run_id] == opts.results]
    return {
        "parent_runs": len(parents), "child_runs": len(children), "child_runs_complete": len(complete),
        "results_logged": sum(steps.values()), "results_dropped": opts.trials * opts.results - sum(min(s, opts.results) for s in steps.values()),
        "bench_tagged_runs": sum(r.data.tags.get(BENCH) == BENCH_VALUE for r in runs),
    }


def lock_hash() -> str | None:
    import hashlib

    lock = Path(__file__).resolve().parent.parent / "requirements.lock"
    return hashlib.sha256(lock.read_bytes()).hexdigest()[:12] if lock.exists() else None


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(), "load_avg_1m": round(os.getloadavg()[0], 2)}


def run_bench(opts: SweepBenchOptions) -> dict:
    """Both arms, bare Tune first; returns the figures (``write`` puts them in a JSON file)."""
    opts.check()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # the audit downloads every artifact
    import mlflow
    import ray

    owned = opts.workdir is None
    work = Path(opts.workdir or tempfile.mkdtemp(prefix="superpos-bench-sweep-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    try:
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        bare = run_bare(opts, work / "bare")
        with mlflow_server(work) as url:
            superpos = run_superpos(opts, url, work / "superpos")
    finally:
        if owned:
            shutil.rmtree(work, ignore_errors=True)
    return {
        "benchmark": "superpos bench-sweep", "date_utc": started, "machine": machine(), "lock": lock_hash(),
        "versions": {"ray": ray.__version__, "mlflow": mlflow.__version__},
        "options": asdict(opts), "minimum_s": round(opts.minimum_s, 2),
        "bare": bare, "superpos": superpos,
        "superpos_vs_bare": round(superpos["wall_s"] / bare["wall_s"], 4),
        "driver_ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "anchor_ray_tune_scalability": ANCHOR,
    }


def summary(fig: dict) -> str:
    b, s = fig["bare"], fig["superpos"]
    o = fig["options"]
    return "\n".join([
        f"{o['trials']} trials x {o['results']} results, sleep {o['sleep_s']:g} s, {o['concurrency']} at once on {o['cpus']:g} CPUs: minimum {fig['minimum_s']:g} s",
        f"bare Tune: {b['wall_s']:g} s (+{b['overhead_vs_minimum']:.0%} over the minimum), {b['results_per_s']:g} results/s, driver RSS +{b['rss_growth_mb']:g} MB",
        f"superpos:  {s['wall_s']:g} s (+{s['overhead_vs_minimum']:.0%}), {s['results_per_s']:g} results/s, {s['mlflow_writes']} MLflow writes ({s['mlflow_writes_per_s']:g}/s), driver RSS +{s['rss_growth_mb']:g} MB",
        f"superpos / bare Tune: {fig['superpos_vs_bare']:.2f}x; child runs complete {s['child_runs_complete']}/{o['trials']}, results dropped {s['results_dropped']}, audit findings {s['audit_findings']}",
    ])


def main(args) -> int:
    opts = SweepBenchOptions(args.trials, args.results, args.sleep, args.concurrency, args.cpus, args.payload_kb, args.workdir)
    fig = run_bench(opts)
    text = json.dumps(fig, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(summary(fig))
    s = fig["superpos"]
    return 0 if s["results_dropped"] == 0 and s["audit_findings"] == 0 and s["child_runs_complete"] == opts.trials else 1

