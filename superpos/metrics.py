"""Task metrics with scikit-learn and scipy (methods.md section 4).

Predictions are label indices (or floats for regression); ``None`` marks an invalid
generation, which always counts as wrong: for classification it becomes label -1, which no
gold label equals and which is never the positive class (T5's ``string_to_label`` does the
same); for regression it becomes -1.0, outside STS-B's [0, 5] (T5's ``string_to_float``
default). A run that never produces a valid label scores 0 (the paper's dagger), and so does
a correlation that is undefined because the predictions are constant.

``evaluate`` is not used: it fetches metric scripts from the hub at run time and fails offline.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Sequence

import numpy as np

Metric = Callable[[Sequence, Sequence, Sequence], float]

_INVALID = -1


def _as_labels(preds: Sequence) -> np.ndarray:
    return np.array([_INVALID if p is None else int(p) for p in preds], dtype=np.int64)


def _as_values(preds: Sequence) -> np.ndarray:
    return np.array([float(_INVALID) if p is None else float(p) for p in preds], dtype=np.float64)


def accuracy(preds, golds, groups=None) -> float:
    if len(golds) == 0:
        return 0.0
    return float(np.mean(_as_labels(preds) == np.asarray(golds, dtype=np.int64)))


def f1(preds, golds, groups=None) -> float:
    """Binary F1 of the positive class (label index 1); MultiRC's F1a over all answer options."""
    from sklearn.metrics import f1_score

    return float(f1_score(np.asarray(golds, dtype=np.int64), _as_labels(preds), labels=[1], average="macro", zero_division=0))


def macro_f1(preds, golds, groups=None) -> float:
    """Unweighted mean of per-class F1 over the gold label set (CB: 3 classes)."""
    from sklearn.metrics import f1_score

    golds = np.asarray(golds, dtype=np.int64)
    labels = sorted(set(golds.tolist()) | {p for p in _as_labels(preds).tolist() if p != _INVALID})
    return float(f1_score(golds, _as_labels(preds), labels=labels, average="macro", zero_division=0))


def mcc(preds, golds, groups=None) -> float:
    """Matthews correlation (CoLA); invalid predictions are a third class, as in T5."""
    from sklearn.metrics import matthews_corrcoef

    return float(matthews_corrcoef(np.asarray(golds, dtype=np.int64), _as_labels(preds)))


def _correlation(fn, preds, golds) -> float:
    x, y = _as_values(preds), np.asarray(golds, dtype=np.float64)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0  # undefined for constant inputs (e.g. all predictions invalid)
    return float(fn(x, y)[0])


def pearson(preds, golds, groups=None) -> float:
    from scipy.stats import pearsonr

    return _correlation(pearsonr, preds, golds)


def spearman(preds, golds, groups=None) -> float:
    from scipy.stats import spearmanr

    return _correlation(spearmanr, preds, golds)


def em(preds, golds, groups) -> float:
    """MultiRC exact match: the fraction of questions (groups) with every answer option right."""
    if groups is None or any(g is None for g in groups):
        raise ValueError("em needs a group (question id) for every prediction")
    right: dict = defaultdict(lambda: True)
    for p, g, q in zip(_as_labels(preds).tolist(), golds, groups):
        right[q] = right[q] and p == int(g)
    return float(np.mean(list(right.values()))) if right else 0.0


METRICS: dict[str, Metric] = {
    "accuracy": accuracy,
    "f1": f1,
    "f1a": f1,
    "macro_f1": macro_f1,
    "mcc": mcc,
    "pearson": pearson,
    "spearman": spearman,
    "em": em,
}


def compute(metric_names: Sequence[str], preds: Sequence, golds: Sequence, groups: Sequence | None = None) -> dict[str, float]:
    """Every named metric plus ``score``, their mean (the Table 1 score), and ``invalid_rate``."""
    out = {name: METRICS[name](preds, golds, groups) for name in metric_names}
    out["score"] = float(np.mean([out[n] for n in metric_names]))
    out["invalid_rate"] = float(np.mean([p is None for p in preds])) if len(preds) else 0.0
    return out
