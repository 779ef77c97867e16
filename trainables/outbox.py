"""The driver's MLflow writes never hold Tune's loop, and MLflow outages never kill a sweep.

``Outbox`` is a mixin for the driver's MLflow writer (``tracking.SweepLogger``; the two are
combined as ``runner.BufferedSweepLogger``, so neither module imports the other): its Tune
hooks only turn into events, which one writer thread applies in order, so Tune goes on
scheduling trials while MLflow answers (a thousand short trials spent most of their sweep's
wall time waiting on MLflow from Tune's loop). While the store is unreachable (beyond the
MLflow client's own retries) the writer keeps the events and retries with exponential
back-off (``BACKOFF_S`` doubling up to ``SUPERPOS_MLFLOW_BACKOFF_MAX_S``, default 60 s) for as
long as the sweep runs; when the sweep ends the driver waits for the store
(``SUPERPOS_MLFLOW_WAIT_S``, default 600 s) until every event is logged, then warns how long the
store was unreachable.

What a driver that dies would lose is on disk first: a trial's end (``complete``, ``error``) is
appended to a journal, with a copy of the trial's last checkpoint, before the hook returns, and
leaves it once logged; ``--resume`` logs what the journal holds first. Starts and results are
not journaled: a trial's end logs its whole history from its checkpoint's metrics, and a trial
that had not ended runs on after a resume and ends later.

Logging is idempotent because the logger is (a child run is looked up by its trial id, a step
is logged only if MLflow lacks it, tags, artifacts and run status are overwritten): an event
that failed halfway is applied again whole, with the logger's caches dropped so it re-reads
MLflow.

One writer per outbox directory in a process: Tune restores the callbacks of a resumed sweep
from its own state, so the restored logger and the runner's share the runner's writer.

The journal lives in ``<storage>/<sweep>/mlflow-outbox/`` on local storage; for gs:// or s3://
storage under ``$SUPERPOS_CACHE/mlflow-outbox/<hash of the storage URI>`` on the driver's disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import threading
import time
from collections import deque
from pathlib import Path
from types import SimpleNamespace

from trainables.spec.trial_config import MEMBERS_KEY

JOURNAL, OUTAGE, FILES = "journal.jsonl", "outage.json", "files"
BACKOFF_S = 1.0
WAIT_ENV, BACKOFF_MAX_ENV = "SUPERPOS_MLFLOW_WAIT_S", "SUPERPOS_MLFLOW_BACKOFF_MAX_S"
#: events whose loss a resume could not make good (module docstring)
JOURNALED = ("complete", "error")


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


class Writer:
    """The thread that applies one outbox directory's events in order; the journal's keeper."""

    def __init__(self, box: "Outbox"):
        self.box, self.dir = box, Path(box.outbox)
        self.cv = threading.Condition()
        self.queue: deque[dict] = deque(self._adopt())  # what an earlier driver could not log
        self.error: BaseException | None = None
        self.stopped = False
        self.delay, self.next_try, self.down = BACKOFF_S, 0.0, False
        self.thread: threading.Thread | None = None
        if self.queue:
            self.start()

    def start(self) -> None:
        with self.cv:
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name=f"mlflow-writer {self.dir.name}", daemon=True)
                self.thread.start()

    def put(self, event: dict) -> None:
        if event["hook"] in JOURNALED:
            self._append(event)
        with self.cv:
            self.queue.append(event)
            self.cv.notify_all()
        self.start()

    def check(self) -> None:
        """Raise, in the caller's thread, what the writer could not log for a reason other than
        the store's availability: a bug to see, not an outage to wait out."""
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        with self.cv:
            self.stopped = True
            self.cv.notify_all()

    def _run(self) -> None:
        try:
            while self._next():
                pass
        except BaseException as e:  # the journal's disk, say: seen by Tune's loop, not lost with the thread
            with self.cv:
                self.error = e
                self.cv.notify_all()

    def _next(self) -> bool:
        """Apply the oldest event, or wait out the back-off; False once the thread is to end."""
        with self.cv:
            while not self.stopped and (not self.queue or time.monotonic() < self.next_try):
                self.cv.wait(None if not self.queue else self.next_try - time.monotonic())
            if self.stopped:
                return False
            event = self.queue[0]
        try:
            self.box.apply(event)
        except Exception as e:
            if not unreachable(e):
                raise
            self.next_try = time.monotonic() + self.delay
            self.delay = min(self.delay * 2, float(os.environ.get(BACKOFF_MAX_ENV, 60)))
            self.down = True
            self.box._down(e)
            return True
        if self.down:  # the store is back
            self.delay, self.down = BACKOFF_S, False
            self.box._up(len(self.queue))
        with self.cv:
            if self.stopped:  # taken over by a new driver: the journal is its
                return False
            if event["hook"] in JOURNALED:
                self._remove(event)
            self.queue.popleft()
            self.cv.notify_all()
        return True

    # -- the journal (appended by Tune's thread, trimmed by the writer: under ``cv``) ------
    def _journal(self) -> list[dict]:
        path = self.dir / JOURNAL
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def _adopt(self) -> list[dict]:
        """The journal an earlier driver left, each event with an id (older journals had none)."""
        events = self._journal()
        if any("id" not in e for e in events):
            events = [{"id": f"earlier-{i}", **e} for i, e in enumerate(events)]
            self._rewrite(events)
        return events

    def _rewrite(self, events: list[dict]) -> None:
        path = self.dir / JOURNAL
        if events:
            tmp = path.with_suffix(".tmp")
            tmp.write_text("".join(json.dumps(e, default=_jsonable) + "\n" for e in events))
            os.replace(tmp, path)
        else:
            path.unlink(missing_ok=True)

    def _append(self, event: dict) -> None:
        with self.cv:
            self.dir.mkdir(parents=True, exist_ok=True)
            with open(self.dir / JOURNAL, "a") as f:
                f.write(json.dumps(event, default=_jsonable) + "\n")
                f.flush()
                os.fsync(f.fileno())

    def _remove(self, event: dict) -> None:
        self._rewrite([e for e in self._journal() if e["id"] != event["id"]])
        if event.get("checkpoint"):
            shutil.rmtree(event["checkpoint"], ignore_errors=True)


