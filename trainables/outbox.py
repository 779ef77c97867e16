"""MLflow outages never kill a sweep: the driver's Tune callbacks go through an outbox on disk.

``Outbox`` is a mixin for the driver's MLflow writer (``tracking.SweepLogger``; the two are
combined as ``runner.BufferedSweepLogger``, so neither module imports the other): its Tune
hooks become events; each
is applied at once while the store answers; when the store is unreachable (beyond the MLflow
client's own retries) the event, and for an ended trial a copy of its last checkpoint, is
appended to a journal on disk, and every later event queues behind it, so nothing is logged out
of order. The journal is retried with exponential back-off (``BACKOFF_S`` doubling up to
``SUPERPOS_MLFLOW_BACKOFF_MAX_S``, default 60 s)
at every step of Tune's loop for as long as the sweep runs; when the sweep ends the driver
waits for the store (``SUPERPOS_MLFLOW_WAIT_S``, default 600 s) until the journal is empty, then
warns how long the store was unreachable. A driver that dies (or gives up waiting) leaves the
journal; ``--resume`` replays it first.

Replaying is idempotent because the logger is (a child run is looked up by its trial id, a step
is logged only if MLflow lacks it, tags, artifacts and run status are overwritten): an event
that failed halfway is replayed whole, with the logger's caches dropped so it re-reads MLflow.

The journal lives in ``<storage>/<sweep>/mlflow-outbox/`` on local storage; for gs:// or s3://
storage under ``$SUPERPOS_CACHE/mlflow-outbox/<hash of the storage URI>`` on the driver's disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from trainables.spec.trial_config import MEMBERS_KEY

JOURNAL, OUTAGE, FILES = "journal.jsonl", "outage.json", "files"
BACKOFF_S = 1.0
WAIT_ENV, BACKOFF_MAX_ENV = "SUPERPOS_MLFLOW_WAIT_S", "SUPERPOS_MLFLOW_BACKOFF_MAX_S"


def outbox_dir(root: str) -> Path:
    if "://" not in root:
        return Path(root) / "mlflow-outbox"
    from superpos.settings import cache_dir

    return cache_dir() / "mlflow-outbox" / hashlib.sha1(root.encode()).hexdigest()[:16]


def unreachable(e: BaseException) -> bool:
    """An error of the store's availability (connection, timeout, 5xx, a locked database), not
    of what was logged."""
    import requests
    from mlflow.exceptions import MlflowException

    if isinstance(e, (requests.exceptions.RequestException, ConnectionError, TimeoutError)):
        return True
    if isinstance(e, MlflowException):
        return e.error_code in ("INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED")
    return type(e).__name__ == "OperationalError"  # sqlalchemy: database is locked / unavailable


def _jsonable(o):
    return o.item() if hasattr(o, "item") else str(o)


def _trial_of(event: dict):
    checkpoint = None
    if event.get("checkpoint"):
        from ray.tune import Checkpoint

        checkpoint = Checkpoint.from_directory(event["checkpoint"])
    return SimpleNamespace(trial_id=event["trial_id"], config=event["config"], checkpoint=checkpoint)


class Outbox:
    """Put first in the bases of a ``SweepLogger`` (``super()`` is then the logger, whose hooks
    apply an event and whose ``tracking_uri`` and ``sweep`` name the store in messages)."""

    def __init__(self, tracking_uri: str, parent_run_id: str, sweep: str, outbox: str):
        self.outbox = outbox
        super().__init__(tracking_uri, parent_run_id, sweep)

    def __getstate__(self):
        return super().__getstate__() | {"outbox": self.outbox}

    def _reset(self) -> None:
        super()._reset()
        self._delay, self._next_try = BACKOFF_S, 0.0

    @property
    def dir(self) -> Path:
        return Path(self.outbox)

    # -- Tune hooks: events ---------------------------------------------------------------
    def on_trial_start(self, iteration, trials, trial, **info):
        self.submit({"hook": "start"}, trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.submit({"hook": "result", "members": result.get(MEMBERS_KEY, {})}, trial)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.submit({"hook": "complete"}, trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.submit({"hook": "error"}, trial)

    def on_step_end(self, iteration, trials, **info):
        self.flush()

    # -- the outbox -----------------------------------------------------------------------
    def apply(self, event: dict, trial=None) -> None:
        trial = trial or _trial_of(event)
        hook = event["hook"]
        if hook == "start":
            super().on_trial_start(None, [], trial)
        elif hook == "result":
            super().on_trial_result(None, [], trial, {MEMBERS_KEY: event["members"]})
        else:
            getattr(super(), f"on_trial_{hook}")(None, [], trial)

    def pending(self) -> int:
        path = self.dir / JOURNAL
        return len(path.read_text().splitlines()) if path.exists() else 0

    def submit(self, event: dict, trial) -> None:
        config = {k: str.__str__(v) if isinstance(v, str) else v for k, v in trial.config.items()}
        event = {**event, "trial_id": trial.trial_id, "config": config}
        if not self.pending():
            try:
                self.apply(event, trial)
                return
            except Exception as e:
                if not unreachable(e):
                    raise
                self._down(e)
        if event["hook"] in ("complete", "error") and trial.checkpoint is not None:
            # the trial's storage may be cleaned before the store is back: keep its last state
            keep = self.dir / FILES / f"{trial.trial_id}-{time.time_ns()}"
            trial.checkpoint.to_directory(str(keep))
            event["checkpoint"] = str(keep)
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / JOURNAL, "a") as f:
            f.write(json.dumps(event, default=_jsonable) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def flush(self, force: bool = False) -> bool:
        """Replay the journal (if its back-off has passed, or ``force``); True once it is empty."""
        path = self.dir / JOURNAL
        if not path.exists():
            return True
        if not force and time.monotonic() < self._next_try:
            return False
        events = [json.loads(line) for line in path.read_text().splitlines()]
        for i, event in enumerate(events):
            try:
                self.apply(event)
            except Exception as e:
                if not unreachable(e):
                    raise
                tmp = path.with_suffix(".tmp")
                tmp.write_text("".join(json.dumps(ev) + "\n" for ev in events[i:]))
                os.replace(tmp, path)
                self._down(e)
                return False
        path.unlink()
        shutil.rmtree(self.dir / FILES, ignore_errors=True)
        self._up(len(events))
        return True

    def drain(self) -> bool:
        """At the end of a sweep (and before a resume): wait for the store until every buffered
        event is logged; False if it stayed unreachable for ``SUPERPOS_MLFLOW_WAIT_S``."""
        if self.flush(force=True):
            self.report_outage()
            return True
        wait = float(os.environ.get(WAIT_ENV, 600))
        print(f"MLflow store {self.tracking_uri} unreachable: {self.pending()} event(s) buffered in {self.dir}; waiting up to {wait:g} s for it", file=sys.stderr, flush=True)
        end = time.monotonic() + wait
        while time.monotonic() < end:
            time.sleep(max(0.0, min(self._next_try, end) - time.monotonic()))
            if self.flush(force=True):
                self.report_outage()
                return True
        return False

    def _down(self, e: BaseException) -> None:
        super()._reset()  # what MLflow holds is re-read on replay (an event may have half-landed)
        self._next_try = time.monotonic() + self._delay
        self._delay = min(self._delay * 2, float(os.environ.get(BACKOFF_MAX_ENV, 60)))
        outage = self._outage()
        if outage.get("since") is None:
            outage["since"] = time.time()
            print(f"warning: MLflow store {self.tracking_uri} unreachable ({str(e)[:300]}); training goes on, logging is buffered in {self.dir}", file=sys.stderr, flush=True)
            self._save_outage(outage)

    def _up(self, n: int) -> None:
        self._delay, self._next_try = BACKOFF_S, 0.0
        outage = self._outage()
        if outage.get("since") is not None:
            outage["total_s"] = outage.get("total_s", 0.0) + time.time() - outage.pop("since")
            outage["replayed"] = outage.get("replayed", 0) + n
            self._save_outage(outage)
            print(f"MLflow store {self.tracking_uri} reachable again: {n} buffered event(s) logged", file=sys.stderr, flush=True)

    def report_outage(self) -> float:
        """Warn once how long the store was unreachable during this sweep; returns the seconds."""
        outage = self._outage()
        total = outage.get("total_s", 0.0)
        if total:
            print(
                f"warning: the MLflow store {self.tracking_uri} was unreachable for {total:.0f} s during sweep {self.sweep}; "
                f"{outage.get('replayed', 0)} buffered event(s) were logged after it came back, none lost",
                file=sys.stderr, flush=True,
            )
            (self.dir / OUTAGE).unlink()
        return total

    def _outage(self) -> dict:
        path = self.dir / OUTAGE
        return json.loads(path.read_text()) if path.exists() else {}

    def _save_outage(self, outage: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / OUTAGE).write_text(json.dumps(outage))
