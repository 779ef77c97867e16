"""A checkpoint's manifest: which files, of which sizes, a complete upload of it holds.

Why: a Ray trial uploads each checkpoint to the storage path itself (``tune.report``), file by
file and in no fixed order. A worker killed mid-upload (its driver SIGKILLed, its node lost)
leaves a ``checkpoint_<i>`` folder on storage with some of its files: a member without its
``best_prompt.safetensors``, another without ``result.json`` and so retrained alone instead of
fused. Tune itself never restores such a folder (it registers a checkpoint only after its upload),
but ``--resume``'s snapshot repair (``tune_snapshot.py``) and ``superpos audit`` look at the
folders on storage, and must take only whole ones. Found by the 6-minute chaos soak
(docs/reliability.md).

The trainable writes ``superpos_manifest.json`` into every checkpoint before it is uploaded
(``trainable.py``); a folder on storage is complete when it holds every file the manifest lists,
each of the listed size. A folder without its manifest is incomplete: the manifest may be the one
file that did not arrive.
"""

from __future__ import annotations

import json
from pathlib import Path

MANIFEST = "superpos_manifest.json"


def write_manifest(folder: Path) -> dict[str, int]:
    """List every file under ``folder`` (relative path -> size) in ``folder/MANIFEST``."""
    files = {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST}
    (folder / MANIFEST).write_text(json.dumps(files, indent=1, sort_keys=True) + "\n")
    return files


def missing_files(fs, folder: str) -> list[str] | None:
    """What a checkpoint folder on ``fs`` (a pyarrow filesystem) lacks against its manifest:
    [] when complete, the missing or short files otherwise, None without a readable manifest."""
    import pyarrow.fs

    try:
        with fs.open_input_stream(f"{folder}/{MANIFEST}") as f:
            files = json.loads(f.read().decode())
    except (OSError, ValueError):
        return None
    infos = fs.get_file_info([f"{folder}/{name}" for name in files])
    return [name for (name, size), info in zip(files.items(), infos) if info.type != pyarrow.fs.FileType.File or info.size != size]


def complete(fs, folder: str) -> bool:
    return missing_files(fs, folder) == []
