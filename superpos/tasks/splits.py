"""Split protocols (methods.md section 5): which examples train, select and test a run.

* ``paper`` (SuperPos, Residual PT; the default): train on train, evaluate on the whole
  validation split, report the best validation score over training. No test split.
* ``heldout`` (ATTEMPT / DePT, ``split_validation_test``): the original validation split
  becomes the test split and a new validation split is carved out, reproducibly
  (``torch.randperm`` with a generator seeded 42, as in ATTEMPT's ``shuffled_indices``):

  - small tasks (< 10k training examples; ``HALVES``): the shuffled validation split in
    halves, the first ``n // 2`` validation, the rest test;
  - large tasks (QQP, QNLI, SST-2; ``HOLD_OUT_TRAIN``): the first 1,000 shuffled training
    examples are validation, the other training examples train, the original validation
    split is test;
  - MNLI: train on train, validation mismatched, test matched.

  MultiRC is small in ATTEMPT (5,100 training questions) and is shuffled by question, not by
  answer option, so that no question is split between validation and test (ATTEMPT shuffles
  options; EM needs whole questions).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from superpos.errors import DataError, choose
from superpos.tasks.base import HALVES, HOLD_OUT_TRAIN, Example, Task
from superpos.tasks.sources import load_examples

#: the split protocols a config's ``split`` names
SPLITS = ("paper", "heldout")
SEED = 42
HELD_OUT_TRAIN_EXAMPLES = 1000


@dataclass
class Splits:
    train: list[Example]
    validation: list[Example]
    test: list[Example] | None = None


def shuffled_units(examples: list[Example], seed: int = SEED) -> list[list[Example]]:
    """Examples in a seeded random order, kept in groups (one unit per MultiRC question)."""
    units: dict[object, list[Example]] = {}
    for i, ex in enumerate(examples):
        units.setdefault(ex.group if ex.group is not None else i, []).append(ex)
    ordered = list(units.values())
    perm = torch.randperm(len(ordered), generator=torch.Generator().manual_seed(seed)).tolist()
    return [ordered[i] for i in perm]


def _flat(units: list[list[Example]]) -> list[Example]:
    return [ex for unit in units for ex in unit]


def load_splits(task: Task, protocol: str = "paper", data_dir: Path | str | None = None, *, source: str = "local") -> Splits:
    """Train, validation and (``heldout`` only) test examples of ``task`` under ``protocol``."""
    choose("split protocol", protocol, SPLITS)

    def load(split: str) -> list[Example]:
        return load_examples(task, split, data_dir, source=source)

    if protocol == "paper":
        splits = Splits(load("train"), load("validation"))
    elif task.heldout == HALVES:
        units = shuffled_units(load("validation"))
        half = len(units) // 2
        splits = Splits(load("train"), _flat(units[:half]), _flat(units[half:]))
    elif task.heldout == HOLD_OUT_TRAIN:
        units = shuffled_units(load("train"))
        splits = Splits(_flat(units[HELD_OUT_TRAIN_EXAMPLES:]), _flat(units[:HELD_OUT_TRAIN_EXAMPLES]), load("validation"))
    else:
        splits = Splits(load("train"), load("validation_mismatched"), load("validation_matched"))
    for name in ("train", "validation", "test"):
        if getattr(splits, name) == []:
            raise DataError(f"task {task.name}: the {protocol} protocol leaves no {name} examples (too few rows)")
    return splits
