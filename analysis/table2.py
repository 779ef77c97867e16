"""Table 2: standardized overall scoring (paper Table 2; methods.md section 6).

For each task, the Table 1 scores are min-max normalised over all method rows of all model
sizes together (ATTEMPT excluded: it was not run on four tasks), times 100; each row then gets
the mean and the population standard deviation of its normalised scores over the tasks.

Any set of models: "all model sizes" is every model of the report's rows, i.e. the rows that
share the experiment (and ``--model``'s selection). For the paper's pair (T5v1.1 small and base
LM-adapted in one experiment) this is exactly the paper's definition; for a decoder sweep
(sweeps/decoder.yaml) its two decoder models are normalised together in the same way. Rows
of different experiments are never mixed, so scores are comparable within one Table 2 only.
"""

from __future__ import annotations

import pandas as pd

from analysis.labels import DROPOUT_LABELS, method_label, model_label, order_methods
from analysis.render import number
from superpos.errors import ConfigError

#: methods left out of the normalisation (methods.md section 6)
EXCLUDED_METHODS = ("attempt",)


def standardized_scores(scores: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Per-row mean and population std of the min-max normalised scores.

    ``scores``: one row per (model, method, dropout), one column per task, Table 1 scores in
    any unit (min-max is scale-free). Returns a frame with ``mean``, ``std`` and ``tasks`` (how
    many tasks the row covers) on the same index, and a line per task or row that had to be
    left out or is incomplete (a partial sweep).
    """
    problems = []
    low, high = scores.min(), scores.max()
    flat = [t for t in scores.columns if not high[t] > low[t]]
    if flat:
        problems.append(f"Table 2: task(s) {', '.join(flat)} left out: their score is the same in every row (or in only one row)")
    tasks = [t for t in scores.columns if t not in flat]
    if not tasks:
        raise ConfigError("Table 2 needs at least two method rows with different scores on some task")
    normalised = (scores[tasks] - low[tasks]) / (high[tasks] - low[tasks]) * 100
    for (model, method, dropout), row in normalised.iterrows():
        lacking = list(row.index[row.isna()])
        if lacking:
            problems.append(f"Table 2: row {model} / {method} / dropout {'on' if dropout else 'off'} lacks task(s) {', '.join(lacking)}; its mean covers {row.notna().sum()} of {len(tasks)} tasks")
    out = pd.DataFrame({"mean": normalised.mean(axis=1), "std": normalised.std(axis=1, ddof=0), "tasks": normalised.notna().sum(axis=1)})
    return out, problems


def table2(scores: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Table 2 from ``analysis.table1.row_scores``: the numbers (index model, method, dropout) and
    the formatted table (one row per method and dropout, one ``mean ± std`` column per model)."""
    kept = scores[~scores.index.get_level_values("method").isin(EXCLUDED_METHODS)].dropna(axis=1, how="all")
    values, problems = standardized_scores(kept)
    models = list(dict.fromkeys(values.index.get_level_values("model")))
    rows = []
    present = {(m, d) for _, m, d in values.index}
    for method, dropout in [(m, d) for m in order_methods(p[0] for p in present) for d in (True, False) if (m, d) in present]:
        row = {"Method": method_label(method), "Dropout": DROPOUT_LABELS[dropout]}
        for model in models:
            key = (model, method, dropout)
            row[model_label(model)] = number(values.loc[key, "mean"], values.loc[key, "std"]) if key in values.index else "–"
        rows.append(row)
    return values, pd.DataFrame(rows, columns=["Method", "Dropout", *map(model_label, models)]), problems
