"""Figure 2 of the paper, panels (a)-(d), per model, as PNG and PDF.

(a) SuperPos learning curves, dropout on vs off; (b) learning curves of the methods, dropout
off; (c) ablation of m: peak score vs m (log2 axis), one line per task; (d) cosine similarity
of the learned superposition weights p'_i across tasks, one heatmap per prompt token.

Figures are drawn on ``matplotlib.figure.Figure`` objects (no pyplot, no display, no global
backend switch) and saved without tight bounding boxes, so every PNG is exactly its stated
size: ``figsize * DPI``. Each panel raises ConfigError when the experiment has nothing to draw
it from, naming what is missing; ``notes`` list what was left out of a drawn panel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from analysis.labels import method_label, model_label, order_methods, order_tasks, slug, task_label
from analysis.runs import Experiment, load_prompt
from analysis.table1 import best_evaluations, main_variant
from superpos.errors import ConfigError

DPI = 100


@dataclass
class FigureFile:
    name: str
    title: str
    png: Path
    pdf: Path
    width_px: int
    height_px: int
    notes: list[str] = field(default_factory=list)


def _save(fig, out_dir: Path, name: str, title: str, notes: list[str]) -> FigureFile:
    from matplotlib import rc_context

    png, pdf = out_dir / f"{name}.png", out_dir / f"{name}.pdf"
    fig.savefig(png, dpi=DPI)
    # the PNG's draw solved the constrained layout: the PDF keeps it instead of a layout pass of its own
    with rc_context({"figure.autolayout": False, "figure.constrained_layout.use": False}):
        fig.set_layout_engine(None)
    fig.savefig(pdf)
    width, height = (round(x * DPI) for x in fig.get_size_inches())
    return FigureFile(name, title, png, pdf, width, height, notes)


def _figure(width_in: float, height_in: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")


def _model_runs(exp: Experiment, model: str, panel: str, method: str | None = None) -> pd.DataFrame:
    runs = exp.runs[exp.runs["model"] == model]
    if method is not None:
        runs = runs[runs["method"] == method]
    if runs.empty:
        what = f"{method} runs" if method else "runs"
        raise ConfigError(f"Figure {panel}: no {what} of model {model!r} in experiment {exp.name!r}")
    return runs


def _select_tasks(present, tasks, panel: str, notes: list[str]) -> list[str]:
    present = order_tasks(present)
    if tasks is None:
        return present
    missing = [t for t in tasks if t not in present]
    if missing:
        notes.append(f"Figure {panel}: no runs for task(s) {', '.join(missing)}")
    chosen = [t for t in tasks if t in present]
    if not chosen:
        raise ConfigError(f"Figure {panel}: none of the selected tasks ({', '.join(tasks)}) has runs; tasks with runs: {', '.join(present)}")
    return chosen


def mean_curves(runs: pd.DataFrame, history: pd.DataFrame, hue: str) -> pd.DataFrame:
    """Validation score (percent) and epoch per task, ``hue`` value and step, mean over seeds."""
    curves = history[history["score"].notna()].merge(runs[["run_id", "task", hue]], on="run_id")
    curves = curves.groupby(["task", hue, "step"], as_index=False)[["score", "epoch"]].mean()
    curves["score"] *= 100
    return curves


def _curve_figure(curves: pd.DataFrame, hue: str, hue_order: list, hue_label: Callable, tasks: list[str], title: str):
    """Two rows of learning curves (score vs step, score vs epoch), one column per task."""
    fig = _figure(max(4.8, 3.0 * len(tasks)), 5.6)
    axes = fig.subplots(2, len(tasks), squeeze=False)
    for j, task in enumerate(tasks):
        for value in hue_order:
            curve = curves[(curves["task"] == task) & (curves[hue] == value)]
            if curve.empty:
                continue
            axes[0, j].plot(curve["step"], curve["score"], label=hue_label(value), color=f"C{hue_order.index(value)}")
            axes[1, j].plot(curve["epoch"], curve["score"], label=hue_label(value), color=f"C{hue_order.index(value)}")
        axes[0, j].set_title(task_label(task))
        axes[0, j].set_xlabel("step")
        axes[1, j].set_xlabel("epoch")
    for row in axes[:, 0]:
        row.set_ylabel("validation score (%)")
    handles = {label: h for ax in axes.flat for h, label in zip(*ax.get_legend_handles_labels())}
    fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncols=max(1, len(handles)))
    fig.suptitle(f"{title}\nmean of seeds")
    return fig


def figure_2a(exp: Experiment, model: str, out_dir: Path, tasks=None) -> FigureFile:
    """Figure 2(a): SuperPos learning curves with dropout on vs off, per selected task."""
    notes: list[str] = []
    runs = main_variant(_model_runs(exp, model, "2a", "superpos"))
    chosen = _select_tasks(runs["task"], tasks, "2a", notes)
    for task in chosen:
        lacking = [("on" if d else "off") for d in (True, False) if not ((runs["task"] == task) & (runs["dropout"] == d)).any()]
        if lacking:
            notes.append(f"Figure 2a: task {task} has no superpos runs with dropout {' or '.join(lacking)} (model {model})")
    curves = mean_curves(runs, exp.history, "dropout")
    title = f"(a) SuperPos PT, dropout on vs off — {model_label(model)}"
    fig = _curve_figure(curves, "dropout", [True, False], lambda d: f"dropout {'on' if d else 'off'}", chosen, title)
    return _save(fig, out_dir, f"fig2a_{slug(model)}", title, notes)


def figure_2b(exp: Experiment, model: str, out_dir: Path, tasks=None) -> FigureFile:
    """Figure 2(b): learning curves of the methods compared, dropout off, per selected task."""
    notes: list[str] = []
    runs = _model_runs(exp, model, "2b")
    runs = runs[~runs["dropout"]]
    if runs.empty:
        raise ConfigError(f"Figure 2b: no runs with dropout off (tag dropout = 'false') of model {model!r} in experiment {exp.name!r}")
    runs = main_variant(runs)
    chosen = _select_tasks(runs["task"], tasks, "2b", notes)
    methods = order_methods(runs["method"])
    curves = mean_curves(runs, exp.history, "method")
    title = f"(b) methods compared, dropout off — {model_label(model)}"
    fig = _curve_figure(curves, "method", methods, method_label, chosen, title)
    return _save(fig, out_dir, f"fig2b_{slug(model)}", title, notes)


def _paper_setting(runs: pd.DataFrame) -> pd.DataFrame:
    """Per task, the runs with dropout off and without softmax on p' (the paper's setting) where
    there are any, else the closest there are, so that those ablations are not averaged in."""
    for column in ("dropout", "softmax"):
        has_off = runs.groupby("task")[column].transform(lambda values: (~values).any())
        runs = runs[~runs[column] | ~has_off]
    return runs


def figure_2c(exp: Experiment, model: str, out_dir: Path, tasks=None) -> FigureFile:
    """Figure 2(c): ablation of m — peak validation score vs m (log2 axis), one line per task."""
    notes: list[str] = []
    runs = _model_runs(exp, model, "2c", "superpos")
    runs = _paper_setting(runs[runs["m"].notna()])
    best = best_evaluations(runs, exp.history)
    if best.empty:
        raise ConfigError(f"Figure 2c: no superpos run of model {model!r} with tag m and an evaluation")
    chosen = _select_tasks(best["task"], tasks, "2c", notes)
    peaks = best.groupby(["task", "m"], as_index=False)["score"].mean()
    fig = _figure(6.4, 4.4)
    ax = fig.subplots()
    for task in chosen:
        line = peaks[peaks["task"] == task].sort_values("m")
        ax.plot(line["m"].astype(float), line["score"] * 100, marker="o", label=task_label(task))
    ms = sorted(int(m) for m in peaks["m"].unique())
    ax.set_xscale("log", base=2)
    ax.set_xticks(ms, [str(m) for m in ms])
    ax.set_xlabel("sampled tokens m")
    ax.set_ylabel("peak validation score (%)")
    ax.legend(fontsize="small")
    title = f"(c) ablation of m — {model_label(model)}"
    ax.set_title(title)
    return _save(fig, out_dir, f"fig2c_{slug(model)}", title, notes)


def _prompt_row(exp: Experiment, run, notes: list[str]) -> dict | None:
    """The run's p_prime and token_ids from its prompt artifact; None (and a note) if unreadable."""
    from mlflow.exceptions import MlflowException
    from safetensors import SafetensorError

    try:
        tensors = load_prompt(exp.tracking_uri, run.run_id)
    except (MlflowException, OSError, SafetensorError, TypeError, ValueError) as e:
        notes.append(f"Figure 2d: run {run.run_id} ({run.task}) left out: cannot read its prompt.safetensors ({e})")
        return None
    lacking = [k for k in ("p_prime", "token_ids") if k not in tensors]
    if lacking:
        notes.append(f"Figure 2d: run {run.run_id} ({run.task}) left out: prompt.safetensors lacks {', '.join(lacking)}")
        return None
    token_ids = np.asarray(tensors["token_ids"]).astype(np.int64)
    return {"run_id": run.run_id, "task": run.task, "score": run.score, "p_prime": np.asarray(tensors["p_prime"], dtype=np.float64),
            "m": len(token_ids), "tokens": token_ids.tobytes()}


