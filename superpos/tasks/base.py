"""The Task definition: fields, text-to-text templates, label texts, parsing and metrics.

Templates (methods.md section 3; the SuperPos paper states none):

* ``t5`` (default): ``"{prefix} k1: v1 k2: v2"`` with label names as targets (Lester et al.).
* ``attempt``: the same inputs with label indices ``"0"``, ``"1"``, ... as targets (ATTEMPT/DePT).

A generated text is parsed back to a label after lowercasing and removing whitespace
(whitespace-insensitive so that WordPiece decoding, ``"not _ entailment"``, still parses);
anything that is no label is invalid (``None``) and counts as wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from superpos.errors import DataError, choose

TEMPLATES = ("t5", "attempt")


@dataclass(frozen=True)
class Example:
    """One typed row, whatever the source: input fields, gold label (index or float), optional group."""

    fields: Mapping[str, str]
    label: int | float
    group: str | None = None


@dataclass(frozen=True)
class Task:
    name: str
    prefix: str
    #: template keys in template order -> column (or JSON field) in the original file
    fields: Mapping[str, str]
    label_column: str
    #: label names (targets of the ``t5`` template); empty for regression tasks
    labels: tuple[str, ...]
    #: metric names (see superpos.metrics) whose mean is the Table 1 score
    metrics: tuple[str, ...]
    file_format: str  # "tsv" or "jsonl"
    #: raw label value in the file -> label index
    raw_labels: Mapping[object, int] = field(default_factory=dict)
    #: split name -> file stem in the task's folder
    splits: Mapping[str, str] = field(default_factory=lambda: {"train": "train", "validation": "validation"})
    #: header-less TSV columns (CoLA)
    columns: tuple[str, ...] | None = None
    regression: bool = False
    #: custom row parser (MultiRC flattens one line to many examples): (row, where) -> examples
    row_parser: Callable[[dict, str], list[Example]] | None = None
    #: name of the folder in a data directory (defaults to the task name)
    folder: str | None = None

    # -- text-to-text -------------------------------------------------------------------
    def format_input(self, ex: Example, template: str = "t5") -> str:
        parts = [f"{key}: {ex.fields[key]}" for key in self.fields]
        return " ".join([self.prefix, *parts]) if self.prefix else " ".join(parts)

    def label_texts(self, template: str = "t5") -> list[str]:
        """Target strings of all classes (classification tasks)."""
        choose("template", template, TEMPLATES)
        if template == "attempt":
            return [str(i) for i in range(len(self.labels))]
        return list(self.labels)

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
            return value if value == value and abs(value) != float("inf") else None
        for i, label in enumerate(self.label_texts(template)):
            if key == "".join(label.lower().split()):
                return i
        return None

    # -- data ---------------------------------------------------------------------------
    def example_from_row(self, row: dict, where: str) -> list[Example]:
        """Turn one raw row into typed examples, or raise DataError naming ``where`` and the field."""
        if self.row_parser is not None:
            return self.row_parser(row, where)
        values = {}
        for key, column in self.fields.items():
            if column not in row or row[column] is None:
                raise DataError(f"{where}: missing field {column!r} (task {self.name} needs {', '.join(self.fields.values())})")
            values[key] = str(row[column])
        if self.label_column not in row or row[self.label_column] in (None, ""):
            raise DataError(f"{where}: missing label field {self.label_column!r}")
        raw = row[self.label_column]
        if self.regression:
            try:
                label: int | float = float(raw)
            except (TypeError, ValueError):
                raise DataError(f"{where}: field {self.label_column!r} = {raw!r} is not a number") from None
        else:
            if raw not in self.raw_labels:
                allowed = ", ".join(repr(k) for k in self.raw_labels)
                raise DataError(f"{where}: field {self.label_column!r} has unknown label {raw!r}; allowed: {allowed}")
            label = self.raw_labels[raw]
        return [Example(values, label)]

    def data_folder(self, data_dir: Path) -> Path:
        return Path(data_dir) / (self.folder or self.name)
