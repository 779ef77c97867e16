"""Names, order and display labels of the paper's rows and columns (paper Table 1 and 2).

Tag values written by sweeps (docs/mlflow-layout.md) are the CLI names of tasks, methods and
models; this module maps them to the paper's labels and orders them as the paper does.
Unknown names keep their own spelling and sort after the known ones, alphabetically.
"""

from __future__ import annotations

import re

#: Table 1 column order and labels (GLUE, then SuperGLUE)
TASK_LABELS = {
    "qqp": "QQP", "qnli": "QNLI", "mnli": "MNLI", "sst2": "SST-2", "stsb": "STS-B", "mrpc": "MRPC",
    "cola": "CoLA", "multirc": "MultiRC", "rte": "RTE", "superglue_rte": "RTE (SuperGLUE)", "cb": "CB", "copa": "COPA", "wic": "WiC",
    "boolq": "BoolQ",
}

#: Table 1 row order and labels
METHOD_LABELS = {
    "simple": "Simple PT", "attempt": "ATTEMPT", "residual": "Residual PT", "lowrank": "DPT (low-rank)",
    "superpos": "SuperPos PT", "full": "Full FT",
}

MODEL_LABELS = {
    "google/t5-small-lm-adapt": "T5v1.1 Small LM-Adapted",
    "google/t5-base-lm-adapt": "T5v1.1 Base LM-Adapted",
    "t5-base": "T5 Base",
    "Qwen/Qwen2.5-0.5B": "Qwen2.5 0.5B",
    "HuggingFaceTB/SmolLM2-360M": "SmolLM2 360M",
    "meta-llama/Llama-3.2-1B": "Llama 3.2 1B",
    "gpt2": "GPT-2",
}

#: metric labels in the order the paper prints two-metric cells (F1/Acc., PCC/rho, F1a/EM);
#: used for tasks that superpos.tasks does not know (their metrics are read from the runs)
METRIC_LABELS = {
    "f1": "F1", "macro_f1": "F1", "f1a": "F1a", "pearson": "PCC", "spearman": "ρ", "mcc": "MCC",
    "accuracy": "Acc.", "em": "EM",
}

DROPOUT_LABELS = {True: "✓", False: "✗"}


def _order(known: dict, names) -> list:
    rank = {name: i for i, name in enumerate(known)}
    return sorted(set(names), key=lambda n: (rank.get(n, len(rank)), str(n)))


def order_tasks(names) -> list[str]:
    return _order(TASK_LABELS, names)


def order_methods(names) -> list[str]:
    return _order(METHOD_LABELS, names)


def order_models(names) -> list[str]:
    return _order(MODEL_LABELS, names)


def task_label(name: str) -> str:
    return TASK_LABELS.get(name, name)


def method_label(name: str) -> str:
    return METHOD_LABELS.get(name, name)


def model_label(name: str) -> str:
    return MODEL_LABELS.get(name, name)


def task_metrics(task: str, logged) -> tuple[str, ...]:
    """The metrics whose mean is the task's Table 1 score (methods.md section 4).

    The task registry is the source of truth; for a task it does not know, the metric names
    that the runs logged, in the paper's order.
    """
    from superpos.tasks import TASKS

    if task in TASKS:
        return tuple(TASKS[task].metrics)
    return tuple(m for m in METRIC_LABELS if m in set(logged))


def slug(name: str) -> str:
    """A file-name-safe form of a model name (``google/t5-base-lm-adapt`` -> ``google_t5-base-lm-adapt``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "model"
