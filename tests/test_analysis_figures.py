"""Figure 2 draws per cell, never per run: its artists do not grow with the number of seeds, and
each curve is the mean over the cell's seeds (in-memory run frames, no MLflow store)."""

import itertools

import numpy as np
import pandas as pd
import pytest

import analysis.figures as figures
from analysis.labels import task_label
from analysis.runs import RUN_COLUMNS, Experiment

MODEL = "google/t5-small-lm-adapt"
TASKS = ("rte", "cb", "copa")
METHODS = ("simple", "superpos")
STEPS = (100, 200, 300, 400)


def _score(task: int, method: int, dropout: bool, seed: int, step: int) -> float:
    return 0.4 + 0.05 * task + 0.03 * method + 0.02 * dropout + 0.01 * seed + step / 10_000


def experiment(seeds: int) -> Experiment:
    runs, history = [], []
    for (t, task), (k, method), dropout, seed in itertools.product(enumerate(TASKS), enumerate(METHODS), (True, False), range(seeds)):
        run_id = f"{task}-{method}-{dropout}-{seed}"
        runs.append({"run_id": run_id, "run_name": run_id, "trial_id": run_id, "sweep": "s", "task": task, "method": method, "model": MODEL,
                     "dropout": dropout, "softmax": False, "m": 128 if method == "superpos" else None, "seed": str(seed),
                     "status": "finished", "run_status": "FINISHED", "start_time": 0, "environment": "{}", "sources": ""})
        history += [{"run_id": run_id, "step": step, "score": _score(t, k, dropout, seed, step), "epoch": step / 100, "invalid_rate": 0.0}
                    for step in STEPS]
    frame = pd.DataFrame(runs, columns=list(RUN_COLUMNS)).astype({"m": "Int64"})
    return Experiment("sqlite:///unused.db", "figures", "1", frame, pd.DataFrame(history))


@pytest.fixture
def drawn(monkeypatch, tmp_path):
    """panel -> the matplotlib Figure it drew (saving is left out: only what is drawn counts)."""
    saved = {}

    def keep(fig, out_dir, name, title, notes):
        saved[name[:5]] = fig

    monkeypatch.setattr(figures, "_save", keep)

    def draw(seeds: int) -> dict:
        saved.clear()
        exp = experiment(seeds)
        figures.figure_2a(exp, MODEL, tmp_path)
        figures.figure_2b(exp, MODEL, tmp_path)
        return dict(saved)

    return draw


def _artists(fig) -> int:
    return sum(len(ax.lines) + len(ax.collections) + len(ax.patches) for ax in fig.axes)


def test_learning_curves_draw_per_cell_not_per_run(drawn):
    two, six = drawn(2), drawn(6)
    assert set(two) == set(six) == {"fig2a", "fig2b"}
    for panel in two:
        assert _artists(two[panel]) == _artists(six[panel]) > 0
    # (a): per task, dropout on and off, score vs step and vs epoch; (b): per task, both methods (dropout off)
    assert _artists(six["fig2a"]) == len(TASKS) * 2 * 2
    assert _artists(six["fig2b"]) == len(TASKS) * len(METHODS) * 2


def test_a_curve_is_the_mean_over_seeds(drawn):
    seeds = 6
    fig = drawn(seeds)["fig2a"]
    step_axis = next(ax for ax in fig.axes if ax.get_title() == task_label("rte"))  # the top row: score vs step
    line = next(l for l in step_axis.lines if l.get_label() == "dropout off")
    expected = [100 * np.mean([_score(0, 1, False, s, step) for s in range(seeds)]) for step in STEPS]
    assert list(line.get_xdata()) == list(STEPS)
    assert np.allclose(line.get_ydata(), expected)


