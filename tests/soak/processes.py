"""Every process the soak uses, started and ended by PID.

Each command starts in its own session (``start_new_session``), so the session id of every
process it spawns is the PID of what we started; a process that left its session (Ray's
daemons may) is still found as a descendant, which ``Processes.watch`` records while it runs.
``end_all`` SIGKILLs every recorded PID that is still the same process (its create time is
kept), and is what the harness calls in its ``finally``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil


@dataclass
class Started:
    name: str
    proc: subprocess.Popen
    #: every PID seen in its session or below it: pid -> create time (a reused PID is not ours)
    seen: dict[int, float] = field(default_factory=dict)


class Processes:
    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.started: list[Started] = []

    def start(self, name: str, cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> Started:
        log = open(self.log_dir / f"{name}.log", "ab")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)
        log.close()
        entry = Started(name, proc)
        self.started.append(entry)
        self.watch()
        return entry

    def members(self, entry: Started) -> list[psutil.Process]:
        """The live processes of one started command: its session, its descendants, and what was
        seen of them before."""
        found: dict[int, psutil.Process] = {}
        for p in psutil.process_iter(["pid"]):
            try:
                if os.getsid(p.pid) == entry.proc.pid:
                    found[p.pid] = p
            except (ProcessLookupError, PermissionError, psutil.Error):
                continue
        for pid in [entry.proc.pid, *entry.seen, *found]:
            try:
                root = psutil.Process(pid)
                if pid in entry.seen and root.create_time() != entry.seen[pid]:
                    continue  # the PID was reused by another process
                found[pid] = root
                for child in root.children(recursive=True):
                    found[child.pid] = child
            except psutil.Error:
                continue
        live = []
        for pid, p in found.items():
            try:
                entry.seen.setdefault(pid, p.create_time())
                if p.status() != psutil.STATUS_ZOMBIE:
                    live.append(p)
            except psutil.Error:
                continue
        return live

    def watch(self) -> None:
        for entry in self.started:
            self.members(entry)

    def signal(self, entry: Started, sig: int) -> list[int]:
        pids = []
        for p in self.members(entry):
            try:
                p.send_signal(sig)
                pids.append(p.pid)
            except psutil.Error:
                pass
        return pids

    def kill(self, entry: Started, timeout: float = 30) -> None:
        procs = self.members(entry)
        for p in procs:
            try:
                p.send_signal(signal.SIGCONT)  # a stopped process still dies, but resume it anyway
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(procs, timeout=timeout)
        try:
            entry.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

    def end_all(self) -> list[int]:
        """SIGKILL everything ever started here that still lives; the PIDs recorded."""
        self.watch()
        for entry in reversed(self.started):
            self.kill(entry)
        return self.recorded()

    def recorded(self) -> list[int]:
        return sorted({pid for e in self.started for pid in e.seen})

    def alive(self) -> list[int]:
        """Recorded PIDs still running as the same process (what ``end_all`` must leave empty)."""
        out = []
        for e in self.started:
            for pid, created in e.seen.items():
                try:
                    p = psutil.Process(pid)
                    if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                        out.append(pid)
                except psutil.Error:
                    continue
        return out


def wait_for(predicate, timeout: float, what: str, every: float = 0.5):
    """Poll until ``predicate()`` is truthy (the event); its value is returned."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)
