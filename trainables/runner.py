"""Run a sweep spec with Ray Tune: grid sweeps (fused groups) and searches (Optuna or random,
one study per task, K = 1), on a new local Ray (``ray.init(address="local")``) or on a cluster
(``--address auto`` or ``HOST:PORT``).

Layout under the storage path (local directory or gs:// / s3:// URI)::

    <storage>/<sweep name>/superpos_sweep.json   parent run id, tracking URI (for --resume; sweep_state.py)
    <storage>/<sweep name>/superpos_sweep.lock   the driver's lock, local storage (sweep_lock.py)
    <storage>/<sweep name>/superpos_sweep.lease  the driver's lease, gs:// or s3:// storage (sweep_lock.py)
    <storage>/<sweep name>/grid/                 the Tune experiment of a grid sweep
    <storage>/<sweep name>/study-<task>/         one Tune experiment per search study
    <storage>/<sweep name>/optuna.db             the Optuna studies (local storage)
    <storage>/<sweep name>/optuna.journal        the Optuna studies (gs:// or s3://; study_store.py)
    <storage>/<sweep name>/mlflow-outbox/        MLflow events buffered during a store outage (outbox.py)

``--resume`` restores every Tune experiment with ``Tuner.restore`` (unfinished and errored
trials resume from their last checkpoint) and logs into the same MLflow parent run. A search
also continues its Optuna study: trials the killed driver had asked after Tune's last snapshot
are run by new Ray trials with the parameters already sampled (trainables/searcher.py), and
their abandoned MLflow child runs are dropped (``tracking.drop_lost_runs``).
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import sys
from pathlib import Path

from superpos.errors import ConfigError

from trainables import guards
from trainables.outbox import Outbox, outbox_dir
from trainables.sweep_lock import sweep_lock
from trainables.sweep_state import STATE_FILE, RunOptions, absolute_tracking_uri, delete_state, read_state, sweep_root, write_state
from trainables.spec import Param, SweepSpec, round_best, write_best
from trainables.spec.trial_config import BASE_KEY, MEMBERS_KEY, PROMPT_EVERY_EVAL_KEY, TrialGroup, grid_trial_config
from trainables.tracking import SweepLogger
from trainables.tune_snapshot import repair_missing_checkpoints
from trainables.trainable import train_group

# -- Ray --------------------------------------------------------------------------------
LOOPBACK = "127.0.0.1"


def start_local_ray(**kwargs) -> None:
    """Start a new local Ray (``address="local"``: never one already running here; no
    dashboard) whose servers listen on 127.0.0.1 only; ``kwargs`` go to ``ray.init``.

    Security: a laptop or a shared login node must not expose the sweep's Ray (the ports of
    its GCS, raylet, object manager, workers and agents) to the network. Ray binds them to
    127.0.0.1 only when the node's IP is exactly 127.0.0.1 (otherwise to all interfaces, and
    the runtime-env agent to the machine's routable IP), but on Linux ``ray.init`` rewrites
    ``_node_ip_address="127.0.0.1"`` to the routable IP unless Ray clusters are off
    (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, Ray's default on macOS and Windows, read when
    Ray is imported). So they are off while this node starts, and only then: its workers and
    agents are given the node's IP on their command lines, and a later
    ``ray.init(address=...)`` in this process joins a cluster as before. A Ray that starts on
    another IP all the same is shut down, not used (tests/test_local_ray_loopback.py)."""
    import ray
    from ray._private import ray_constants

    kwargs.setdefault("include_dashboard", False)  # no dashboard server on a laptop
    enabled = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(address="local", _node_ip_address=LOOPBACK, **kwargs)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = enabled
    ip = ray.util.get_node_ip_address()
    if ip != LOOPBACK:
        ray.shutdown()
        raise RuntimeError(f"the local Ray started on {ip}, not {LOOPBACK}: refusing to run a sweep on a Ray open to the network")


@contextlib.contextmanager
def ray_session(address: str | None, env_vars: dict[str, str] | None = None):
    """Join the cluster at ``address``, or start a new local Ray, with ``env_vars`` in every
    worker; shut down what this call started or joined."""
    import ray

    # every report carries a checkpoint, so with num_to_keep Tune snapshots its state often:
    # wanted (it is what --resume restores), so no warning about it
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")

    if ray.is_initialized():  # a caller (a test, a notebook) owns the connection
        yield
        return
    runtime_env = {"env_vars": env_vars} if env_vars else None
    if address:
        try:
            ray.init(address=address, runtime_env=runtime_env)
        except ConnectionError as e:  # address auto, with no cluster on this machine
            raise ConfigError(f"--address {address}: {e}") from None
    else:
        # a new local instance, never one that `ray start` (or another program) left running
        # here: ray.init() would join it, and its nodes' fate would be this sweep's; on 127.0.0.1 only
        start_local_ray(runtime_env=runtime_env)
    try:
        yield
    finally:
        ray.shutdown()


def worker_env(spec: SweepSpec) -> dict[str, str] | None:
    """The portable CPU mode's settings for the workers (superpos/portable_cpu.py): on where the
    driver runs in it, or for a deterministic spec on CPU."""
    from superpos import portable_cpu

    base = spec.base_config()
    return portable_cpu.worker_env(bool(base.get("deterministic")) and base.get("device") != "cuda")


def trial_name(trial) -> str:
    """Short trial names for the progress table: the first member's label, the group size."""
    if MEMBERS_KEY in trial.config:
        return f"{TrialGroup(str.__str__(trial.config[MEMBERS_KEY])).label}-{trial.trial_id}"
    return f"{json.loads(trial.config[BASE_KEY])['task']}-{trial.trial_id}"


