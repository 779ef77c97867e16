"""One-time set-up of a local MLflow store under a file lock.

The first client of a new sqlite store creates its schema (alembic migrations), and the first
sweep of an experiment creates it: two sweeps started together on a new store race in both
(``alembic ... Online migration expected to match one row``, or the experiment created twice).
``store_lock`` serialises them with an exclusive ``flock`` on ``<database>.lock`` beside the
database the user named; other stores (a tracking server) pass through.
"""

from __future__ import annotations

import contextlib
import fcntl
from pathlib import Path

SQLITE = "sqlite:///"


@contextlib.contextmanager
def store_lock(tracking_uri: str):
    if not tracking_uri.startswith(SQLITE):
        yield
        return
    db = Path(tracking_uri[len(SQLITE):])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes
        yield