def test_main_variant_keeps_the_most_common_setting_per_cell():
    """The vectorised pass keeps the loop's rule: most runs wins; a tie goes to the larger m, a run
    without m loses a tie to one with m, and softmax off wins a tie with the same m."""
    from analysis.table1 import main_variant

    settings = {  # (task, method) -> (m, softmax) of each run
        ("rte", "superpos"): [(128, False), (128, False), (64, False), (64, False), (64, False)],
        ("cb", "superpos"): [(64, False), (128, False), (32, True)],
        ("copa", "superpos"): [(128, True), (128, False)],
        ("rte", "simple"): [(None, False), (None, False), (16, False)],
        ("cb", "simple"): [(None, False), (16, False)],
    }
    rows = [{"run_id": f"{task}-{method}-{i}", "model": MODEL, "task": task, "method": method, "m": m, "softmax": softmax}
            for (task, method), runs in settings.items() for i, (m, softmax) in enumerate(runs)]
    runs = pd.DataFrame(rows).astype({"m": "Int64"})
    kept = main_variant(runs.sample(frac=1, random_state=0))
    chosen = {key: set(map(tuple, group[["m", "softmax"]].astype(object).itertuples(index=False)))
              for key, group in kept.groupby(["task", "method"])}
    assert chosen == {("rte", "superpos"): {(64, False)}, ("cb", "superpos"): {(128, False)}, ("copa", "superpos"): {(128, False)},
                      ("rte", "simple"): {(pd.NA, False)}, ("cb", "simple"): {(16, False)}}
    assert len(kept) == 3 + 1 + 1 + 2 + 1


# -- Figure 2d reads a prompt per task when the best runs decide it --------------------------
def _best(spec):
    """``best`` rows (run_id, task, score, m) from {run_id: (task, score, m, token set)}."""
    return pd.DataFrame([{"run_id": r, "task": t, "score": s, "m": m} for r, (t, s, m, _) in spec.items()]).astype({"m": "Int64"})


def _read_prompts(monkeypatch, spec, unreadable=()):
    reads = []

    def load_prompt(uri, run_id):
        reads.append(run_id)
        if run_id in unreadable:
            raise OSError("no such artifact")
        _, _, m, tokens = spec[run_id]
        return {"p_prime": np.ones((2, m)), "token_ids": np.arange(tokens, tokens + m)}

    monkeypatch.setattr(figures, "load_prompt", load_prompt)
    notes = []
    prompts = figures._prompts(Experiment("uri", "e", "0", pd.DataFrame(), pd.DataFrame(), []), _best(spec), notes)
    return prompts, reads, notes


def test_figure_2d_reads_one_prompt_per_task_when_the_best_runs_share_their_tokens(monkeypatch):
    spec = {"r1": ("rte", 0.8, 8, 0), "r2": ("rte", 0.7, 8, 0), "r3": ("rte", 0.9, 8, 0), "r4": ("rte", 0.6, 8, 100),
            "c1": ("cb", 0.9, 8, 0), "c2": ("cb", 0.5, 8, 100)}
    prompts, reads, notes = _read_prompts(monkeypatch, spec, unreadable={"r3"})
    # rte's best run is unreadable: the next best is read; then both tasks' runs share m and tokens
    assert reads == ["c1", "r3", "r1"] and sorted(prompts["run_id"]) == ["c1", "r1"]
    assert notes == ["Figure 2d: run r3 (rte) left out: cannot read its prompt.safetensors (no such artifact)"]


@pytest.mark.parametrize("case", ["other tokens", "larger m elsewhere"])
def test_figure_2d_reads_every_prompt_when_the_best_runs_do_not_decide(monkeypatch, case):
    spec = {"r1": ("rte", 0.8, 8, 0), "r2": ("rte", 0.7, 8, 0), "c1": ("cb", 0.9, 8, 0), "c2": ("cb", 0.5, 8, 0)}
    if case == "other tokens":
        spec["c1"] = ("cb", 0.9, 8, 100)
    else:  # a group with a larger m could also cover every task, and would win
        spec |= {"r9": ("rte", 0.1, 16, 0), "c9": ("cb", 0.1, 16, 0)}
    prompts, reads, _ = _read_prompts(monkeypatch, spec)
    assert sorted(reads) == sorted(spec) and sorted(prompts["run_id"]) == sorted(spec)