def _scheduler(spec: SweepSpec, base: dict):
    if spec.scheduler.type == "none":
        return None
    from ray.tune.schedulers import ASHAScheduler

    epochs = int(base.get("epochs", 80))
    # one report per epoch, then the trainable's final report that carries result.json and the
    # prompt: ASHA stops every trial that reaches max_t, so max_t is that final report (with
    # max_t = epochs a trial that trained every epoch was cut off before it, as "stopped");
    # eval_every adds reports: then the rungs run past the epochs
    max_t = epochs + 1 if not base.get("eval_every") else 10**6
    return ASHAScheduler(time_attr="training_iteration", max_t=max_t, grace_period=spec.scheduler.grace_period, reduction_factor=spec.scheduler.reduction_factor)


def _run_config(spec: SweepSpec, root: str, name: str, logger):
    from ray import tune

    return tune.RunConfig(
        name=name,
        storage_path=root,
        callbacks=[logger],
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        # the newest checkpoint is all a resume needs; keep one more against a torn write
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        verbose=1,
    )


def _trainable(spec: SweepSpec, function=train_group):
    from ray import tune

    from trainables.nodes import package_versions

    # each trial checks that its node runs the driver's package (a stale node is refused)
    trainable = tune.with_parameters(function, driver=package_versions())
    return tune.with_resources(trainable, {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})


def _tuner(spec, root, name, logger, param_space, tune_config, resume: bool, function=train_group):
    from ray import tune

    path = f"{root}/{name}"
    if resume and tune.Tuner.can_restore(path):
        repair_missing_checkpoints(path)  # a killed driver's snapshot may name checkpoints already deleted
        try:
            return tune.Tuner.restore(path, trainable=_trainable(spec, function), resume_unfinished=True, resume_errored=True)
        except (pickle.UnpicklingError, EOFError) as e:  # a torn write, a full disk
            raise ConfigError(
                f"--resume: Ray Tune's state {path}/tuner.pkl is damaged ({type(e).__name__}: {e}), so the sweep cannot continue there; "
                "what its trials logged is in MLflow. Restore the file from a backup, or start the sweep afresh under another --storage-path"
            ) from None
    return tune.Tuner(_trainable(spec, function), param_space=param_space, tune_config=tune_config, run_config=_run_config(spec, root, name, logger))


