"""Convergence: how soon each run reaches 90% and 95% of its best validation score.

The paper (section 4, Figure 2a/b) reads faster convergence off the learning curves (dropout
off, SuperPos); this puts numbers on it: per run, the first evaluation whose score reaches the
fraction of the run's best score, and per model x method x dropout their mean ± sample std.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.labels import DROPOUT_LABELS, method_label, model_label, order_methods, order_models
from analysis.render import number

FRACTIONS = (0.9, 0.95)


def _label(fraction: float) -> str:
    return f"{round(fraction * 100)}"


def convergence_per_run(runs: pd.DataFrame, history: pd.DataFrame, fractions=FRACTIONS) -> pd.DataFrame:
    """One row per run with evaluations: best score, its step, and ``steps_to_<pct>`` /
    ``epochs_to_<pct>`` for each fraction (NaN where the best score is not positive: a run that
    never learned has nothing to converge to)."""
    # vectorised over all runs at once: a Python loop per run took seconds at a few hundred runs
    curves = history[history["score"].notna()].sort_values(["run_id", "step"], kind="stable")
    if curves.empty:
        return pd.DataFrame()
    best = curves.groupby("run_id", sort=False)["score"].transform("max")
    first_best = curves[curves["score"] == best].drop_duplicates("run_id").set_index("run_id")
    per_run = pd.DataFrame({"run_id": curves["run_id"].unique()})
    per_run["best_score"] = per_run["run_id"].map(first_best["score"])
    per_run["best_step"] = per_run["run_id"].map(first_best["step"])
    for fraction in fractions:
        first = curves[(best > 0) & (curves["score"] >= fraction * best)].drop_duplicates("run_id").set_index("run_id")
        per_run[f"steps_to_{_label(fraction)}"] = per_run["run_id"].map(first["step"])
        per_run[f"epochs_to_{_label(fraction)}"] = per_run["run_id"].map(first["epoch"])
    keys = ["run_id", "model", "task", "method", "dropout", "m", "seed", "status"]
    return runs[keys].merge(per_run, on="run_id", how="inner")


def convergence_table(per_run: pd.DataFrame, fractions=FRACTIONS) -> pd.DataFrame:
    """Formatted comparison: one row per model, method and dropout (paper order), mean ± std over
    its runs (all tasks and seeds) of the steps and epochs to each fraction of the best score."""
    measures = [(f"{unit}_to_{_label(f)}", f"{unit.capitalize()} to {_label(f)}%") for unit in ("steps", "epochs") for f in fractions]
    groups = per_run.groupby(["model", "method", "dropout"])
    rows = []
    for model in order_models(per_run["model"]):
        for method in order_methods(per_run["method"]):
            for dropout in (True, False):
                if (model, method, dropout) not in groups.groups:
                    continue
                group = groups.get_group((model, method, dropout))
                row = {"Model": model_label(model), "Method": method_label(method), "Dropout": DROPOUT_LABELS[dropout],
                       "Runs": str(len(group)), "Tasks": str(group["task"].nunique())}
                for column, header in measures:
                    values = group[column].dropna()
                    std = values.std(ddof=1) if len(values) > 1 else np.nan
                    row[header] = number(values.mean(), std, digits=0 if column.startswith("steps") else 1)
                rows.append(row)
    return pd.DataFrame(rows, columns=["Model", "Method", "Dropout", "Runs", "Tasks", *(h for _, h in measures)])
