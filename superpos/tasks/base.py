"""The Task definition: fields, text-to-text templates, label texts, parsing and metrics.

Templates (methods.md section 3; the SuperPos paper states none):

* ``t5`` (default): ``"{prefix} k1: v1 k2: v2"`` with label names as targets (Lester et al.).
  Keys are in sorted order except where T5 lists them (MultiRC question, answer, paragraph;
  WiC sentence1, sentence2, word): ``Task.fields`` holds them in template order.
* ``attempt``: the same inputs with label indices ``"0"``, ``"1"``, ... as targets (ATTEMPT/DePT).

STS-B is regression as text: the target is ``round(5 * x) / 5`` printed with one decimal (the
0.2 grid, both template families; ATTEMPT's 0.1-grid bug is not reproduced); a generation
that is no number is invalid.

A generated text is parsed back to a label after lowercasing and removing whitespace
(whitespace-insensitive so that WordPiece decoding, ``"not _ entailment"``, still parses);
anything that is no label is invalid (``None``) and counts as wrong.

Rows come in two shapes, both mapped to the same ``Example``:

* the original files (GLUE TSV, SuperGLUE JSONL): columns named by ``Task.fields`` values and
  ``label_column``, raw label values mapped by ``raw_labels``;
* the hub schema (``datasets`` rows and Parquet files): columns named by the template keys
  (the ``fields`` keys) and ``label``, an integer class index (or a float for STS-B).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from superpos.errors import DataError, choose

TEMPLATES = ("t5", "attempt")

#: heldout protocol rules (methods.md section 5), see superpos.tasks.splits
HALVES, HOLD_OUT_TRAIN, MNLI_RULE = "halves", "hold_out_train", "mnli"


@dataclass(frozen=True)
class Example:
    """One typed row, whatever the source: input fields, gold label (index or float), optional group.

    ``group`` ties MultiRC's answer options to their question (``"<paragraph idx>-<question idx>"``).
    """

    fields: Mapping[str, str]
    label: int | float
    group: str | None = None


@dataclass(frozen=True)
class Task:
    name: str
    prefix: str
    #: template key (= hub column) in template order -> column or JSON field in the original file
    fields: Mapping[str, str]
    label_column: str
    #: label names (targets of the ``t5`` template), in the hub's class order; empty for regression
    labels: tuple[str, ...]
    #: metric names (see superpos.metrics) whose mean is the Table 1 score
    metrics: tuple[str, ...]
    file_format: str  # "tsv" or "jsonl"
    #: Hugging Face hub dataset id and config
    hub: tuple[str, str]
    #: raw label value in the original file -> label index (types must match: JSON true is no 1)
    raw_labels: Mapping[object, int] = field(default_factory=dict)
    #: split name -> file stem in the task's folder (= the hub split name)
    splits: Mapping[str, str] = field(default_factory=lambda: {"train": "train", "validation": "validation"})
    #: header-less TSV columns (CoLA)
    columns: tuple[str, ...] | None = None
    #: regression targets lie in this range (STS-B: 0-5); None for classification
    value_range: tuple[float, float] | None = None
    #: how the heldout protocol makes validation/test (HALVES, HOLD_OUT_TRAIN or MNLI_RULE)
    heldout: str = HALVES
    #: original rows that nest many examples (MultiRC): (row, where) -> [(flat row, where, group)]
    flatten: Callable[[dict, str], list[tuple[dict, str, str]]] | None = None
    #: group id of a hub row (MultiRC)
    hub_group: Callable[[dict], str] | None = None
    #: name of the folder in a data directory (defaults to the task name)
    folder: str | None = None
    #: the long context field (a ``fields`` key) that may be shortened to fit the input length
    #: limit, every other field kept whole (superpos.inputs); None: the text is cut at its end
    context: str | None = None

    @property
    def regression(self) -> bool:
        return self.value_range is not None

    # -- text-to-text -------------------------------------------------------------------
    def format_input(self, ex: Example, template: str = "t5") -> str:
        """``"{prefix} k1: v1 k2: v2"``; both template families share the inputs."""
        parts = [f"{key}: {ex.fields[key]}" for key in self.fields]
        return " ".join([self.prefix, *parts])

    def label_texts(self, template: str = "t5") -> list[str]:
        """Target strings of all classes (classification tasks)."""
        choose("template", template, TEMPLATES)
        if template == "attempt":
            return [str(i) for i in range(len(self.labels))]
        return list(self.labels)

    def candidate_texts(self, template: str = "t5") -> list[str]:
        """Every target text the task can have: the label texts, or the regression grid
        (STS-B: ``"0.0", "0.2", ..., "5.0"``), for rank classification and generation budgets."""
        if self.regression:
            lo, hi = self.value_range
            return [f"{step / 5:.1f}" for step in range(round(lo * 5), round(hi * 5) + 1)]
        return self.label_texts(template)

    def target_text(self, label: int | float, template: str = "t5") -> str:
        if self.regression:
            return f"{round(float(label) * 5) / 5:.1f}"
        return self.label_texts(template)[int(label)]

    def parse(self, text: str, template: str = "t5") -> int | float | None:
        key = "".join(text.lower().split())
        if self.regression:
            try:
                value = float(key)
            except ValueError:
                return None
            return value if math.isfinite(value) else None
        for i, label in enumerate(self.label_texts(template)):
            if key == "".join(label.lower().split()):
                return i
        return None

    # -- rows -> examples ---------------------------------------------------------------
    def example_from_row(self, row: dict, where: str) -> list[Example]:
        """An original-format row (TSV/JSONL) as typed examples; DataError naming ``where`` and the field."""
        if self.flatten is not None:
            return [self._example(flat, at, group) for flat, at, group in self.flatten(row, where)]
        return [self._example(row, where)]

    def _example(self, row: dict, where: str, group: str | None = None) -> Example:
        values = self._text_fields(row, self.fields, where)
        raw = _required(row, self.label_column, where)
        if self.regression:
            return Example(values, self._number(raw, self.label_column, where), group)
        for value, index in self.raw_labels.items():
            if type(value) is type(raw) and value == raw:
                return Example(values, index, group)
        allowed = ", ".join(repr(k) for k in self.raw_labels)
        raise DataError(f"{where}: field {self.label_column!r} has unknown label {raw!r}; allowed: {allowed}")

    def example_from_hub_row(self, row: dict, where: str) -> Example:
        """A hub-schema row (``datasets`` or Parquet): template keys and an integer ``label``."""
        values = self._text_fields(row, {key: key for key in self.fields}, where)
        raw = _required(row, "label", where)
        group = self.hub_group(row) if self.hub_group is not None else None
        if self.regression:
            return Example(values, self._number(raw, "label", where), group)
        if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw < len(self.labels):
            # hub test splits carry label -1: they have no gold labels
            raise DataError(f"{where}: field 'label' has unknown label {raw!r}; allowed: 0..{len(self.labels) - 1} ({', '.join(self.labels)})")
        return Example(values, raw, group)

    def _text_fields(self, row: dict, columns: Mapping[str, str], where: str) -> dict[str, str]:
        needs = ", ".join(columns.values())
        for column in columns.values():
            if row.get(column) is None:
                raise DataError(f"{where}: missing field {column!r} (task {self.name} needs {needs})")
        return {key: str(row[column]) for key, column in columns.items()}

    def _number(self, raw, column: str, where: str) -> float:
        try:
            value = float(raw)
        except (TypeError, ValueError):
            value = math.nan
        lo, hi = self.value_range
        if not lo <= value <= hi:
            raise DataError(f"{where}: field {column!r} = {raw!r} is not a number in [{lo:g}, {hi:g}]")
        return value

    def data_folder(self, data_dir: Path) -> Path:
        return Path(data_dir) / (self.folder or self.name)


def _required(row: dict, column: str, where: str):
    """The label ``row[column]``, or a DataError naming the missing field."""
    value = row.get(column)
    if value is None or value == "":
        raise DataError(f"{where}: missing label field {column!r}")
    return value
