"""The typed sweep spec (``SweepSpec``, parsed by ``parse.py``) and its expansion into trials:
grid points, exclusions, the precedence of its layers, fused groups, search studies.

Precedence, lowest first: base, method_options[method], include, grid point.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field

from superpos.config import TrainConfig
from superpos.errors import ConfigError
from superpos.train import SHARED_KEYS

from trainables.sources import check_resolved
from trainables.spec.best import load_best

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_STORAGE_PATH = "ray_results"


@dataclass
class Resources:
    """What one Ray trial (one fused group) reserves: fractional GPUs pack trials on a card."""

    cpu: float = 1.0
    gpu: float = 0.0


@dataclass
class Scheduler:
    """ASHA early stopping (Li et al. 2020); time unit: evaluations (one per epoch by default)."""

    type: str = "none"
    grace_period: int = 1
    reduction_factor: float = 3.0


@dataclass
class Param:
    """One search-space dimension: ``{loguniform: [1e-4, 1]}``, ``{choice: [true, false]}``."""

    kind: str
    args: list


@dataclass
class Member:
    """One trial: its stable id (MLflow ``superpos.trial_id``) and its resolved config."""

    id: str
    config: TrainConfig

    def label(self) -> str:
        c = self.config
        return f"{c.task}-{c.method}-{'d' if c.dropout else 'nd'}-s{c.seed}-{self.id[:6]}"


@dataclass
class SweepSpec:
    name: str
    experiment: str
    source: str = "<spec>"
    description: str = ""
    base: dict = field(default_factory=dict)
    method_options: dict = field(default_factory=dict)
    grid: dict = field(default_factory=dict)
    exclude: list = field(default_factory=list)
    include: list = field(default_factory=list)
    seeds: list = field(default_factory=lambda: [0])
    epochs: int | None = None
    search: str = "grid"
    space: dict = field(default_factory=dict)
    num_samples: int = 1
    metric: str = "best_score"
    scheduler: Scheduler = field(default_factory=Scheduler)
    resources: Resources = field(default_factory=Resources)
    tracking_uri: str = DEFAULT_TRACKING_URI
    storage_path: str = DEFAULT_STORAGE_PATH
    group_size: int = 1
    max_concurrent: int = 0
    max_failures: int = 2
    #: where ``superpos search`` writes the best hyperparameters (a file ``include`` reads)
    best_file: str | None = None
    #: method -> source prompts from another sweep (``method_options.M.source_prompts: {sweep, tasks}``; trainables/sources.py)
    source_sweeps: dict = field(default_factory=dict)

    # -- trials ------------------------------------------------------------------------
    def base_config(self) -> dict:
        base = dict(self.base)
        if self.epochs is not None:
            base["epochs"] = self.epochs
        return base

    def points(self) -> list[dict]:
        """Grid points (axis values, seeds included), exclusions applied."""
        axes = dict(self.grid)
        axes.setdefault("seed", list(self.seeds))
        names = list(axes)
        out = []
        for values in itertools.product(*(axes[n] for n in names)):
            point = dict(zip(names, values))
            merged = self.merged(point)
            if not any(all(merged.get(k, _MISSING) == v for k, v in ex.items()) for ex in self.exclude):
                out.append(point)
        return out

    def merged(self, point: dict) -> dict:
        """The flat config of one grid point: base < method_options < include < point."""
        flat = self.base_config()
        method = point.get("method", flat.get("method", TrainConfig.method))
        flat.update(self.method_options.get(method, {}))
        if method in self.source_sweeps:
            flat["source_prompts"] = self.source_sweeps[method].value(point.get("model", flat.get("model", TrainConfig.model)))
        task = point.get("task", flat.get("task", TrainConfig.task))
        for best in self._includes():
            if best.get("method") == method:
                flat.update(best.get("per_task", {}).get(task, {}))
        flat.update(point)
        return flat

    def member(self, flat: dict, where: str) -> Member:
        check_resolved(flat, where)
        try:
            config = TrainConfig.from_flat(flat, where).resolve()
        except ConfigError as e:  # some core checks do not say where: name the file and point
            raise e if where in str(e) else ConfigError(f"{where}: {e}") from None
        return Member(trial_id(config), config)

    def members(self, data_dir: str | None = None) -> list[Member]:
        """Every grid trial, resolved and validated (names the file and the grid point)."""
        members, seen = [], {}
        for point in self.points():
            flat = self.merged(point)
            if data_dir is not None:
                flat["data_dir"] = data_dir
            m = self.member(flat, f"{self.source}: grid point {json.dumps(point)}")
            if m.id in seen:
                raise ConfigError(f"{self.source}: grid points {seen[m.id]} and {json.dumps(point)} give the same trial")
            seen[m.id] = json.dumps(point)
            members.append(m)
        return members

    def groups(self, data_dir: str | None = None) -> list[list[Member]]:
        """Trials packed into fused groups of up to ``group_size`` that share one backbone."""
        by_key: dict[tuple, list[Member]] = {}
        for m in self.members(data_dir):
            key = tuple(json.dumps(getattr(m.config, k)) for k in SHARED_KEYS)
            # full fine-tuning changes the backbone, so it never fuses (train.Trainer refuses it)
            key += (m.id,) if m.config.method == "full" else ()
            by_key.setdefault(key, []).append(m)
        return [ms[i : i + self.group_size] for ms in by_key.values() for i in range(0, len(ms), self.group_size)]

    def studies(self, data_dir: str | None = None) -> list[tuple[str, dict]]:
        """Search mode: (task, flat base config) per study; the space's keys are sampled."""
        out = []
        for point in self.points():
            flat = self.merged(point)
            if data_dir is not None:
                flat["data_dir"] = data_dir
            probe = dict(flat, **{k: p.args[0] for k, p in self.space.items()})
            self.member(probe, f"{self.source}: study {json.dumps(point)}")  # validates the keys
            out.append((flat.get("task", TrainConfig.task), flat))
        return out

    def _includes(self) -> list[dict]:
        return [load_best(p, self.source) for p in self.include]


_MISSING = object()


def trial_id(config: TrainConfig) -> str:
    """A stable id from the resolved config (minus data_dir: a sweep moved to another disk
    or node keeps its ids, so --resume and the MLflow lookup still match)."""
    flat = config.flat()
    flat.pop("data_dir")
    return hashlib.sha1(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:12]
