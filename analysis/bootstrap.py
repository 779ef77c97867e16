"""Paired bootstrap confidence intervals for differences between two rows of Table 1.

Input: paired differences ``d[t, s]`` (row A minus row B, the same task t and seed s: both
rows ran the same data order and prompt initialisation seed), as an array of shape
(sweeps, tasks, seeds) padded with NaN where a task has fewer seeds (valid seeds first,
valid tasks first). ``sweeps`` is 1 for a report and many in the coverage simulation
(tests/test_claims.py), which is why everything here is vectorised over that axis.

* Per task: the mean over seeds; interval = percentile bootstrap over the seeds, widened for
  small samples as Hesterberg's "expanded percentile" interval (Hesterberg 2015, "What
  teachers should know about the bootstrap", section 5.1): the percentiles are taken at
  alpha' / 2 with alpha' = 2 Phi(-sqrt(n / (n - 1)) t_{1 - alpha / 2, n - 1}), which undoes the
  percentile interval's narrowness (a bootstrap mean's spread is sqrt((n - 1) / n) of the
  sample mean's). A task with one seed has no interval.
* Average over tasks: the mean of the task means; interval = a two-level bootstrap: resample
  the tasks, then the seeds of each drawn task. Where every task has one seed only tasks are
  resampled, with the same small-sample widening (n = number of tasks). The two-level
  version is not widened: resampling seeds inside resampled tasks already counts the seed
  noise twice, which makes it wide rather than narrow.

Coverage (1,000 simulated sweeps each, ``coverage`` below; tests/test_claims.py checks the
first three within 0.93-0.97): average over 13 tasks x 3 seeds about 95%; 13 tasks x 1 seed
about 94%; one task with 10 seeds about 94%; one task with 5 seeds about 92%; one task with
3 seeds about 75% (three numbers cannot bound a mean at 95% without assuming a
distribution): per-task intervals from 3 seeds are indicative only (docs/analysis.md).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

LEVEL = 0.95
REPLICATES = 10_000


def expanded_tail(n: np.ndarray, level: float = LEVEL) -> np.ndarray:
    """alpha' / 2 of the expanded percentile interval for samples of size ``n`` (NaN for n < 2)."""
    n = np.asarray(n, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        width = np.sqrt(n / (n - 1)) * stats.t.ppf(1 - (1 - level) / 2, n - 1)
    return np.where(n >= 2, stats.norm.cdf(-width), np.nan)


def _quantile(sorted_reps: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """Linear-interpolated quantile ``prob`` (broadcast against the leading axes) of replicates
    sorted along the last axis."""
    reps = sorted_reps.shape[-1]
    pos = np.clip(np.nan_to_num(prob, nan=0.0), 0, 1) * (reps - 1)
    low = np.floor(pos).astype(np.int64)
    high = np.minimum(low + 1, reps - 1)
    frac = pos - low
    pick = lambda i: np.take_along_axis(sorted_reps, i[..., None], axis=-1)[..., 0]  # noqa: E731
    return pick(low) * (1 - frac) + pick(high) * frac


def _resample_means(values: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each leading index, the mean of ``counts`` draws (with replacement) from the first
    ``counts`` entries of the last axis; NaN where counts is 0."""
    n = values.shape[-1]
    idx = np.minimum((rng.random(values.shape) * counts[..., None]).astype(np.int64), n - 1)
    picked = np.take_along_axis(values, idx, axis=-1)
    used = np.arange(n) < counts[..., None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(used, picked, 0.0).sum(-1) / counts


def task_intervals(d: np.ndarray, rng: np.random.Generator, reps: int = REPLICATES, level: float = LEVEL):
    """Per task: (mean, low, high, seeds), each (sweeps, tasks); low/high NaN below 2 seeds."""
    counts = (~np.isnan(d)).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nansum(d, -1) / counts
    values = np.nan_to_num(d)
    shape = (d.shape[0], reps, *d.shape[1:])
    boot = _resample_means(np.broadcast_to(values[:, None], shape), np.broadcast_to(counts[:, None], shape[:-1]), rng)
    boot = np.sort(np.moveaxis(boot, 1, -1), axis=-1)  # (sweeps, tasks, reps)
    tail = expanded_tail(counts, level)
    low, high = _quantile(boot, tail), _quantile(boot, 1 - tail)
    enough = counts >= 2
    return mean, np.where(enough, low, np.nan), np.where(enough, high, np.nan), counts


def average_interval(d: np.ndarray, rng: np.random.Generator, reps: int = REPLICATES, level: float = LEVEL):
    """Average over tasks: (mean, low, high), each (sweeps,); see the module docstring.
    NaN interval where there is a single task with a single seed (or nothing)."""
    counts = (~np.isnan(d)).sum(-1)  # (sweeps, tasks); valid tasks first
    ntasks = (counts > 0).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.nansum(d, -1) / counts
        mean = np.nansum(np.where(counts > 0, means, 0.0), -1) / ntasks
    values = np.nan_to_num(d)
    sweeps, tasks, seeds = d.shape
    # outer: draw tasks; inner: draw seeds of each drawn task
    pick = np.minimum((rng.random((sweeps, reps, tasks)) * ntasks[:, None, None]).astype(np.int64), tasks - 1)
    drawn = np.take_along_axis(np.broadcast_to(values[:, None], (sweeps, reps, tasks, seeds)), np.broadcast_to(pick[..., None], (sweeps, reps, tasks, seeds)), axis=2)
    drawn_counts = np.take_along_axis(np.broadcast_to(counts[:, None], (sweeps, reps, tasks)), pick, axis=2)
    one_seed_each = (counts.max(-1) <= 1)[:, None, None]
    task_draws = np.where(one_seed_each, np.take_along_axis(np.broadcast_to(means[:, None], (sweeps, reps, tasks)), pick, axis=2),
                          _resample_means(drawn, drawn_counts, rng))
    used = np.arange(tasks) < ntasks[:, None, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = np.sort(np.where(used, task_draws, 0.0).sum(-1) / ntasks[:, None], axis=-1)  # (sweeps, reps)
    single_level_n = np.where(counts.max(-1) <= 1, ntasks, np.where(ntasks == 1, counts[:, 0], 0))
    tail = np.where(single_level_n > 0, expanded_tail(np.maximum(single_level_n, 1), level), (1 - level) / 2)
    low, high = _quantile(boot, tail), _quantile(boot, 1 - tail)
    enough = (ntasks >= 2) | (counts[:, 0] >= 2)
    return mean, np.where(enough, low, np.nan), np.where(enough, high, np.nan)


def coverage(true_effect: float, tasks: int, seeds: int, sweeps: int = 1000, task_sd: float = 1.5, seed_sd: float = 2.0,
             seed: int = 0, reps: int = 1000, chunk: int = 100) -> tuple[float, float]:
    """Fraction of ``sweeps`` simulated sweeps whose interval holds the true difference:
    (average-over-tasks interval vs the tasks' population mean ``true_effect``, or the one
    task's effect where ``tasks`` is 1; per-task interval vs that task's effect).
    Task effects ~ N(true_effect, task_sd), seed noise ~ N(0, seed_sd)."""
    rng = np.random.default_rng(seed)
    hit_avg, hit_task, n_task = 0, 0, 0
    for start in range(0, sweeps, chunk):
        size = min(chunk, sweeps - start)
        effects = rng.normal(true_effect, task_sd, (size, tasks))
        d = effects[..., None] + rng.normal(0.0, seed_sd, (size, tasks, seeds))
        _, low, high = average_interval(d, rng, reps)
        target = effects[:, 0] if tasks == 1 else true_effect
        hit_avg += int(((low <= target) & (target <= high)).sum())
        if seeds >= 2:
            _, tlow, thigh, _ = task_intervals(d, rng, reps)
            hit_task += int(((tlow <= effects) & (effects <= thigh)).sum())
            n_task += effects.size
    return hit_avg / sweeps, (hit_task / n_task if n_task else float("nan"))
