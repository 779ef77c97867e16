"""A sweep's options (the command line over the spec) and its record on the storage path,
``<storage>/<sweep name>/superpos_sweep.json``: the parent run id, the tracking URI and the
spec's fingerprint, which ``--resume`` reads. Local paths and gs:// / s3:// URIs alike (pyarrow).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from trainables.spec import SweepSpec

STATE_FILE = "superpos_sweep.json"


@dataclass
class RunOptions:
    """Command-line overrides of the spec (None: the spec's value)."""

    resume: bool = False
    tracking_uri: str | None = None
    storage_path: str | None = None
    data_dir: str | None = None
    address: str | None = None
    best_file: str | None = None
    optuna_storage: str | None = None
    #: launch grids above guards.CONFIRM_ABOVE trials
    yes: bool = False
    #: extra tags of the parent run; those in tracking.INHERITED_TAGS pass on to its child runs
    #: (the sweep benchmark marks its runs so that they are never read as results)
    tags: dict[str, str] = field(default_factory=dict)


def is_uri(path: str) -> bool:
    return "://" in path


def absolute_tracking_uri(uri: str) -> str:
    """A relative sqlite path is made absolute, so --resume from elsewhere finds the store."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    return uri


def sweep_root(spec: SweepSpec, opts: RunOptions) -> str:
    storage = opts.storage_path or spec.storage_path
    root = storage if is_uri(storage) else str(Path(storage).resolve())
    return f"{root.rstrip('/')}/{spec.name}"


# -- sweep state (works on local paths and cloud URIs through pyarrow) ------------------
def _fs(path: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(path)


def read_state(root: str) -> dict | None:
    import pyarrow.fs

    fs, p = _fs(f"{root}/{STATE_FILE}")
    if fs.get_file_info(p).type == pyarrow.fs.FileType.NotFound:
        return None
    with fs.open_input_stream(p) as f:
        return json.loads(f.read().decode())


def write_state(root: str, state: dict) -> None:
    fs, p = _fs(f"{root}/{STATE_FILE}")
    fs.create_dir(p.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(p) as f:
        f.write(json.dumps(state, indent=2).encode())


def delete_state(root: str) -> None:
    fs, p = _fs(f"{root}/{STATE_FILE}")
    fs.delete_file(p)
