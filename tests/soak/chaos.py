"""The seeded chaos schedule: which fault fires when, and for how long.

Full soak (60 minutes and more): a fault every 1-4 minutes, its kind drawn uniformly from
``KINDS``; a worker node stopped 60-120 s, the MLflow server down 30-150 s, the S3 server
stopped 60 s. Short soak (under 20 minutes, the CI variant): each kind exactly once, in a
seeded order, every 15-30 s, with shorter holds (node stopped 35-45 s: still past Ray's health
check, so the node is declared dead; MLflow down 30-40 s; S3 stopped 30 s).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

KINDS = ("node_kill", "node_stop", "mlflow_restart", "s3_stop", "driver_kill")
SHORT_BELOW_MIN = 20


@dataclass
class Fault:
    gap_s: float  # seconds after the previous fault ended (or the sweep started)
    kind: str
    hold_s: float  # how long the node / server stays stopped or down (0: none)
    target: str  # the worker slot for node faults, else ""


def schedule(minutes: float, seed: int, slots: tuple[str, ...]) -> list[Fault]:
    rng = random.Random(seed)
    short = minutes < SHORT_BELOW_MIN
    kinds = rng.sample(KINDS, len(KINDS)) if short else None
    gaps, holds = ((15, 30), {"node_stop": (35, 45), "mlflow_restart": (30, 40), "s3_stop": (30, 30)}) if short else \
        ((60, 240), {"node_stop": (60, 120), "mlflow_restart": (30, 150), "s3_stop": (60, 60)})
    faults = []
    # a full soak stops firing when its minutes are up (the harness); the gaps alone bound the list
    while len(faults) < (len(kinds) if short else int(minutes) + 1):
        kind = kinds[len(faults)] if short else rng.choice(KINDS)
        gap = rng.uniform(*gaps)
        hold = rng.uniform(*holds[kind]) if kind in holds else 0.0
        target = rng.choice(slots) if kind.startswith("node") else ""
        faults.append(Fault(round(gap, 1), kind, round(hold, 1), target))
    return faults
