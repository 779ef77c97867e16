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
