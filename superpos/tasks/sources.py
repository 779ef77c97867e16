"""Data sources: one function returns the same typed rows whatever the source.

``local``: a directory laid out like ../shared/data (``<task>/<split>.tsv|jsonl|parquet``).
"""

from __future__ import annotations

from pathlib import Path

from superpos.errors import DataError
from superpos.tasks.base import Example, Task
from superpos.tasks.readers import read_jsonl, read_parquet, read_tsv


def split_path(task: Task, split: str, data_dir: Path) -> Path:
    """The file holding ``split`` of ``task``; DataError naming the expected path if absent."""
    if split not in task.splits:
        raise DataError(f"task {task.name} has no split {split!r}; allowed: {', '.join(task.splits)}")
    folder = task.data_folder(data_dir)
    stem = task.splits[split]
    candidates = [folder / f"{stem}.{task.file_format}", folder / f"{stem}.parquet"]
    for path in candidates:
        if path.is_file():
            return path
    raise DataError(
        f"data directory {data_dir} has no {split} split for task {task.name}: expected {candidates[0]}"
        f" (or {candidates[1].name})"
    )


def load_examples(task: Task, split: str, data_dir: Path | str) -> list[Example]:
    path = split_path(task, split, Path(data_dir))
    if path.suffix == ".parquet":
        rows = read_parquet(path)
    elif path.suffix == ".jsonl":
        rows = read_jsonl(path)
    else:
        rows = read_tsv(path, task.columns)
    examples: list[Example] = []
    for lineno, row in rows:
        examples.extend(task.example_from_row(row, f"{path}, line {lineno}"))
    if not examples:
        raise DataError(f"{path}: the {split} split of task {task.name} holds no examples")
    return examples