# -- entry points -----------------------------------------------------------------------
def start(spec: SweepSpec, opts: RunOptions, fingerprint: str) -> tuple[str, dict]:
    """Check the sweep's state, create (or, on resume, reuse) the MLflow parent run.

    Ray Tune keeps its experiment state as pickles, and ``--resume`` unpickles them: it is
    refused unless the sweep record holds this spec's fingerprint (a record left by another
    spec, or planted); whoever can write the storage path can still run code on the driver."""
    from trainables.store import store_lock
    from trainables.tracking import start_parent

    root = sweep_root(spec, opts)
    state = read_state(root)
    if opts.resume:
        if state is None:
            raise ConfigError(f"nothing to resume: no sweep state at {root}/{STATE_FILE}")
        if state.get("spec_sha256") != fingerprint:
            raise ConfigError(
                f"--resume: the sweep record {root}/{STATE_FILE} does not match {spec.source} (spec sha256 {state.get('spec_sha256')} recorded, "
                f"{fingerprint} now); refusing to load Ray Tune's pickled state from it. Resume with the spec that started it, or start afresh elsewhere"
            )
        print(f"resuming sweep {spec.name}: loading Ray Tune's pickled experiment state from {root}", flush=True)
        if opts.tracking_uri and absolute_tracking_uri(opts.tracking_uri) != state["tracking_uri"]:
            raise ConfigError(f"--tracking-uri {opts.tracking_uri} differs from the sweep's MLflow store {state['tracking_uri']}; a sweep resumes where it started")
        return root, state
    if state is not None:
        raise ConfigError(f"sweep {spec.name!r} already has state at {root}: pass --resume to continue it, or another --storage-path")
    uri = absolute_tracking_uri(opts.tracking_uri or spec.tracking_uri)
    with store_lock(uri):  # a new store's schema and experiment are created once
        parent = start_parent(uri, spec.experiment, spec.name, Path(spec.source).name, {**opts.tags, "superpos.storage": root})
    state = {"parent_run_id": parent, "tracking_uri": uri, "experiment": spec.experiment, "spec": spec.source, "spec_sha256": fingerprint}
    write_state(root, state)
    return root, state


def run_sweep(spec: SweepSpec, opts: RunOptions, function=train_group) -> int:
    """A grid sweep (a search spec goes to ``run_search``); returns the number of trials that
    errored or did not end (0: all ended). Source sweeps must be resolved (chain.prepare_sources).
    ``function``: the function trainable, ``train_group`` (the sweep benchmark,
    trainables/bench_sweep.py, passes one that sleeps instead of training)."""
    if spec.search != "grid":
        return run_search(spec, opts)
    from ray import tune

    from trainables.tracking import finish_parent

    groups = spec.groups(opts.data_dir)  # validates every trial before Ray starts
    members = [m for g in groups for m in g]
    guards.check_trials([m.config for m in members], spec.source)
    guards.check_size(len(members), opts.yes or opts.resume, spec.source)
    if spec.scheduler.type != "none":
        guards.check_scheduler(spec, int(spec.base_config().get("epochs", 80)))
    tune_config = tune.TuneConfig(
        metric=spec.metric, mode="max", scheduler=_scheduler(spec, spec.base_config()),
        max_concurrent_trials=spec.max_concurrent or None, trial_name_creator=trial_name, trial_dirname_creator=trial_name,
        reuse_actors=True,  # a worker's later trials find the frozen backbone loaded (superpos/backbones/cache.py)
    )
    param_space = {MEMBERS_KEY: tune.grid_search([grid_trial_config(g) for g in groups]), **_prompt_flag(spec)}
    # one driver per storage path (sweep_lock.py); a Ray that cannot be reached stops the sweep before its state exists
    with sweep_lock(sweep_root(spec, opts)), ray_session(opts.address, worker_env(spec)):
        root, state = start(spec, opts, guards.fingerprint(spec, [m.config.flat() for m in members]))
        logger = _logger(spec, root, state)
        with abandon_if_unstarted(root, state, opts):
            guards.check_resources(spec.resources, opts.address is None, spec.source)
            _tuner(spec, root, "grid", logger, param_space, tune_config, opts.resume, function).fit()
    if not _drained(spec, logger):
        return len(members)
    outcome = check_outcome(spec, root, state, len(members))
    if outcome == 0:
        finish_parent(state["tracking_uri"], state["parent_run_id"], {"superpos.trials": sum(map(len, groups)), "superpos.groups": len(groups)})
    return outcome


def _prompt_flag(spec: SweepSpec) -> dict:
    """Under a scheduler a trial may be stopped after any evaluation: its checkpoints then carry
    the prompt of each evaluation (trainable.py), which its MLflow run logs when it is stopped."""
    return {PROMPT_EVERY_EVAL_KEY: True} if spec.scheduler.type != "none" else {}


class BufferedSweepLogger(Outbox, SweepLogger):
    """The driver's MLflow writer (tracking.py), buffered on disk against store outages (outbox.py)."""


