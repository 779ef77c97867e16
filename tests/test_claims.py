"""analysis/claims.py and analysis/bootstrap.py: paired comparisons on synthetic sweeps whose true
differences are known, and the coverage of the bootstrap intervals in 1,000 simulated sweeps."""

import numpy as np
import pandas as pd
import pytest

from analysis.bootstrap import average_interval, coverage, task_intervals
from analysis.claims import claims_table, claims_values
from analysis.convergence import convergence_per_run
from analysis.runs import RUN_COLUMNS

SMALL = "google/t5-small-lm-adapt"
TASKS = ["rte", "cb", "copa", "wic", "boolq", "mrpc"]
STEPS = [10, 20, 30, 40]
BASE = {"rte": 60.0, "cb": 70.0, "copa": 55.0, "wic": 62.0, "boolq": 68.0, "mrpc": 75.0}
#: true Table 1 score offsets (points) and the step at which a run first reaches its best
EFFECT = {("superpos", False): 8.0, ("superpos", True): 5.0, ("residual", False): 3.0, ("residual", True): 6.0,
          ("simple", False): 8.0, ("simple", True): 8.0}
REACH = {("superpos", False): 20, ("superpos", True): 40, ("residual", False): 30, ("residual", True): 30,
         ("simple", False): 30, ("simple", True): 30}
#: SuperPos (dropout off) at other m and with softmax, relative to m = 128 without softmax
M_EFFECT = {128: 0.0, 64: -0.1, 16: -8.0}
SOFTMAX_EFFECT = -10.0


def synthetic(seeds, noise=0.4, rng_seed=0):
    """(runs, history) of a sweep with the true effects above plus N(0, noise) per run."""
    rng = np.random.default_rng(rng_seed)
    runs, history = [], []

    def add(task, method, dropout, seed, m, softmax, score, reach):
        run_id = f"r{len(runs)}"
        runs.append({"run_id": run_id, "run_name": run_id, "trial_id": run_id, "sweep": "s", "task": task, "method": method,
                     "model": SMALL, "dropout": dropout, "softmax": softmax, "m": m, "seed": str(seed), "status": "finished",
                     "run_status": "FINISHED", "start_time": len(runs), "environment": "{}", "sources": ""})
        for step in STEPS:
            history.append({"run_id": run_id, "step": step, "epoch": step / 10, "invalid_rate": 0.0,
                            "score": (score if step >= reach else score * 0.5) / 100})

    for task in TASKS:
        for seed in seeds:
            for (method, dropout), effect in EFFECT.items():
                m = 128 if method == "superpos" else None
                add(task, method, dropout, seed, m, False, BASE[task] + effect + rng.normal(0, noise), REACH[method, dropout])
            # the m ablation and softmax: fewer runs than the main setting, so Table 1 keeps m = 128
            for m, effect in M_EFFECT.items():
                if m != 128:
                    add(task, "superpos", False, seed, m, False, BASE[task] + EFFECT["superpos", False] + effect + rng.normal(0, noise), 20)
            add(task, "superpos", False, seed, 128, True, BASE[task] + EFFECT["superpos", False] + SOFTMAX_EFFECT + rng.normal(0, noise), 20)
    runs = pd.DataFrame(runs, columns=list(RUN_COLUMNS))
    runs["m"] = runs["m"].astype("Int64")
    return runs, pd.DataFrame(history)


def values_of(runs, history):
    return claims_values(runs, history, convergence_per_run(runs, history))


@pytest.fixture(scope="module")
def five_seeds():
    return values_of(*synthetic(seeds=range(5)))


def row(values, comparison, task="Avg."):
    hit = values[values["comparison"].str.contains(comparison, regex=False) & (values["task"] == task)]
    assert len(hit) == 1, (comparison, task, values["comparison"].unique())
    return hit.iloc[0]


def counts(values, comparison):
    per_task = values[values["comparison"].str.startswith(comparison) & ~values["task"].isin(["Avg.", "smallest m"])]
    return per_task["verdict"].value_counts().to_dict()


@pytest.mark.parametrize("comparison, true", [
    ("SuperPos PT (dropout off) > Residual PT (dropout off)", 5.0),
    ("SuperPos PT (dropout off) > Simple PT (dropout off)", 0.0),
    ("SuperPos PT: dropout off > on", 3.0),
    ("Residual PT: dropout off > on", -3.0),
    ("SuperPos PT without softmax > with softmax (dropout off, m = 128)", -SOFTMAX_EFFECT),
    ("(best) > m = 16 (dropout off)", 8.0),
    ("SuperPos PT: dropout off reaches 90% of its best in fewer steps", -20.0),
    ("SuperPos PT reaches 90% of its best in fewer steps than Residual PT", -10.0),
])
def test_average_difference_and_interval_hold_the_true_difference(five_seeds, comparison, true):
    r = row(five_seeds, comparison)
    assert r["low"] <= true <= r["high"]
    assert abs(r["delta"] - true) < 0.5
    assert r["seeds"] == 5 * len(TASKS)


