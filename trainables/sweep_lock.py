"""One driver per sweep: an exclusive lock on the sweep's storage path, held for the sweep's
whole life, taken before the driver reads or writes anything of the sweep's state.

* local storage: ``<storage>/<sweep>/superpos_sweep.lock``, an ``flock`` that the operating
  system releases when the driver exits in any way (also SIGKILL); the file names the holder.
* gs:// or s3:// storage: a lease object ``<storage>/<sweep>/superpos_sweep.lease`` (owner host,
  PID, a random token, heartbeat and expiry times). The driver renews it every ``ttl / 4``
  seconds; a lease whose expiry has passed (a driver killed, its machine gone) is taken over,
  and so at once is a lease of this host whose PID no longer runs (the user's driver crashed or
  was killed here: waiting out the TTL would only delay their ``--resume``).
  Object stores offer no compare-and-swap through pyarrow, so a driver writes its lease, waits
  ``SUPERPOS_LEASE_SETTLE_S`` (default 2 s; both stores read their own writes) and reads it
  back: of two drivers that both found no lease, only the later writer keeps it. Expiry times
  are wall-clock times: the machines' clocks must agree to well within the TTL
  (``SUPERPOS_LEASE_TTL_S``, default 60 s).

A second driver is refused with a ConfigError naming the first's host and PID.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path

from superpos.errors import ConfigError

LOCK_FILE, LEASE_FILE = "superpos_sweep.lock", "superpos_sweep.lease"
TTL_ENV, SETTLE_ENV = "SUPERPOS_LEASE_TTL_S", "SUPERPOS_LEASE_SETTLE_S"


def _owner() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _busy(root: str, holder: dict | None) -> ConfigError:
    who = f"host {holder.get('host')}, PID {holder.get('pid')}" if holder else "owner not recorded yet"
    return ConfigError(
        f"sweep storage {root} is in use by another driver ({who}); two drivers would run every trial twice. "
        "Wait for it to end or stop it, then start again (with --resume to continue its sweep)"
    )


@contextlib.contextmanager
def sweep_lock(root: str):
    """Hold the storage path ``root`` (a sweep's folder) exclusively for the ``with`` block."""
    if "://" in root:
        lease = Lease(root)
        lease.acquire()
        try:
            yield
        finally:
            lease.release()
        return
    Path(root).mkdir(parents=True, exist_ok=True)
    with open(Path(root) / LOCK_FILE, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released when the file closes or the process dies
        except BlockingIOError:
            f.seek(0)
            text = f.read()
            raise _busy(root, json.loads(text) if text.strip() else None) from None
        f.seek(0)
        f.truncate()
        f.write(json.dumps(_owner()))
        f.flush()
        yield


def _dead_here(holder: dict) -> bool:
    """True if ``holder`` ran on this host and its PID no longer runs (a zombie counts as gone:
    a killed driver whose parent has not reaped it yet)."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's live process
        return False
    stat = Path(f"/proc/{holder['pid']}/stat")
    with contextlib.suppress(OSError):
        return stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
    return False


class Lease:
    """The lease object of a sweep under a gs:// or s3:// storage path."""

    def __init__(self, root: str):
        import pyarrow.fs

        self.root = root
        self.fs, self.path = pyarrow.fs.FileSystem.from_uri(f"{root.rstrip('/')}/{LEASE_FILE}")
        self.ttl = float(os.environ.get(TTL_ENV, 60))
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def read(self) -> dict | None:
        import pyarrow.fs

        if self.fs.get_file_info(self.path).type == pyarrow.fs.FileType.NotFound:
            return None
        with self.fs.open_input_stream(self.path) as f:
            return json.loads(f.read().decode())

    def write(self) -> None:
        now = time.time()
        lease = {**_owner(), "token": self.token, "heartbeat": now, "expires": now + self.ttl}
        self.fs.create_dir(self.path.rsplit("/", 1)[0], recursive=True)
        with self.fs.open_output_stream(self.path) as f:
            f.write(json.dumps(lease).encode())

    def acquire(self) -> None:
        held = self.read()
        gone = held is not None and _dead_here(held)
        if held is not None and held.get("expires", 0) > time.time() and not gone:
            raise _busy(self.root, held)
        if held is not None:
            why = "its process is gone" if gone else f"no heartbeat for {time.time() - held.get('heartbeat', 0):.0f} s"
            print(f"sweep storage {self.root}: taking over the lease of host {held.get('host')}, PID {held.get('pid')} ({why})",
                  file=sys.stderr, flush=True)
        self.write()
        time.sleep(float(os.environ.get(SETTLE_ENV, 2)))
        now = self.read()
        if now is None or now.get("token") != self.token:
            raise _busy(self.root, now)
        self._beat = threading.Thread(target=self._heartbeat, name="superpos-lease", daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            try:
                held = self.read()
                if held is None or held.get("token") != self.token:
                    print(f"warning: sweep storage {self.root}: this driver lost its lease to {held}; stop it", file=sys.stderr, flush=True)
                    return
                self.write()
            except Exception as e:  # noqa: BLE001 - a storage outage: keep trying until the lease expires
                print(f"warning: sweep storage {self.root}: lease not renewed ({e})", file=sys.stderr, flush=True)

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        with contextlib.suppress(Exception):  # an expired lease taken over is not ours to delete
            held = self.read()
            if held is not None and held.get("token") == self.token:
                self.fs.delete_file(self.path)