def _logger(spec: SweepSpec, root: str, state: dict):
    """The driver's MLflow writer; it first logs what an earlier driver left in its journal."""
    return BufferedSweepLogger(state["tracking_uri"], state["parent_run_id"], spec.name, str(outbox_dir(root)))


def _drained(spec: SweepSpec, logger) -> bool:
    if logger.drain():
        return True
    print(f"sweep {spec.name}: the MLflow store stayed unreachable; {logger.pending()} event(s) not logged: the ends of the "
          f"trials are kept in {logger.dir}, and the same command with --resume logs them", file=sys.stderr, flush=True)
    return False


def check_outcome(spec: SweepSpec, root: str, state: dict, expected: int, task: str | None = None) -> int:
    """0 when all ``expected`` trials (of ``task``, for a study) have ended in MLflow; else the
    number that failed or did not end. MLflow decides, not Tune's result grid: after a Ctrl-C
    Tune marks the trials it stopped as terminated."""
    from trainables.tracking import child_statuses

    statuses = [st for t, st in child_statuses(state["tracking_uri"], state["parent_run_id"]) if task in (None, t)]
    ended = sum(st in ("finished", "diverged", "stopped") for st in statuses)
    failed = sum(st == "failed" for st in statuses)
    if ended + failed < expected:
        print(f"sweep {spec.name} interrupted; continue it with: superpos sweep {spec.source} --resume --storage-path {root.rsplit('/', 1)[0]}")
    elif failed:  # nothing left to run
        from trainables.tracking import finish_parent

        finish_parent(state["tracking_uri"], state["parent_run_id"], {"superpos.failed_trials": failed}, status="FAILED")
    # more ended than expected: a search trial that ran wholly between two Tune snapshots of a
    # killed driver, and was sampled again on resume; an extra trial, not a missing one
    return max(0, expected - ended)


def run_search(spec: SweepSpec, opts: RunOptions) -> int:
    """One Optuna (TPE) or random study per task, with ASHA if the spec asks; the best values
    per task go to the parent run's tags and to the best file that ``include:`` reads."""
    from trainables.tracking import client_for, finish_parent

    studies = spec.studies(opts.data_dir)
    probes = [spec.member(dict(base, **{k: p.args[0] for k, p in spec.space.items()}), spec.source).config for _, base in studies]
    guards.check_trials(probes, spec.source, spec.space)
    guards.check_size(len(studies) * spec.num_samples, opts.yes or opts.resume, spec.source)
    for _, base in studies:
        guards.check_scheduler(spec, int(base.get("epochs", 80)))
    best = {}
    with sweep_lock(sweep_root(spec, opts)), ray_session(opts.address, worker_env(spec)):
        root, state = start(spec, opts, guards.fingerprint(spec, [base for _, base in studies]))
        logger = _logger(spec, root, state)
        with abandon_if_unstarted(root, state, opts):
            guards.check_resources(spec.resources, opts.address is None, spec.source)
            for task, base in studies:
                best_of, errors = _study(spec, opts, root, state, task, base, logger)
                if errors:  # interrupted or failed: --resume continues from here
                    return errors
                best[task] = best_of
    tied = {t: b.pop("tied") for t, b in best.items() if "tied" in b}
    for task, note in tied.items():
        print(f"warning: study {task}: {note}", file=sys.stderr, flush=True)
    best_path = Path(opts.best_file or spec.best_file or f"best/{spec.name}.yaml")
    per_task = {t: {k: v for k, v in b.items() if k != "best_score"} for t, b in best.items() if t not in tied}
    write_best(best_path, spec.base["method"], spec.base.get("model", "tiny-t5"), per_task, spec.name, tied)
    client = client_for(state["tracking_uri"])
    client.log_artifact(state["parent_run_id"], str(best_path))
    tags = {f"best.{task}.{k}": v for task, b in best.items() for k, v in b.items()} | {f"best.{task}.tied": note for task, note in tied.items()}
    finish_parent(state["tracking_uri"], state["parent_run_id"], tags | {"superpos.best_file": str(best_path.resolve())})
    print(f"best per task -> {best_path}: {json.dumps(best)}")
    return 0


