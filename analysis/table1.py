"""Table 1: best validation score per model x method x dropout x task (paper Table 1).

methods.md section 5: the reported number is the best validation score over training, i.e.
the evaluation with the highest ``score`` (the Table 1 score, the mean of the task's metrics,
methods.md section 4); that evaluation's metrics are reported beside it. A run that never
produced a valid label (``invalid_rate`` 1 at every evaluation) scores 0 and is marked with
the paper's dagger. Numbers are percent with one decimal; several seeds give mean ± sample std.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.labels import DROPOUT_LABELS, METRIC_LABELS, model_label, method_label, order_methods, order_models, order_tasks, task_label, task_metrics
from analysis.render import number

ROW_KEYS = ["model", "method", "dropout"]
CELL_KEYS = [*ROW_KEYS, "task"]


def main_variant(runs: pd.DataFrame) -> pd.DataFrame:
    """Per model, task and method, only the runs of its most common (m, softmax) setting (larger
    m on a tie), so that an m or softmax ablation in the same experiment is not averaged into a
    Table 1 cell or a learning curve."""
    groups = ["model", "task", "method"]
    # one pass over all runs: a Python loop per group took seconds at a few hundred runs
    setting = runs[[*groups, "softmax"]].assign(m=runs["m"].astype("Float64").fillna(-1.0))
    counts = setting.groupby([*groups, "m", "softmax"]).size().reset_index(name="n")
    counts = counts.assign(rank=counts["m"].where(counts["m"] >= 0, -np.inf))  # a run without m loses a tie to any m
    chosen = counts.sort_values(["n", "rank"], ascending=False, kind="stable").drop_duplicates(groups)
    keep = setting.merge(chosen[[*groups, "m", "softmax"]], how="left", indicator=True)["_merge"].eq("both").to_numpy()
    return runs[keep]


def best_evaluations(runs: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """One row per run with at least one scored evaluation: the run's tags, ``dagger``, and the
    step and metrics (fractions) of its evaluation with the highest score.

    A dagger run's metrics are set to 0: invalid labels count as wrong (methods.md section 4),
    but a correlation metric of an all-invalid run need not be 0 by itself.
    """
    scored = history[history["score"].notna()]
    best = scored.loc[scored.groupby("run_id")["score"].idxmax()]
    all_invalid = (scored["invalid_rate"] >= 1).groupby(scored["run_id"]).all()  # NaN >= 1 is False: a missing rate is not invalid
    best = runs.merge(best, on="run_id", how="inner")
    best["dagger"] = best["run_id"].map(all_invalid).astype(bool)
    metric_columns = [c for c in best.columns if c in METRIC_LABELS or c == "score"]
    best.loc[best["dagger"], metric_columns] = 0.0
    return best.reset_index(drop=True)


def table1_values(best: pd.DataFrame) -> pd.DataFrame:
    """Tidy Table 1 in percent: one row per model, method, dropout, task and metric (the task's
    metrics, then ``score``) with mean, std (NaN for one run), n runs and dagger (any run)."""
    rows = []
    for (model, method, dropout, task), cell in best.groupby(CELL_KEYS, sort=False):
        logged = [c for c in cell.columns if cell[c].notna().any()]
        for metric in (*task_metrics(task, logged), "score"):
            values = cell[metric].dropna() * 100 if metric in cell else pd.Series(dtype=float)
            rows.append({
                "model": model, "method": method, "dropout": dropout, "task": task, "metric": metric,
                "mean": values.mean() if len(values) else np.nan,
                "std": values.std(ddof=1) if len(values) > 1 else np.nan,
                "n": len(values), "dagger": bool(cell["dagger"].any()),
            })
    return pd.DataFrame(rows, columns=[*CELL_KEYS, "metric", "mean", "std", "n", "dagger"])


def ordered_rows(values: pd.DataFrame) -> list[tuple]:
    """(model, method, dropout) in the paper's order: model, method, dropout on before off."""
    present = set(map(tuple, values[ROW_KEYS].drop_duplicates().itertuples(index=False)))
    return [
        (model, method, dropout)
        for model in order_models(values["model"])
        for method in order_methods(values["method"])
        for dropout in (True, False)
        if (model, method, dropout) in present
    ]


def row_scores(values: pd.DataFrame) -> pd.DataFrame:
    """Table 1 scores in percent: index (model, method, dropout) in paper order, one column per task."""
    scores = values[values["metric"] == "score"].pivot_table(index=ROW_KEYS, columns="task", values="mean", aggfunc="first")
    return scores.reindex(index=pd.MultiIndex.from_tuples(ordered_rows(values), names=ROW_KEYS), columns=order_tasks(values["task"]))


def table1(values: pd.DataFrame) -> pd.DataFrame:
    """Formatted Table 1: one row per model, method and dropout; a task's cell shows its metrics
    (and, for two metrics, the score in parentheses); "–" where no run reported; Avg. is the mean
    of the row's scores over the tasks its model has, "–" where the row lacks one."""
    tasks = order_tasks(values["task"])
    metrics = {t: [m for m in values.loc[values["task"] == t, "metric"].unique() if m != "score"] for t in tasks}
    headers = {t: f"{task_label(t)} {'/'.join(METRIC_LABELS.get(m, m) for m in metrics[t])}" for t in tasks}
    cells = values.set_index([*CELL_KEYS, "metric"])
    scores = row_scores(values)
    has_task = scores.notna().groupby(level="model").any()
    rows = []
    for key in scores.index:
        model, method, dropout = key
        row = {"Model": model_label(model), "Method": method_label(method), "Dropout": DROPOUT_LABELS[dropout]}
        for task in tasks:
            row[headers[task]] = _cell(cells, (*key, task), metrics[task])
        row_score = scores.loc[key, has_task.columns[has_task.loc[model]]]
        row["Avg."] = number(row_score.mean()) if row_score.notna().all() else "–"
        rows.append(row)
    return pd.DataFrame(rows, columns=["Model", "Method", "Dropout", *headers.values(), "Avg."])


def _cell(cells: pd.DataFrame, key: tuple, metrics: list[str]) -> str:
    if (*key, "score") not in cells.index:
        return "–"
    parts = [number(cells.loc[(*key, m), "mean"], cells.loc[(*key, m), "std"]) for m in metrics if (*key, m) in cells.index]
    score = cells.loc[(*key, "score")]
    text = "/".join(parts) if parts else number(score["mean"], score["std"])
    if len(parts) > 1:
        text += f" ({number(score['mean'], score['std'])})"
    return text + (" †" if score["dagger"] else "")
