"""Subcommands of this package for the ``superpos`` console script: ``sweep``, ``search``,
``audit`` (trainables/audit.py) and ``bench-sweep`` (trainables/bench_sweep.py).

Ray, MLflow and Optuna are imported inside the subcommand functions only, so ``superpos
train`` starts without them.
"""

from __future__ import annotations

import argparse


def _common(p: argparse.ArgumentParser) -> None:
    from superpos.settings import DATA_DIR_ENV

    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep (Tuner.restore: unfinished and errored trials); loads Ray Tune's pickled state from the storage path")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: the spec's, else sqlite:///mlflow.db)")
    p.add_argument("--storage-path", default=None, help="Tune storage: a local directory or gs:// / s3:// URI (default: the spec's)")
    p.add_argument("--data-dir", default=None, help=f"GLUE/SuperGLUE files: a directory or a gs:// / s3:// URI (default: ${DATA_DIR_ENV} or ../shared/data)")
    p.add_argument("--address", default=None, help="Ray cluster to join: auto (on a cluster node) or HOST:PORT; default: a new local Ray, never one already running")
    p.add_argument("--yes", action="store_true", help="launch even more than 1,000 trials")


def sweep(args: argparse.Namespace) -> int:
    """Run a sweep spec (grid, or a search spec) with Ray Tune, logging to MLflow."""
    from trainables.chain import run_chain
    from trainables.sweep_state import RunOptions
    from trainables.spec import load_spec

    specs = [load_spec(path) for path in args.spec]  # every stage of a chain validated before any work
    opts = RunOptions(args.resume, args.tracking_uri, args.storage_path, _data_dir(args.data_dir), args.address, yes=args.yes)
    errors = run_chain(specs, opts)
    return 1 if errors else 0


def search(args: argparse.Namespace) -> int:
    """Optuna (TPE) + ASHA search of lr/m for one task and method, or of a search spec."""
    from superpos.errors import ConfigError
    from trainables.chain import run_chain
    from trainables.guards import check_scheduler
    from trainables.sweep_state import RunOptions
    from trainables.spec import load_spec, parse_spec

    if args.spec:
        spec = load_spec(args.spec)
        if args.task:
            spec.grid = {"task": args.task}
    else:
        if not args.task:
            raise ConfigError("give a search SPEC or --task (and --method)")
        space = {"lr": {"loguniform": [args.lr_min, args.lr_max]}}
        if args.method == "superpos":
            space["m"] = {"lograndint": [1, args.m_max]}  # SuperPos paper 3.3: m from 1 to 256
        base = {"method": args.method, "model": args.model, "epochs": args.epochs, "batch_size": args.batch_size}
        base.update({k: getattr(args, k) for k in ("max_train_examples", "max_eval_examples") if getattr(args, k) is not None})
        raw = {
            "name": args.name or f"search-{args.method}", "experiment": args.experiment, "base": base, "grid": {"task": args.task},
            "search": "optuna", "space": space, "num_samples": args.num_samples,
            "scheduler": {"type": "asha", "grace_period": args.grace_period},
            "resources": {"cpu": args.cpu, "gpu": args.gpu},
        }
        spec = parse_spec(raw, "command line")
        check_scheduler(spec, args.epochs, ("--grace-period", "--epochs"))
    opts = RunOptions(args.resume, args.tracking_uri, args.storage_path, _data_dir(args.data_dir), args.address, args.best_file, args.optuna_storage, args.yes)
    return 1 if run_chain([spec], opts) else 0


def audit(args: argparse.Namespace) -> int:
    """Check a sweep's invariants (trainables/audit.py): exit 0 when clean, 1 with findings."""
    from trainables.audit import main

    return main(args)


def bench_sweep(args: argparse.Namespace) -> int:
    """The sweep driver's bookkeeping against bare Ray Tune (trainables/bench_sweep.py): a figure."""
    from trainables.bench_sweep import main

    return main(args)


def _data_dir(path: str | None) -> str | None:
    from pathlib import Path

    if path and "://" in path:  # gs:// or s3://: each trial's node fetches its task's files (trainables/nodes.py)
        return path
    return str(Path(path).resolve()) if path else None