def _prompts(exp: Experiment, best: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """The superpos runs whose prompt artifact holds p_prime and token_ids, with those arrays.

    Each prompt is a download, so a big sweep's runs are not all read when fewer decide the
    figure: per task the runs are read best score first, up to the first readable one; when
    those share one (m, token_ids) and their m is the largest of all runs, that group covers
    every task and wins figure_2d's choice (most tasks, then the largest m), and each task's
    run read is its best in the group: the figure is the one all prompts would give. Otherwise
    every prompt is read."""
    ordered = best.sort_values(["task", "score"], ascending=[True, False], kind="stable")
    rows, read = [], set()
    for _, runs in ordered.groupby("task", sort=False):
        for run in runs.itertuples(index=False):
            read.add(run.run_id)
            row = _prompt_row(exp, run, notes)
            if row is not None:
                rows.append(row)
                break
    keys, largest = {(r["m"], r["tokens"]) for r in rows}, best["m"].max()
    if len(keys) == 1 and not pd.isna(largest) and rows[0]["m"] == int(largest):
        return pd.DataFrame(rows)
    rest = [row for run in best.itertuples(index=False) if run.run_id not in read and (row := _prompt_row(exp, run, notes)) is not None]
    return pd.DataFrame(rows + rest)


def cosine_matrices(p_primes: list[np.ndarray]) -> np.ndarray:
    """(n, T, T): for each prompt token i, the cosine similarity of p'_i between the T tasks."""
    stacked = np.stack(p_primes, axis=1)  # (n, T, m)
    norms = np.linalg.norm(stacked, axis=-1, keepdims=True)
    unit = np.divide(stacked, norms, out=np.full_like(stacked, np.nan), where=norms > 0)
    return np.einsum("itm,ium->itu", unit, unit)


def figure_2d(exp: Experiment, model: str, out_dir: Path, tasks=None) -> FigureFile:
    """Figure 2(d): cosine similarity of the learned p'_i across tasks, one heatmap per prompt token.

    p' of different runs are comparable only over the same m sampled tokens, so one run per task
    (its best-scoring one) is taken from the (m, token_ids) group that covers the most tasks;
    tasks without a run in that group are named in the notes.
    """
    notes: list[str] = []
    runs = _paper_setting(_model_runs(exp, model, "2d", "superpos"))
    best = best_evaluations(runs, exp.history)
    if best.empty:
        raise ConfigError(f"Figure 2d: no superpos run of model {model!r} has an evaluation yet")
    best = best[best["task"].isin(_select_tasks(best["task"], tasks, "2d", notes))]
    prompts = _prompts(exp, best, notes)
    if prompts.empty:
        raise ConfigError(f"Figure 2d: no superpos run of model {model!r} has a prompt.safetensors with p_prime and token_ids"
                          + "".join(f"\n  {n}" for n in notes))
    coverage = prompts.groupby(["m", "tokens"])["task"].nunique().reset_index().sort_values(["task", "m"], ascending=False)
    m, tokens = coverage.iloc[0][["m", "tokens"]]
    group = prompts[(prompts["m"] == m) & (prompts["tokens"] == tokens)]
    left_out = sorted(set(prompts["task"]) - set(group["task"]))
    if left_out:
        notes.append(f"Figure 2d: task(s) {', '.join(left_out)} left out: no run with the same m = {m} and sampled token_ids as the other tasks")
    group = group.sort_values("score", ascending=False).drop_duplicates("task")
    chosen = order_tasks(group["task"])
    if len(chosen) < 2:
        raise ConfigError(f"Figure 2d needs superpos runs of at least two tasks with the same m and token_ids; found only {', '.join(chosen)}"
                          + "".join(f"\n  {n}" for n in notes))
    p_primes = [group.loc[group["task"] == t, "p_prime"].iloc[0] for t in chosen]
    sims = cosine_matrices(p_primes)
    n = sims.shape[0]
    ncols = min(5, n)
    nrows = math.ceil(n / ncols)
    cell = 1.6 + 0.3 * len(chosen)
    fig = _figure(ncols * cell + 1.0, nrows * cell + 0.8)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    labels = [task_label(t) for t in chosen]
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.set_axis_off()
            continue
        image = ax.imshow(sims[i], vmin=-1, vmax=1, cmap="coolwarm")
        ax.set_title(f"prompt token {i + 1}", fontsize="small")
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize="x-small")
        ax.set_yticks(range(len(labels)), labels, fontsize="x-small")
    fig.colorbar(image, ax=axes, shrink=0.6, label="cosine similarity of p'_i")
    title = f"(d) cosine similarity of p' across tasks (m = {m}) — {model_label(model)}"
    fig.suptitle(title)
    return _save(fig, out_dir, f"fig2d_{slug(model)}", title, notes)


#: panel -> builder, in the paper's order
PANELS = {"2a": figure_2a, "2b": figure_2b, "2c": figure_2c, "2d": figure_2d}
