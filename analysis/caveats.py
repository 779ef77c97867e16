"""What a reader of the tables must know about the runs behind them: ATTEMPT runs that had no
source prompts, and inputs that were over the length limit.

* ATTEMPT with ``source_prompts: none`` attends over its target prompt alone: simple prompt
  tuning at ATTEMPT's hyperparameters, not the paper's ATTEMPT (section 3.4). Such runs stay in
  the tables, and are listed.
* Every evaluation record carries, per split, how many inputs were over ``max_input_len``:
  ``shortened_<split>`` (the context field shortened, everything asked about kept whole) and
  ``cut_<split>`` (cut at the end of the text; superpos/inputs.py). The inputs table shows them
  per model and task.
"""

from __future__ import annotations

import pandas as pd

from analysis.labels import model_label, order_models, order_tasks, task_label

SPLITS = ("train", "validation", "test")


def attempt_without_sources(runs: pd.DataFrame) -> list[str]:
    bad = runs[(runs["method"] == "attempt") & (runs["sources"] == "none")]
    if bad.empty:
        return []
    names = ", ".join(f"{r.run_name or r.run_id} ({r.task})" for r in bad.itertuples())
    return [
        f"{len(bad)} ATTEMPT run(s) had no source prompts (source_prompts: none), so they are simple prompt tuning at "
        f"ATTEMPT's hyperparameters, not the paper's ATTEMPT (section 3.4): {names}"
    ]


def inputs_table(runs: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame | None:
    """Per model and task: inputs over the limit per split, shortened / cut; None without the counts."""
    columns = [f"{what}_{split}" for split in SPLITS for what in ("shortened", "cut") if f"{what}_{split}" in history]
    if not columns:
        return None
    last = history.dropna(subset=columns, how="all").groupby("run_id")[columns].last()
    counts = runs[["run_id", "model", "task"]].merge(last, left_on="run_id", right_index=True)
    if counts.empty:
        return None
    # the counts depend on the data, tokenizer and limit only: the largest over a cell's runs
    counts = counts.groupby(["model", "task"])[columns].max()
    rows = []
    for model in order_models(counts.index.get_level_values("model")):
        for task in order_tasks(counts.loc[model].index):
            row = {"Model": model_label(model), "Task": task_label(task)}
            for split in SPLITS:
                if f"shortened_{split}" in counts:
                    value = counts.loc[(model, task)]
                    row[f"{split.capitalize()}: shortened / cut"] = (
                        "–" if pd.isna(value[f"shortened_{split}"]) else f"{int(value[f'shortened_{split}'])} / {int(value[f'cut_{split}'])}"
                    )
            rows.append(row)
    return pd.DataFrame(rows)
