"""Readers for the original file formats: GLUE TSV, SuperGLUE JSONL, and Parquet.

GLUE TSVs are read with quoting off (the text holds unbalanced ``"``), an optional UTF-8
byte-order mark (MRPC) is dropped, and CoLA's header-less layout is supported through
``columns``. Every problem is reported with file, line and field before training starts;
text files are decoded a line at a time, so bytes that are not UTF-8 are named by line too.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterator

from superpos.errors import DataError

csv.field_size_limit(1 << 30)


def text_lines(path: Path) -> Iterator[str]:
    """The lines of a UTF-8 text file, line endings kept and a leading byte-order mark dropped;
    undecodable bytes are a DataError naming the line."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                yield raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise DataError(
                    f"{path}, line {lineno}: byte {raw[e.start]:#04x} at column {e.start + 1} is not UTF-8 ({e.reason});"
                    " save the file as UTF-8"
                ) from None


def read_tsv(path: Path, columns: tuple[str, ...] | None = None) -> Iterator[tuple[int, dict]]:
    """Yield (line number, row) from a GLUE TSV. ``columns`` names header-less files' columns."""
    reader = csv.reader(text_lines(path), delimiter="\t", quoting=csv.QUOTE_NONE)
    header = list(columns) if columns is not None else next(reader, None)
    if header is None:
        raise DataError(f"{path}: the file is empty (expected a header line)")
    for lineno, values in enumerate(reader, start=1 if columns is not None else 2):
        if not values:
            continue
        if len(values) != len(header):
            raise DataError(
                f"{path}, line {lineno}: {len(values)} tab-separated fields, expected {len(header)} ({', '.join(header)})"
            )
        yield lineno, dict(zip(header, values))


def read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    for lineno, line in enumerate(text_lines(path), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}, line {lineno}: not a complete JSON object ({e.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}, line {lineno}: expected a JSON object, got {type(row).__name__}")
        yield lineno, row


def read_parquet(path: Path) -> Iterator[tuple[int, dict]]:
    import pyarrow.parquet as pq

    for i, row in enumerate(pq.read_table(path).to_pylist(), start=1):
        yield i, row