#: outbox directory -> its writer, in this process
_WRITERS: dict[str, Writer] = {}
_WRITERS_LOCK = threading.Lock()


class Outbox:
    """Put first in the bases of a ``SweepLogger`` (``super()`` is then the logger, whose hooks
    apply an event and whose ``tracking_uri`` and ``sweep`` name the store in messages)."""

    def __init__(self, tracking_uri: str, parent_run_id: str, sweep: str, outbox: str):
        self.outbox = outbox
        super().__init__(tracking_uri, parent_run_id, sweep)
        with _WRITERS_LOCK:  # a new driver takes the directory over; an unpickled copy joins it
            old = _WRITERS.pop(self._key, None)
            if old is not None:
                old.stop()
            _WRITERS[self._key] = Writer(self)

    def __getstate__(self):
        return super().__getstate__() | {"outbox": self.outbox}

    @property
    def _key(self) -> str:
        return os.path.realpath(self.outbox)

    @property
    def writer(self) -> Writer:
        with _WRITERS_LOCK:
            if self._key not in _WRITERS:
                _WRITERS[self._key] = Writer(self)
            return _WRITERS[self._key]

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
        self.writer.check()

    # -- the outbox -----------------------------------------------------------------------
    def apply(self, event: dict) -> None:
        trial = _trial_of(event)
        hook = event["hook"]
        if hook == "start":
            super().on_trial_start(None, [], trial)
        elif hook == "result":
            super().on_trial_result(None, [], trial, {MEMBERS_KEY: event["members"]})
        else:
            getattr(super(), f"on_trial_{hook}")(None, [], trial)

    def pending(self) -> int:
        """Events not logged yet."""
        return len(self.writer.queue)

    def submit(self, event: dict, trial) -> None:
        writer = self.writer
        writer.check()
        config = {k: str.__str__(v) if isinstance(v, str) else v for k, v in trial.config.items()}
        event = {**event, "trial_id": trial.trial_id, "config": config, "id": f"{trial.trial_id}-{time.time_ns()}"}
        if event["hook"] in JOURNALED and trial.checkpoint is not None:
            # the trial's storage may be cleaned before the event is logged: keep its last state
            keep = self.dir / FILES / event["id"]
            trial.checkpoint.to_directory(str(keep))
            event["checkpoint"] = str(keep)
        writer.put(event)

    def drain(self) -> bool:
        """At the end of a sweep: wait for the store until every event is logged; False if it
        stayed unreachable for ``SUPERPOS_MLFLOW_WAIT_S`` (the journal keeps what matters)."""
        writer = self.writer
        end = time.monotonic() + float(os.environ.get(WAIT_ENV, 600))
        warned = False
        with writer.cv:
            writer.next_try = 0.0  # try at once
            writer.cv.notify_all()
            while writer.queue and writer.error is None and time.monotonic() < end:
                if writer.down and not warned:
                    print(f"MLflow store {self.tracking_uri} unreachable: {len(writer.queue)} event(s) to log; waiting up to "
                          f"{end - time.monotonic():.0f} s for it", file=sys.stderr, flush=True)
                    warned = True
                writer.cv.wait(min(1.0, max(0.0, end - time.monotonic())))
            done = not writer.queue
        writer.check()
        if done:
            self.report_outage()
        return done

    def _down(self, e: BaseException) -> None:
        super()._reset()  # what MLflow holds is re-read when the event is applied again (it may have half-landed)
        outage = self._outage()
        if outage.get("since") is None:
            outage["since"] = time.time()
            print(f"warning: MLflow store {self.tracking_uri} unreachable ({str(e)[:300]}); training goes on, logging waits "
                  f"(trials' ends are kept in {self.dir})", file=sys.stderr, flush=True)
            self._save_outage(outage)

    def _up(self, n: int) -> None:
        outage = self._outage()
        if outage.get("since") is not None:
            outage["total_s"] = outage.get("total_s", 0.0) + time.time() - outage.pop("since")
            outage["replayed"] = outage.get("replayed", 0) + n
            self._save_outage(outage)
            print(f"MLflow store {self.tracking_uri} reachable again: logging {n} waiting event(s)", file=sys.stderr, flush=True)

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