def register(subparsers) -> None:
    """Add ``sweep`` and ``search`` to the ``superpos`` console script."""
    p = subparsers.add_parser("sweep", help="run a sweep spec (sweeps/*.yaml) with Ray Tune + MLflow")
    p.add_argument("spec", nargs="+", help="sweep spec(s), e.g. sweeps/smoke.yaml; several run as a chain, in order (trainables/chain.py)")
    _common(p)
    p.set_defaults(func=sweep)

    q = subparsers.add_parser("search", help="Optuna (TPE) + ASHA search of lr and m per task")
    q.add_argument("spec", nargs="?", default=None, help="a search spec (e.g. sweeps/optuna_lr_m.yaml); or use --task/--method")
    q.add_argument("--task", nargs="+", default=None, help="task(s): one study each (overrides the spec's tasks)")
    q.add_argument("--method", default="superpos")
    q.add_argument("--model", default="tiny-t5")
    q.add_argument("--epochs", type=int, default=80, help="max epochs per trial (paper: 80); ASHA stops the weak ones early")
    q.add_argument("--batch-size", type=int, default=32)
    q.add_argument("--max-train-examples", type=int, default=None)
    q.add_argument("--max-eval-examples", type=int, default=None)
    q.add_argument("--num-samples", type=int, default=20, help="trials per study")
    q.add_argument("--grace-period", type=int, default=5, help="ASHA: epochs before a trial can be stopped")
    q.add_argument("--lr-min", type=float, default=1e-4)
    q.add_argument("--lr-max", type=float, default=1.0)
    q.add_argument("--m-max", type=int, default=256)
    q.add_argument("--cpu", type=float, default=1.0)
    q.add_argument("--gpu", type=float, default=0.0)
    q.add_argument("--name", default=None, help="sweep name (default search-METHOD)")
    q.add_argument("--experiment", default="superpos-search", help="MLflow experiment")
    q.add_argument("--best-file", default=None, help="YAML of the best values per task (default best/NAME.yaml), for include:")
    q.add_argument("--optuna-storage", default=None, help="Optuna storage URL (default sqlite under the storage path)")
    _common(q)
    q.set_defaults(func=search)

    a = subparsers.add_parser("audit", help="check a finished (or interrupted) sweep's invariants in MLflow and its storage path; one line per finding")
    a.add_argument("--tracking-uri", required=True, help="the sweep's MLflow store")
    a.add_argument("--experiment", default=None, help="audit every sweep in this MLflow experiment")
    a.add_argument("--sweep", default=None, help="audit the sweep of this name (in --experiment, else in any experiment)")
    a.add_argument("--storage-path", default=None, help="the sweeps' Tune storage path (default: each parent run's superpos.storage tag)")
    a.add_argument("--json", action="store_true", help="the findings as JSON")
    a.add_argument("--repair", action="store_true", help="end orphaned RUNNING child runs as KILLED (tag superpos.repair); deletes nothing")
    a.set_defaults(func=audit)

    b = subparsers.add_parser("bench-sweep", help="benchmark: the sweep driver's bookkeeping (MLflow, outbox, checkpoints) against bare Ray Tune, on trials that sleep")
    b.add_argument("--trials", type=int, default=100, help="N trials (each one MLflow child run)")
    b.add_argument("--results", type=int, default=3, help="R results (evaluations) per trial")
    b.add_argument("--sleep", type=float, default=1.0, help="seconds each result takes (in place of training)")
    b.add_argument("--concurrency", type=int, default=10, help="trials at once; each reserves CPUS/CONCURRENCY")
    b.add_argument("--cpus", type=float, default=2.0, help="logical CPUs of the local Ray each arm starts")
    b.add_argument("--payload-kb", type=int, default=64, help="size of the prompt in each checkpoint, KB")
    b.add_argument("--workdir", default=None, help="keep both arms' storage and the MLflow store here (default: a temporary directory, removed)")
    b.add_argument("--out", default=None, help="write the figures to this JSON file")
    b.set_defaults(func=bench_sweep)