def _study(spec: SweepSpec, opts: RunOptions, root: str, state: dict, task: str, base: dict, logger) -> tuple[dict, int]:
    from ray import tune

    tune_config = tune.TuneConfig(
        metric=spec.metric, mode="max", search_alg=_search_alg(spec, root, task, opts), scheduler=_scheduler(spec, base),
        num_samples=spec.num_samples, max_concurrent_trials=spec.max_concurrent or None,
        trial_name_creator=trial_name, trial_dirname_creator=trial_name, reuse_actors=True,
    )
    param_space = {BASE_KEY: json.dumps(base, sort_keys=True), **{k: tune_domain(p) for k, p in spec.space.items()}, **_prompt_flag(spec)}
    tuner = _tuner(spec, root, f"study-{task}", logger, param_space, tune_config, opts.resume)
    if opts.resume:
        _drop_lost_runs(state, task, f"{root}/study-{task}")
    results = tuner.fit()
    if not _drained(spec, logger):
        return {}, spec.num_samples
    outcome = check_outcome(spec, root, state, spec.num_samples, task)
    if outcome:
        return {}, outcome
    top = results.get_best_result(metric=spec.metric, mode="max", scope="all")
    best = {k: round_best(top.config[k]) for k in spec.space} | {"best_score": round(float(top.metrics[spec.metric]), 4)}
    scores = {round(float(r.metrics[spec.metric]), 6) for r in results if r.metrics and spec.metric in r.metrics}
    if len(results) > 1 and len(scores) == 1:  # no winner to name
        return {"tied": f"all {len(results)} trials tied at {spec.metric} = {best['best_score']}: no best values", "best_score": best["best_score"]}, outcome
    return best, outcome


@contextlib.contextmanager
def abandon_if_unstarted(root: str, state: dict, opts: RunOptions):
    """A fresh sweep that fails before its first trial (a check in Ray, Ctrl-C at start-up)
    leaves nothing that blocks a fresh start: its sweep record is removed and its parent run
    ends FAILED with the error. Once a trial has an MLflow run, the state is kept for --resume."""
    try:
        yield
    except BaseException as e:
        from trainables.tracking import child_statuses, finish_parent

        # best effort: if MLflow cannot say whether a trial started, keep the state (the error
        # raised is the one that stopped the sweep)
        with contextlib.suppress(Exception):
            if not opts.resume and not child_statuses(state["tracking_uri"], state["parent_run_id"]):
                delete_state(root)
                finish_parent(state["tracking_uri"], state["parent_run_id"], {"superpos.error": f"{type(e).__name__}: {e}"[:5000]}, status="FAILED")
        raise


def _drop_lost_runs(state: dict, task: str, path: str) -> None:
    """Before a study resumes: end and drop the MLflow child runs of Ray trials that are not in
    the Tune snapshot it restores (created after it by the killed driver; never run again)."""
    from trainables.searcher import experiment_trials
    from trainables.tracking import drop_lost_runs

    restored = experiment_trials(path)
    if restored is None:
        return
    lost = drop_lost_runs(state["tracking_uri"], state["parent_run_id"], task, set(restored))
    if lost:
        print(f"study {task}: dropped the MLflow runs of {len(lost)} Ray trial(s) started after Tune's last snapshot: {', '.join(lost)}")


def tune_domain(param: Param):
    """A spec's search-space dimension as a Ray Tune domain (Ray's integer upper bounds are
    exclusive; the spec's are inclusive)."""
    from ray import tune

    if param.kind == "choice":
        return tune.choice(param.args)
    lo, hi = param.args
    return {
        "uniform": lambda: tune.uniform(lo, hi),
        "loguniform": lambda: tune.loguniform(lo, hi),
        "randint": lambda: tune.randint(lo, hi + 1),
        "lograndint": lambda: tune.lograndint(lo, hi + 1),
    }[param.kind]()


def _search_alg(spec: SweepSpec, root: str, task: str, opts: RunOptions):
    if spec.search == "random":
        from ray.tune.search import BasicVariantGenerator

        return BasicVariantGenerator(random_state=spec.seeds[0])
    from trainables.searcher import StudySearch
    from trainables.study_store import study_storage

    storage, journal = study_storage(root, opts.optuna_storage)
    # TPE (Optuna's default sampler); Ray's OptunaSearch never prunes: ASHA stops trials.
    # StudySearch: OptunaSearch whose --resume keeps the study and Tune's trials consistent
    search = StudySearch(metric=spec.metric, mode="max", storage=storage, study_name=f"{spec.name}-{task}", seed=spec.seeds[0])
    search.journal = journal
    return search

