"""Subcommands of this package for the ``superpos`` console script."""

from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    """Add this package's subcommands (imports of Ray/MLflow happen inside their functions)."""
    p = subparsers.add_parser("report", help="the paper's tables and figures from an MLflow experiment")
    p.add_argument("--tracking-uri", default="sqlite:///mlflow.db", help="MLflow tracking URI (default sqlite:///mlflow.db)")
    p.add_argument("--experiment", required=True, help="MLflow experiment name (the sweep spec's experiment)")
    p.add_argument("--out", default=None, help="output directory (default reports/EXPERIMENT)")
    p.add_argument("--model", nargs="+", default=None, help="only these models (tag model; default: all)")
    p.add_argument("--task", nargs="+", default=None, help="tasks drawn in Figure 2 (default: all with runs)")
    p.set_defaults(func=report)
    add_export_parsers(subparsers)


def report(args: argparse.Namespace) -> int:
    """Write tables, figures and report.html; problems go to stderr (exit 0: partial output is output)."""
    import os
    from pathlib import Path

    from analysis.report import build_report

    # one progress bar per downloaded prompt artifact would bury the warnings on stderr
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    out = Path(args.out or Path("reports") / args.experiment)
    result = build_report(args.tracking_uri, args.experiment, out, models=args.model, tasks=args.task)
    if "environment" in result.tables:
        print((out / "environment.md").read_text())
    for problem in result.problems:
        print(f"superpos report: warning: {problem}", file=sys.stderr)
    print(f"wrote {len(result.files)} files to {out}; open {result.html}")
    return 0


def add_export_parsers(subparsers) -> None:
    """``superpos export`` and ``superpos evaluate`` (superpos/export.py, superpos/evaluate.py, analysis/export.py)."""
    p = subparsers.add_parser("export", help="a trained prompt as a PEFT prompt-tuning adapter folder")
    p.add_argument("run_dir", nargs="?", default=None, help="a run directory (superpos train --out)")
    p.add_argument("--out", required=True, help="adapter folder (with --all: a folder of adapter folders)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing adapter folder")
    add_mlflow_source(p)
    p.add_argument("--experiment", default=None, help="best run of a Table 1 cell of this experiment (with --task --method --model)")
    p.add_argument("--task", default=None)
    p.add_argument("--method", default=None)
    p.add_argument("--model", default=None)
    p.add_argument("--dropout", default=None, choices=("on", "off"), help="the cell's dropout (default: best of both)")
    p.add_argument("--all", action="store_true", help="the best run of every cell of --experiment")
    p.set_defaults(func=export)

    p = subparsers.add_parser("evaluate", help="a saved prompt on a validation split or a file; test predictions for GLUE/SuperGLUE")
    p.add_argument("source", nargs="?", default=None, help="a run directory or a PEFT prompt-tuning adapter folder")
    add_mlflow_source(p)
    p.add_argument("--task", default=None, help="the task (required for an adapter folder)")
    p.add_argument("--model", default=None, help="adapter folders: the base model (default: the adapter's base_model_name_or_path)")
    p.add_argument("--template", default="t5", help="adapter folders: t5 or attempt")
    p.add_argument("--data-dir", default=None, help="GLUE/SuperGLUE files (default: the run's, or $SUPERPOS_DATA_DIR)")
    p.add_argument("--file", default=None, help="evaluate on this file in the task's format instead of the validation split")
    p.add_argument("--predictions", default=None, help="write one JSON line per example to this file")
    p.add_argument("--submission", default=None, help="write the benchmark server's file for a test --file into this folder")
    p.add_argument("--device", default=None, help="auto, cpu or cuda (default: the run's)")
    p.add_argument("--overwrite", action="store_true", help="replace existing --predictions / submission files")
    p.set_defaults(func=evaluate)


def add_mlflow_source(p) -> None:
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (with --run-id or --experiment)")
    p.add_argument("--run-id", default=None, help="one MLflow trial run")


def export(args: argparse.Namespace) -> int:
    """Write adapter folders; prints one line per folder written."""
    from superpos.errors import ConfigError

    sources = [name for name, given in (("RUN_DIR", args.run_dir), ("--run-id", args.run_id), ("--experiment", args.experiment)) if given]
    if len(sources) != 1:
        raise ConfigError(f"give exactly one source: RUN_DIR, --run-id or --experiment (got {', '.join(sources) or 'none'})")
    if args.run_dir:
        from superpos.export import export_run_dir

        folders, notes = [export_run_dir(args.run_dir, args.out, args.overwrite)], []
    else:
        from analysis import export as mlflow_export

        uri = args.tracking_uri or "sqlite:///mlflow.db"
        if args.run_id:
            folders, notes = [mlflow_export.export_run(uri, args.run_id, args.out, args.overwrite)], []
        elif args.all:
            folders, notes = mlflow_export.export_all(uri, args.experiment, args.out, args.overwrite)
        else:
            missing = [f"--{k}" for k in ("task", "method", "model") if not getattr(args, k)]
            if missing:
                raise ConfigError(f"--experiment needs {', '.join(missing)} (or --all)")
            run_id = mlflow_export.best_cell_run(uri, args.experiment, args.task, args.method, args.model, args.dropout)
            folders, notes = [mlflow_export.export_run(uri, run_id, args.out, args.overwrite)], []
    for note in notes:
        print(f"superpos export: {note}", file=sys.stderr)
    for folder in folders:
        print(f"wrote {folder}")
    return 0


def evaluate(args: argparse.Namespace) -> int:
    """Print the evaluation summary as JSON."""
    import json

    from superpos.errors import ConfigError

    kwargs = dict(task=args.task, template=args.template, data_dir=args.data_dir, file=args.file, predictions=args.predictions,
                  submission=args.submission, overwrite=args.overwrite, device=args.device)
    if (args.source is None) == (args.run_id is None):
        raise ConfigError("give exactly one source: a run directory or adapter folder, or --run-id")
    if args.run_id:
        from analysis.export import evaluate_run

        summary = evaluate_run(args.tracking_uri or "sqlite:///mlflow.db", args.run_id, **kwargs)
    else:
        from superpos.evaluate import evaluate as evaluate_source

        summary = evaluate_source(args.source, model=args.model, **kwargs)
    print(json.dumps(summary))
    return 0
