"""What a trial checks and fetches on its node before it trains (``train_group`` calls
``prepare_node`` first, inside its ConfigError path: a refusal here fails the trial once, it is
not retried ``max_failures`` times).

* **A stale node.** The driver passes its superpos version and the sha256 of its
  ``requirements.lock`` (``superpos.environment``; what ``environment.json`` records) to every
  trial; a node whose installed package differs in either is refused, naming the node and both
  versions. A node set up from an older checkout would otherwise train with other code.

* **Data on every node.** ``--data-dir`` (or ``data_dir``) may be a local path or a ``gs://`` /
  ``s3://`` URI. Under a URI the trial copies its task's folder (``<data dir>/<task folder>/``)
  to ``<SUPERPOS_CACHE>/data/<scheme>/<bucket path>/`` on its node, the same way source prompts
  travel (``chain.localize``), and trains from there:

  - once per node: a manifest beside the folder records each file's remote size and
    modification time and the sha256 of the local copy; a file is fetched again only when the
    remote changed or the local copy no longer has its recorded sha256 (a damaged copy);
  - trials that start at once on one node do not race: the copy runs under an exclusive file
    lock (``fcntl.flock`` on ``<folder>.lock``), every file is written to a temporary name and
    renamed into place, and a trial reads only after the lock is released, so none reads a
    half-written file.

  Local paths are used as they are. Either way a split file the task needs that is absent
  fails the trial with the node and the path (the remote URI for a bucket).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import socket
from pathlib import Path

from superpos.config import TrainConfig
from superpos.errors import ConfigError, DataError

#: what must agree between the driver and a trial's node
VERSION_KEYS = ("superpos", "lock_sha256")
DATA_DIR = "data"
MANIFEST_SUFFIX = ".manifest.json"


def package_versions() -> dict:
    """This process's superpos version and lock hash (as ``environment.json`` records them)."""
    from superpos import __version__
    from superpos.environment import lock_hash

    return {"superpos": __version__, "lock_sha256": lock_hash()}


def node_name() -> str:
    """The node's Ray address and host name, for messages (the host name alone outside Ray)."""
    try:
        import ray

        return f"{ray.util.get_node_ip_address()} ({socket.gethostname()})"
    except Exception:  # noqa: BLE001 - not in a Ray worker: the host name says enough
        return socket.gethostname()


def check_versions(driver: dict | None) -> None:
    """ConfigError when this node's package differs from the driver's (``driver``: its ``package_versions()``)."""
    if not driver:
        return
    mine = package_versions()
    if any(mine.get(k) != driver.get(k) for k in VERSION_KEYS):
        raise ConfigError(
            f"stale node {node_name()}: its superpos is {_describe(mine)}, the driver's is {_describe(driver)}; "
            "install the driver's checkout with the lock on that node (`pip install -e . -c requirements.lock`) or take it out of the cluster"
        )


def _describe(versions: dict) -> str:
    return f"{versions.get('superpos')} (requirements.lock sha256 {versions.get('lock_sha256') or 'none'})"


def prepare_node(config: TrainConfig) -> TrainConfig:
    """The config a trial trains with on this node: a bucket data dir replaced by its local
    copy; ConfigError naming node and path when a split file of the task is absent."""
    if config.source != "local":
        return config
    from superpos.tasks import get_task
    from superpos.tasks.sources import split_path

    task = get_task(config.task)
    remote = config.data_dir if "://" in config.data_dir else None
    local = fetch_folder(f"{remote.rstrip('/')}/{task.folder or task.name}") if remote else None
    data_dir = str(local.parent) if local else config.data_dir
    for split in task.splits:
        try:
            split_path(task, split, Path(data_dir))
        except DataError as e:
            message = str(e).replace(data_dir, remote) if remote else str(e)
            raise ConfigError(f"node {node_name()}: {message}") from None
    return dataclasses.replace(config, data_dir=data_dir) if remote else config


def local_copy_of(uri: str) -> Path:
    """Where ``fetch_folder(uri)`` puts a remote folder: the same path on every node."""
    from superpos.settings import cache_dir

    scheme, rest = uri.split("://", 1)
    return cache_dir() / DATA_DIR / scheme / rest.strip("/")


def fetch_folder(uri: str) -> Path:
    """Copy the files of the remote folder ``uri`` (not its sub-folders) to this node's cache,
    once (see the module docstring); returns the local folder. A folder absent remotely gives
    an empty local folder: the caller names the file it lacks."""
    import pyarrow.fs

    local = local_copy_of(uri)
    local.mkdir(parents=True, exist_ok=True)
    fs, path = pyarrow.fs.FileSystem.from_uri(uri)
    with _locked(local.with_name(local.name + ".lock")):
        manifest_path = local.with_name(local.name + MANIFEST_SUFFIX)
        manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
        listing = fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))
        remote = {Path(i.path).name: [i.size, i.mtime_ns] for i in listing if i.type == pyarrow.fs.FileType.File}
        for name, stamp in remote.items():
            held = manifest.get(name)
            if held and held["remote"] == stamp and _sha256(local / name) == held["sha256"]:
                continue
            manifest[name] = {"remote": stamp, "sha256": _download(fs, f"{path}/{name}", local / name)}
        for name in set(manifest) - set(remote):  # removed remotely: not data of this task any more
            (local / name).unlink(missing_ok=True)
        manifest = {k: v for k, v in manifest.items() if k in remote}
        _write_atomic(manifest_path, json.dumps(manifest, indent=2).encode())
    return local


@contextlib.contextmanager
def _locked(path: Path):
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(fs, src: str, dst: Path) -> str:
    part = dst.with_name(f"{dst.name}.{os.getpid()}.part")
    digest = hashlib.sha256()
    with fs.open_input_stream(src) as f, open(part, "wb") as out:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
            out.write(block)
    os.replace(part, dst)
    return digest.hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    part = path.with_name(f"{path.name}.{os.getpid()}.part")
    part.write_bytes(data)
    os.replace(part, path)
