"""The paper's claims as paired comparisons with 95% bootstrap intervals (``claims.{csv,md,tex}``).

One row per comparison the paper makes, per model of the experiment:

* SuperPos PT vs each other method (Table 1; SuperPos and the other method each at dropout
  off where it has runs, else on: the paper's headline rows, e.g. +6.4 over Residual PT on
  T5v1.1 Small, section 4);
* dropout off vs on, per method (Table 1; Figure 2a for SuperPos; section 4 "Impact of Dropout");
* SuperPos without vs with softmax on p' (Table 3, appendix A.2), at one m;
* m: the best m vs every other m (Figure 2c, section 3.3), and the smallest m whose interval
  reaches the best (the paper: gains level off after m = 128);
* convergence: optimizer steps until a run first reaches 90% of its best score
  (analysis/convergence.py), dropout off vs on per method (Figure 2a) and SuperPos vs
  Residual PT at dropout off (Figure 2b).

Each difference is row A minus row B in the Table 1 score (percent points) or in steps,
paired by task and seed (the same seed gives both rows the same data order). Per task: the
mean over seeds with a 95% interval from a paired bootstrap over seeds; averaged over tasks:
a two-level bootstrap over tasks and seeds (analysis/bootstrap.py, which also states the
intervals' simulated coverage). A task holds the claim when its interval lies wholly on the
claimed side of 0, is reversed when wholly on the other side, and is within the interval
otherwise; a task with a single paired seed has no interval ("1 seed"). The bootstrap is
seeded per row (``SEED`` and the row's model and comparison), so a report is reproducible
and adding a row changes no other row. "Paper Δ" is the same difference of the paper's own
Table 1 / Table 3 averages (over its 13 tasks), for the paper's two models.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.bootstrap import average_interval, task_intervals
from analysis.labels import method_label, model_label, order_methods, order_models, order_tasks, task_label
from analysis.table1 import best_evaluations, main_variant

SEED = 2024
SMALL, BASE = "google/t5-small-lm-adapt", "google/t5-base-lm-adapt"
#: the paper's Table 1 Avg. column: (method, dropout) -> average score
PAPER_AVG = {
    SMALL: {("simple", True): 37.1, ("simple", False): 41.5, ("residual", True): 54.9, ("residual", False): 63.8,
            ("superpos", True): 63.3, ("superpos", False): 70.2, ("full", True): 71.7},
    BASE: {("simple", True): 35.3, ("simple", False): 36.1, ("residual", True): 56.0, ("residual", False): 70.8,
           ("superpos", True): 68.0, ("superpos", False): 75.8, ("full", True): 76.7},
}
#: Table 3: SuperPos PT without dropout on T5v1.1 Small, softmax off minus on (70.2 - 54.9)
PAPER_SOFTMAX = {SMALL: 15.3}
CONVERGENCE = "steps_to_90"
VERDICTS = ("holds", "reversed", "within", "1 seed")


@dataclass
class Comparison:
    """Row A vs row B of one model: ``a`` and ``b`` hold one value per run (columns task, seed, value)."""

    model: str
    claim: str
    figure: str
    a: pd.DataFrame
    b: pd.DataFrame
    unit: str = "points"
    #: +1: the paper claims A - B > 0; -1: A - B < 0 (fewer steps)
    better: int = 1
    paper: float | None = None


def _on_off(dropout: bool) -> str:
    return "off" if not dropout else "on"


def _values(rows: pd.DataFrame, column: str, scale: float) -> pd.DataFrame:
    out = rows[["task", "seed"]].assign(value=rows[column].astype(float) * scale)
    return out.dropna(subset=["value"])


def paired_differences(a: pd.DataFrame, b: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """Tasks (paper order) and their A - B differences over common seeds, as (1, tasks, seeds)
    padded with NaN; repeated runs of a (task, seed) are averaged first."""
    mean_a = a.groupby(["task", "seed"])["value"].mean()
    mean_b = b.groupby(["task", "seed"])["value"].mean()
    diff = (mean_a - mean_b).dropna()
    tasks = order_tasks(diff.index.get_level_values("task")) if len(diff) else []
    per_task = [diff.loc[t].to_numpy() for t in tasks]
    width = max((len(v) for v in per_task), default=1)
    d = np.full((1, max(len(tasks), 1), width), np.nan)
    for i, v in enumerate(per_task):
        d[0, i, : len(v)] = v
    return tasks, d


def _verdict(low: float, high: float, better: int) -> str:
    if np.isnan(low):
        return "1 seed"
    if better * low > 0 and better * high > 0:
        return "holds"
    if better * low < 0 and better * high < 0:
        return "reversed"
    return "within"


def evaluate(comp: Comparison) -> list[dict]:
    """Tidy rows of one comparison: one per task and one "Avg." row."""
    tasks, d = paired_differences(comp.a, comp.b)
    if not tasks:
        return []
    rng = np.random.default_rng([SEED, zlib.crc32(f"{comp.model}|{comp.claim}".encode())])
    mean, low, high, seeds = task_intervals(d, rng)
    avg, avg_low, avg_high = average_interval(d, rng)
    common = {"model": comp.model, "comparison": comp.claim, "figure": comp.figure, "paper_delta": comp.paper, "unit": comp.unit, "better": comp.better}
    rows = [{**common, "task": t, "seeds": int(seeds[0, i]), "delta": mean[0, i], "low": low[0, i], "high": high[0, i],
             "verdict": _verdict(low[0, i], high[0, i], comp.better)} for i, t in enumerate(tasks)]
    verdict = "not enough runs" if np.isnan(avg_low[0]) else _verdict(avg_low[0], avg_high[0], comp.better)
    rows.append({**common, "task": "Avg.", "seeds": int(seeds.sum()), "delta": avg[0], "low": avg_low[0], "high": avg_high[0], "verdict": verdict})
    return rows


# -- the comparisons ----------------------------------------------------------------------
def _row(best: pd.DataFrame, method: str, dropout: bool) -> pd.DataFrame:
    return best[(best["method"] == method) & (best["dropout"] == dropout)]


def _headline_dropout(best: pd.DataFrame, method: str) -> bool | None:
    """Dropout off where the method has runs without dropout, else on; None without runs."""
    have = set(best.loc[best["method"] == method, "dropout"])
    return False if False in have else (True if True in have else None)


def _paper(model: str, a: tuple, b: tuple) -> float | None:
    table = PAPER_AVG.get(model, {})
    return round(table[a] - table[b], 1) if a in table and b in table else None


def method_comparisons(model: str, best: pd.DataFrame) -> list[Comparison]:
    sp = _headline_dropout(best, "superpos")
    if sp is None:
        return []
    out = []
    for method in order_methods(best["method"]):
        other = _headline_dropout(best, method)
        if method == "superpos" or other is None:
            continue
        claim = f"SuperPos PT (dropout {_on_off(sp)}) > {method_label(method)} (dropout {_on_off(other)})"
        out.append(Comparison(model, claim, "Table 1", _values(_row(best, "superpos", sp), "score", 100),
                              _values(_row(best, method, other), "score", 100), paper=_paper(model, ("superpos", sp), (method, other))))
    return out


def dropout_comparisons(model: str, best: pd.DataFrame, column: str = "score") -> list[Comparison]:
    """Dropout off vs on per method with both, in Table 1 score or (``column`` = steps_to_90) steps."""
    out = []
    for method in order_methods(best["method"]):
        off, on = _row(best, method, False), _row(best, method, True)
        if off.empty or on.empty:
            continue
        if column == "score":
            out.append(Comparison(model, f"{method_label(method)}: dropout off > on", "Table 1; Figure 2a" if method == "superpos" else "Table 1",
                                  _values(off, column, 100), _values(on, column, 100), paper=_paper(model, (method, False), (method, True))))
        else:
            out.append(Comparison(model, f"{method_label(method)}: dropout off reaches 90% of its best in fewer steps",
                                  "Figure 2a" if method == "superpos" else "section 4 (text)",
                                  _values(off, column, 1), _values(on, column, 1), unit="steps", better=-1))
    return out


def convergence_comparisons(model: str, per_run: pd.DataFrame) -> list[Comparison]:
    out = dropout_comparisons(model, per_run, CONVERGENCE)
    sp, res = _row(per_run, "superpos", False), _row(per_run, "residual", False)
    if not sp.empty and not res.empty:
        out.append(Comparison(model, "SuperPos PT reaches 90% of its best in fewer steps than Residual PT (dropout off)", "Figure 2b",
                              _values(sp, CONVERGENCE, 1), _values(res, CONVERGENCE, 1), unit="steps", better=-1))
    return out


def _common_m(rows: pd.DataFrame):
    counts = rows["m"].value_counts()
    return counts.index[0] if len(counts) else None


def softmax_comparisons(model: str, best: pd.DataFrame) -> list[Comparison]:
    out = []
    for dropout in (False, True):
        rows = _row(best, "superpos", dropout)
        if rows["softmax"].nunique() < 2:
            continue
        m = _common_m(rows[rows["softmax"]])
        rows = rows[rows["m"] == m]
        plain, soft = rows[~rows["softmax"]], rows[rows["softmax"]]
        if plain.empty or soft.empty:
            continue
        out.append(Comparison(model, f"SuperPos PT without softmax > with softmax (dropout {_on_off(dropout)}, m = {m})", "Table 3",
                              _values(plain, "score", 100), _values(soft, "score", 100),
                              paper=PAPER_SOFTMAX.get(model) if not dropout else None))
    return out


def m_comparisons(model: str, best: pd.DataFrame) -> tuple[list[Comparison], list[tuple[str, int]]]:
    """The best m vs each other m, per dropout setting with several m (softmax off); and the
    (dropout, best m) of each, for the summary row."""
    out, bests = [], []
    for dropout in (False, True):
        rows = _row(best, "superpos", dropout)
        rows = rows[~rows["softmax"] & rows["m"].notna()]
        if rows["m"].nunique() < 2:
            continue
        per_m = rows.assign(value=rows["score"] * 100).groupby(["m", "task"])["value"].mean().groupby(level="m").mean()
        best_m = int(per_m.idxmax())
        bests.append((_on_off(dropout), best_m))
        for m in sorted(int(v) for v in per_m.index if v != best_m):
            out.append(Comparison(model, f"m = {best_m} (best) > m = {m} (dropout {_on_off(dropout)})", "Figure 2c",
                                  _values(rows[rows["m"] == best_m], "score", 100), _values(rows[rows["m"] == m], "score", 100)))
    return out, bests


# -- the table ------------------------------------------------------------------------------
def claims_values(runs: pd.DataFrame, history: pd.DataFrame, per_run: pd.DataFrame) -> pd.DataFrame:
    """Tidy rows of every comparison of every model (columns of ``evaluate``), plus one
    ``task = "smallest m"`` row per m ablation: the smallest m whose interval reaches the best."""
    best = best_evaluations(runs, history)
    main = best[best["run_id"].isin(main_variant(runs)["run_id"])]
    conv = per_run[per_run["run_id"].isin(main["run_id"])] if not per_run.empty else per_run
    rows = []
    for model in order_models(best["model"]):
        of_model = lambda frame: frame[frame["model"] == model]  # noqa: E731
        m_rows, bests = m_comparisons(model, of_model(best))
        comparisons = [*method_comparisons(model, of_model(main)), *dropout_comparisons(model, of_model(main)),
                       *softmax_comparisons(model, of_model(best)), *m_rows]
        if not conv.empty:
            comparisons += convergence_comparisons(model, of_model(conv))
        for comp in comparisons:
            rows += evaluate(comp)
        rows += _smallest_m(model, rows, bests)
    columns = ["model", "comparison", "figure", "paper_delta", "unit", "better", "task", "seeds", "delta", "low", "high", "verdict"]
    return pd.DataFrame(rows, columns=columns)


def _smallest_m(model: str, rows: list[dict], bests: list[tuple[str, int]]) -> list[dict]:
    out = []
    for dropout, best_m in bests:
        reaching = [best_m]
        for r in rows:
            if r["model"] == model and r["task"] == "Avg." and r["figure"] == "Figure 2c" and r["comparison"].endswith(f"(dropout {dropout})"):
                m = int(r["comparison"].split("> m = ")[1].split(" ")[0])
                if not r["low"] > 0:  # the interval of best minus m reaches 0
                    reaching.append(m)
        out.append({"model": model, "comparison": f"smallest m within the interval of the best (dropout {dropout})", "figure": "Figure 2c",
                    "paper_delta": None, "unit": "m", "better": 1, "task": "smallest m", "seeds": None, "delta": float(min(reaching)),
                    "low": np.nan, "high": np.nan, "verdict": f"best m = {best_m}"})
    return out


def _number(value: float, unit: str) -> str:
    return f"{value:+.0f}" if unit == "steps" else f"{value:+.1f}"


def _cell(row, average: bool = False) -> str:
    if row["unit"] == "m":
        return f"m = {row['delta']:.0f} ({row['verdict']}; paper: levels off after 128)"
    text = _number(row["delta"], row["unit"])
    if np.isnan(row["low"]):
        return f"{text} (not enough runs)" if average else f"{text} (1 seed)"
    return f"{text} [{_number(row['low'], row['unit'])}, {_number(row['high'], row['unit'])}]"


def claims_table(values: pd.DataFrame) -> pd.DataFrame:
    """Formatted: one row per model and comparison; Avg. with its interval and verdict, the
    count of tasks per verdict, then one column per task (Δ [95% CI])."""
    tasks = order_tasks(values.loc[~values["task"].isin(["Avg.", "smallest m"]), "task"])
    rows = []
    for (model, comparison), group in values.groupby(["model", "comparison"], sort=False):
        first = group.iloc[0]
        by_task = group.set_index("task")
        per_task = group[~group["task"].isin(["Avg.", "smallest m"])]
        counts = per_task["verdict"].value_counts()
        row = {"Model": model_label(model), "Comparison": comparison, "Paper's figure": first["figure"],
               "Paper Δ": "–" if pd.isna(first["paper_delta"]) else f"{first['paper_delta']:+.1f}",
               "Unit": first["unit"]}
        summary = by_task.loc["smallest m"] if "smallest m" in by_task.index else by_task.loc["Avg."]
        row["Avg. Δ [95% CI]"] = _cell(summary, average=True)
        row["Avg. verdict"] = "–" if first["unit"] == "m" else summary["verdict"]
        row["Tasks: holds / reversed / within / 1 seed"] = "–" if first["unit"] == "m" else " / ".join(str(counts.get(v, 0)) for v in VERDICTS)
        for task in tasks:
            row[task_label(task)] = _cell(by_task.loc[task]) if task in by_task.index else "–"
        rows.append(row)
    return pd.DataFrame(rows)