def test_task_counts_follow_the_true_differences(five_seeds):
    assert counts(five_seeds, "SuperPos PT (dropout off) > Residual PT") == {"holds": len(TASKS)}
    assert counts(five_seeds, "Residual PT: dropout off > on") == {"reversed": len(TASKS)}
    assert counts(five_seeds, "SuperPos PT: dropout off reaches") == {"holds": len(TASKS)}
    no_difference = counts(five_seeds, "SuperPos PT (dropout off) > Simple PT")
    assert no_difference.get("within", 0) >= len(TASKS) - 1  # a 95% interval misses 0 now and then
    assert row(five_seeds, "SuperPos PT (dropout off) > Residual PT")["verdict"] == "holds"
    assert row(five_seeds, "Residual PT: dropout off > on")["verdict"] == "reversed"
    assert row(five_seeds, "SuperPos PT (dropout off) > Simple PT")["verdict"] == "within"


def test_smallest_m_within_the_interval_of_the_best(five_seeds):
    """m = 64 is 0.1 below m = 128, m = 16 8 points: either of the first two may come out best, and
    the smallest m within the best's interval is 64."""
    summary = row(five_seeds, "smallest m within the interval of the best (dropout off)", "smallest m")
    assert summary["delta"] == 64 and summary["verdict"] in ("best m = 128", "best m = 64")
    assert row(five_seeds, "(best) > m = 16")["verdict"] == "holds"


def test_paper_differences_and_figures(five_seeds):
    assert row(five_seeds, "SuperPos PT (dropout off) > Residual PT")["paper_delta"] == 6.4
    assert row(five_seeds, "SuperPos PT: dropout off > on")["paper_delta"] == 6.9
    assert row(five_seeds, "SuperPos PT without softmax")["paper_delta"] == 15.3
    assert row(five_seeds, "SuperPos PT without softmax")["figure"] == "Table 3"
    assert row(five_seeds, "(best) > m = 16")["figure"] == "Figure 2c"
    assert row(five_seeds, "SuperPos PT reaches 90%")["figure"] == "Figure 2b"


def test_one_seed_is_not_enough_per_task_but_tasks_give_the_average_an_interval():
    values = values_of(*synthetic(seeds=[0]))
    assert counts(values, "SuperPos PT (dropout off) > Residual PT") == {"1 seed": len(TASKS)}
    avg = row(values, "SuperPos PT (dropout off) > Residual PT")
    assert avg["low"] <= 5.0 <= avg["high"] and avg["verdict"] == "holds"
    table = claims_table(values)
    cell = table.loc[table["Comparison"].str.startswith("SuperPos PT (dropout off) > Residual PT"), "RTE"].iloc[0]
    assert cell.endswith("(1 seed)")
    runs, history = synthetic(seeds=[0])
    runs = runs[runs["task"] == "rte"]
    one_task = values_of(runs, history[history["run_id"].isin(runs["run_id"])])
    assert row(one_task, "SuperPos PT (dropout off) > Residual PT")["verdict"] == "not enough runs"


def test_seeded_bootstrap_is_reproducible(five_seeds):
    again = values_of(*synthetic(seeds=range(5)))
    pd.testing.assert_frame_equal(five_seeds, again)


def test_formatted_table(five_seeds):
    table = claims_table(five_seeds)
    r = table[table["Comparison"].str.startswith("SuperPos PT (dropout off) > Residual PT")].iloc[0]
    assert r["Paper's figure"] == "Table 1" and r["Paper Δ"] == "+6.4"
    assert r["Tasks: holds / reversed / within / 1 seed"] == f"{len(TASKS)} / 0 / 0 / 0"
    delta, interval = r["Avg. Δ [95% CI]"].split(" ", 1)
    low, high = (float(x) for x in interval.strip("[]").split(", "))
    assert low <= float(delta) <= high and abs(float(delta) - 5.0) < 0.5
    m = table[table["Comparison"].str.startswith("smallest m")].iloc[0]
    assert m["Avg. Δ [95% CI]"].startswith("m = 64")


def test_intervals_of_known_samples():
    rng = np.random.default_rng(0)
    d = np.array([[[1.0, 1.0, 1.0], [2.0, np.nan, np.nan]]])
    mean, low, high, seeds = task_intervals(d, rng, reps=200)
    assert mean.tolist() == [[1.0, 2.0]] and seeds.tolist() == [[3, 1]]
    assert (low[0, 0], high[0, 0]) == (1.0, 1.0) and np.isnan(low[0, 1])
    avg, lo, hi = average_interval(d, rng, reps=200)
    assert avg[0] == 1.5 and 1.0 <= lo[0] <= hi[0] <= 2.0


@pytest.mark.parametrize("tasks, seeds, which", [(13, 3, 0), (13, 1, 0), (1, 10, 1)])
def test_interval_coverage_in_1000_simulated_sweeps(tasks, seeds, which):
    """95% intervals must hold the true difference in 93-97% of 1,000 simulated sweeps (a band of
    about 3 binomial standard errors): the average over tasks (two-level and tasks-only) and a
    single task's interval over 10 seeds."""
    covered = coverage(1.0, tasks, seeds, sweeps=1000, seed=7)[which]
    assert 0.93 <= covered <= 0.97, covered
