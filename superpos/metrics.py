"""Task metrics with scikit-learn and scipy (methods.md section 4).

Predictions are label indices (or floats for regression); ``None`` marks an invalid
generation, which always counts as wrong. A run that never produces a valid label scores 0
(the paper's dagger). ``evaluate`` is not used: it fetches metric scripts from the hub at
run time and fails offline.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

Metric = Callable[[Sequence, Sequence, Sequence], float]

_INVALID = -1


def _as_labels(preds: Sequence) -> np.ndarray:
    return np.array([_INVALID if p is None else int(p) for p in preds], dtype=np.int64)


def accuracy(preds, golds, groups=None) -> float:
    if len(golds) == 0:
        return 0.0
    return float(np.mean(_as_labels(preds) == np.asarray(golds, dtype=np.int64)))


def f1(preds, golds, groups=None) -> float:
    """Binary F1 of the positive class (label index 1); invalid predictions are never positive."""
    from sklearn.metrics import f1_score

    return float(f1_score(np.asarray(golds, dtype=np.int64), _as_labels(preds), labels=[1], average="macro", zero_division=0))


def macro_f1(preds, golds, groups=None) -> float:
    """Unweighted mean of per-class F1 over the gold label set (CB: 3 classes)."""
    from sklearn.metrics import f1_score

    golds = np.asarray(golds, dtype=np.int64)
    labels = sorted(set(golds.tolist()) | {p for p in _as_labels(preds).tolist() if p != _INVALID})
    return float(f1_score(golds, _as_labels(preds), labels=labels, average="macro", zero_division=0))


METRICS: dict[str, Metric] = {
    "accuracy": accuracy,
    "f1": f1,
    "macro_f1": macro_f1,
}


def compute(metric_names: Sequence[str], preds: Sequence, golds: Sequence, groups: Sequence | None = None) -> dict[str, float]:
    """Every named metric plus ``score``, their mean (the Table 1 score)."""
    out = {name: METRICS[name](preds, golds, groups) for name in metric_names}
    out["score"] = float(np.mean([out[n] for n in metric_names]))
    out["invalid_rate"] = float(np.mean([p is None for p in preds])) if len(preds) else 0.0
    return out
