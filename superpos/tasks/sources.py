"""Data sources: one function returns the same typed rows whatever the source.

* ``local`` (default): a directory laid out like ../shared/data, ``<task>/<split>.<ext>``.
  A split is read from the original file (``.tsv`` for GLUE, ``.jsonl`` for SuperGLUE) or,
  where that is absent, from ``<split>.parquet`` holding the hub schema (what
  ``datasets.Dataset.to_parquet`` writes, or the hub's own Parquet export).
* ``hub``: ``datasets.load_dataset(<id>, <config>, split=...)`` with the canonical ids
  ``nyu-mll/glue`` and ``aps/super_glue``; ``datasets`` caches the download (set
  ``HF_HUB_OFFLINE=1`` to use only that cache).

Every row becomes an ``Example``; a problem is a DataError naming file (or dataset), line
(or row) and field, raised before any training starts.
"""

from __future__ import annotations

from pathlib import Path

from superpos.errors import DataError, choose
from superpos.tasks.base import Example, Task
from superpos.tasks.readers import read_jsonl, read_parquet, read_tsv

SOURCES = ("local", "hub")


def split_path(task: Task, split: str, data_dir: Path) -> Path:
    """The file holding ``split`` of ``task``; DataError naming the expected path if absent."""
    folder = task.data_folder(data_dir)
    stem = _split_name(task, split)
    candidates = [folder / f"{stem}.{task.file_format}", folder / f"{stem}.parquet"]
    for path in candidates:
        if path.is_file():
            return path
    raise DataError(
        f"data directory {data_dir} has no {split} split for task {task.name}: expected {candidates[0]}"
        f" (or {candidates[1].name})"
    )


def _split_name(task: Task, split: str) -> str:
    if split not in task.splits:
        raise DataError(f"task {task.name} has no split {split!r}; allowed: {', '.join(task.splits)}")
    return task.splits[split]


def _local_examples(task: Task, split: str, data_dir: Path) -> tuple[str, list[Example]]:
    path = split_path(task, split, data_dir)
    if path.suffix == ".parquet":
        return str(path), [task.example_from_hub_row(row, f"{path}, row {i}") for i, row in read_parquet(path)]
    rows = read_jsonl(path) if path.suffix == ".jsonl" else read_tsv(path, task.columns)
    return str(path), [ex for lineno, row in rows for ex in task.example_from_row(row, f"{path}, line {lineno}")]


def _hub_examples(task: Task, split: str) -> tuple[str, list[Example]]:
    from datasets import load_dataset

    repo, config = task.hub
    hub_split = _split_name(task, split)
    name = f"{repo} ({config}, {hub_split})"
    rows = load_dataset(repo, config, split=hub_split).to_list()
    return name, [task.example_from_hub_row(row, f"{name}, row {i}") for i, row in enumerate(rows, start=1)]


def load_examples(task: Task, split: str, data_dir: Path | str | None = None, *, source: str = "local") -> list[Example]:
    """The labelled examples of one split of ``task``, in file order."""
    choose("data source", source, SOURCES)
    if source == "hub":
        where, examples = _hub_examples(task, split)
    else:
        if data_dir is None:
            raise DataError(f"task {task.name}: the local data source needs a data directory")
        where, examples = _local_examples(task, split, Path(data_dir))
    if not examples:
        raise DataError(f"{where}: the {split} split of task {task.name} holds no examples")
    return examples
