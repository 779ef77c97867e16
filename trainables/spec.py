"""Sweep specs: the typed schema of a ``sweeps/*.yaml`` file and its expansion into trials.

A spec names a ``base`` config (any ``TrainConfig`` key or method option, in the flat view of
``TrainConfig.flat()``), ``grid`` axes whose cartesian product (times ``seeds``) gives the
trials, ``exclude`` partial configs that drop grid points (the paper's exclusions: ATTEMPT
never runs on QQP, QNLI, MNLI, SST-2; full fine-tuning only with dropout on; SuperPos paper
section 3.4), ``method_options`` that apply only to the named method, and ``include`` files
(best hyperparameters written by ``superpos search``). ``search: random | optuna`` turns the
spec into one study per task over a ``space``. Every error names the file and the key.

Precedence, lowest first: base, method_options[method], include, grid point.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from superpos.config import TrainConfig
from superpos.errors import ConfigError
from superpos.methods import METHODS
from superpos.train import SHARED_KEYS

from trainables.chain import check_resolved, parse_source_sweeps
from trainables.guards import check_name

SEARCHES = ("grid", "random", "optuna")
SCHEDULERS = ("none", "asha")
#: search-space kinds; bounds are inclusive for the integer kinds
SPACE_KINDS = ("uniform", "loguniform", "randint", "lograndint", "choice")
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_STORAGE_PATH = "ray_results"

_CONFIG_KEYS = {f.name for f in dataclasses.fields(TrainConfig)} - {"method_options"}
_OPTION_KEYS = {f.name for cfg, _ in METHODS.values() for f in dataclasses.fields(cfg)} - {"lr", "weight_decay"}


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

    def to_tune(self):
        """The Ray Tune domain (Ray's integer upper bounds are exclusive; ours are inclusive)."""
        from ray import tune

        if self.kind == "choice":
            return tune.choice(self.args)
        lo, hi = self.args
        return {
            "uniform": lambda: tune.uniform(lo, hi),
            "loguniform": lambda: tune.loguniform(lo, hi),
            "randint": lambda: tune.randint(lo, hi + 1),
            "lograndint": lambda: tune.lograndint(lo, hi + 1),
        }[self.kind]()


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
    #: method -> source prompts from another sweep (``method_options.M.source_prompts: {sweep, tasks}``; trainables/chain.py)
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


# -- loading ----------------------------------------------------------------------------
_SPEC_KEYS = {f.name for f in dataclasses.fields(SweepSpec)} - {"source", "source_sweeps"}


def _where(source: str, key: str) -> str:
    return f"{source}: key '{key}'"


def _check_type(value, types, source: str, key: str, what: str):
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in _as_tuple(types)):
        raise ConfigError(f"{_where(source, key)} must be {what}, got {value!r}")
    return value


def _as_tuple(t):
    return t if isinstance(t, tuple) else (t,)


def _check_flat_keys(d: dict, source: str, key: str) -> None:
    unknown = sorted(set(d) - _CONFIG_KEYS - _OPTION_KEYS)
    if unknown:
        raise ConfigError(
            f"{_where(source, key)}: unknown config key(s) {', '.join(unknown)}; allowed: TrainConfig keys"
            f" ({', '.join(sorted(_CONFIG_KEYS))}) or method options ({', '.join(sorted(_OPTION_KEYS))})"
        )


def _param(name: str, raw, source: str) -> Param:
    key = f"space.{name}"
    if not isinstance(raw, dict) or len(raw) != 1:
        raise ConfigError(f"{_where(source, key)} must be one of {{{' | '.join(SPACE_KINDS)}: [...]}}, got {raw!r}")
    (kind, args), = raw.items()
    if kind not in SPACE_KINDS:
        raise ConfigError(f"{_where(source, key)}: unknown space kind {kind!r}; allowed: {', '.join(SPACE_KINDS)}")
    if not isinstance(args, list) or not args:
        raise ConfigError(f"{_where(source, key)}: {kind} needs a list of values, got {args!r}")
    if kind != "choice":
        if len(args) != 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
            raise ConfigError(f"{_where(source, key)}: {kind} needs [low, high] numbers, got {args!r}")
        lo, hi = args
        if not lo < hi:
            raise ConfigError(f"{_where(source, key)}: bad range [{lo}, {hi}]: low must be < high")
        if kind.startswith("log") and lo <= 0:
            raise ConfigError(f"{_where(source, key)}: bad range [{lo}, {hi}]: {kind} needs low > 0")
        if kind.endswith("randint") and not all(isinstance(a, int) for a in args):
            raise ConfigError(f"{_where(source, key)}: {kind} needs integer bounds, got {args!r}")
    return Param(kind, list(args))


def parse_spec(raw: Any, source: str = "<spec>") -> SweepSpec:
    """Validate a spec's raw mapping; every error names ``source`` and the key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a sweep spec must be a mapping, got {type(raw).__name__}")
    unknown = sorted(set(raw) - _SPEC_KEYS)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_SPEC_KEYS))}")
    for key in ("name", "experiment"):
        if key not in raw:
            raise ConfigError(f"{_where(source, key)} is required")
        check_name(_check_type(raw[key], str, source, key, "a string"), source, key)
    kw: dict[str, Any] = {"name": raw["name"], "experiment": raw["experiment"], "source": source}
    for key in ("description", "tracking_uri", "storage_path", "metric"):
        if key in raw:
            kw[key] = _check_type(raw[key], str, source, key, "a string")
    if "best_file" in raw:
        kw["best_file"] = _check_type(raw["best_file"], str, source, "best_file", "a path")

    kw["base"] = dict(_check_type(raw.get("base", {}), dict, source, "base", "a mapping of config keys"))
    _check_flat_keys(kw["base"], source, "base")
    opts = _check_type(raw.get("method_options", {}), dict, source, "method_options", "a mapping method -> options")
    for method, o in opts.items():
        if method not in METHODS:
            raise ConfigError(f"{_where(source, 'method_options')}: unknown method {method!r}; allowed: {', '.join(METHODS)}")
        _check_type(o, dict, source, f"method_options.{method}", "a mapping of options")
        allowed = {f.name for f in dataclasses.fields(METHODS[method][0])}
        bad = sorted(set(o) - allowed)
        if bad:
            raise ConfigError(f"{_where(source, f'method_options.{method}')}: unknown option(s) {', '.join(bad)}; allowed: {', '.join(sorted(allowed))}")
    kw["method_options"] = {k: dict(v) for k, v in opts.items()}
    kw["source_sweeps"] = parse_source_sweeps(kw["method_options"], source)

    grid = _check_type(raw.get("grid", {}), dict, source, "grid", "a mapping key -> list of values")
    _check_flat_keys(grid, source, "grid")
    for k, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{_where(source, f'grid.{k}')} must be a non-empty list, got {values!r}")
    if "seed" in grid and "seeds" in raw:
        raise ConfigError(f"{_where(source, 'seeds')}: give seeds either as 'seeds' or as grid axis 'seed', not both")
    kw["grid"] = {k: list(v) for k, v in grid.items()}

    exclude = _check_type(raw.get("exclude", []), list, source, "exclude", "a list of partial configs")
    for i, ex in enumerate(exclude):
        _check_type(ex, dict, source, f"exclude[{i}]", "a mapping (a partial config)")
        if not ex:
            raise ConfigError(f"{_where(source, f'exclude[{i}]')} is empty: it would exclude every trial")
        _check_flat_keys(ex, source, f"exclude[{i}]")
    kw["exclude"] = [dict(e) for e in exclude]

    includes = _check_type(raw.get("include", []), list, source, "include", "a list of files")
    base_dir = Path(source).parent if source != "<spec>" else Path.cwd()
    kw["include"] = [str((base_dir / p).resolve()) if not Path(p).is_absolute() else p for p in includes]

    if "seeds" in raw:
        seeds = _check_type(raw["seeds"], list, source, "seeds", "a list of integers")
        if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
            raise ConfigError(f"{_where(source, 'seeds')} must be a non-empty list of integers, got {seeds!r}")
        kw["seeds"] = list(seeds)
    for key, lo in (("epochs", 1), ("num_samples", 1), ("group_size", 1), ("max_concurrent", 0), ("max_failures", -1)):
        if key in raw:
            v = _check_type(raw[key], int, source, key, "an integer")
            if v < lo:
                raise ConfigError(f"{_where(source, key)} must be >= {lo}, got {v}")
            kw[key] = v

    search = raw.get("search", "grid")
    if search not in SEARCHES:
        raise ConfigError(f"{_where(source, 'search')}: unknown search {search!r}; allowed: {', '.join(SEARCHES)}")
    kw["search"] = search
    space = _check_type(raw.get("space", {}), dict, source, "space", "a mapping key -> {kind: [...]}")
    _check_flat_keys(space, source, "space")
    kw["space"] = {k: _param(k, v, source) for k, v in space.items()}

    sched = _check_type(raw.get("scheduler", {}), (dict, str), source, "scheduler", "none, asha or a mapping")
    sched = {"type": sched} if isinstance(sched, str) else dict(sched)
    bad = sorted(set(sched) - {f.name for f in dataclasses.fields(Scheduler)})
    if bad:
        raise ConfigError(f"{_where(source, 'scheduler')}: unknown key(s) {', '.join(bad)}; allowed: type, grace_period, reduction_factor")
    if sched.get("type", "none") not in SCHEDULERS:
        raise ConfigError(f"{_where(source, 'scheduler.type')}: unknown scheduler {sched['type']!r}; allowed: {', '.join(SCHEDULERS)}")
    kw["scheduler"] = Scheduler(**sched)
    if kw["scheduler"].grace_period < 1 or kw["scheduler"].reduction_factor <= 1:
        raise ConfigError(f"{_where(source, 'scheduler')}: need grace_period >= 1 and reduction_factor > 1")

    res = _check_type(raw.get("resources", {}), dict, source, "resources", "a mapping {cpu, gpu}")
    bad = sorted(set(res) - {"cpu", "gpu"})
    if bad:
        raise ConfigError(f"{_where(source, 'resources')}: unknown key(s) {', '.join(bad)}; allowed: cpu, gpu")
    kw["resources"] = Resources(**res)
    r = kw["resources"]
    if r.cpu < 0 or r.gpu < 0 or (r.gpu > 1 and r.gpu != int(r.gpu)):
        raise ConfigError(f"{_where(source, 'resources')}: bad values cpu={r.cpu}, gpu={r.gpu} (fractional gpu only below 1)")

    spec = SweepSpec(**kw)
    _check_modes(spec)
    return spec


def _check_modes(spec: SweepSpec) -> None:
    src = spec.source
    if spec.metric not in ("score", "best_score"):
        raise ConfigError(f"{_where(src, 'metric')}: unknown metric {spec.metric!r}; allowed: best_score (best validation score so far, the paper's), score")
    if spec.search == "grid":
        if spec.space:
            raise ConfigError(f"{_where(src, 'space')}: a search space needs search: random or optuna")
        if spec.num_samples != 1:
            raise ConfigError(f"{_where(src, 'num_samples')}: grid sweeps repeat with 'seeds', not num_samples")
        if spec.scheduler.type != "none" and spec.group_size > 1:
            raise ConfigError(f"{_where(src, 'scheduler')}: ASHA stops a fused group as a whole; use group_size: 1")
        return
    if not spec.space:
        raise ConfigError(f"{_where(src, 'space')} is required for search: {spec.search}")
    if spec.group_size != 1:
        raise ConfigError(f"{_where(src, 'group_size')}: searches run one trial per Ray trial (group_size: 1)")
    if set(spec.grid) - {"task"}:
        raise ConfigError(f"{_where(src, 'grid')}: a search runs one study per task; only 'task' may vary, got {', '.join(sorted(spec.grid))}")
    if len(spec.seeds) != 1:
        raise ConfigError(f"{_where(src, 'seeds')}: a search uses one seed, got {spec.seeds}")
    if "method" not in spec.base:
        raise ConfigError(f"{_where(src, 'base.method')} is required for a search (best values are per method)")


def load_spec(path: str | Path) -> SweepSpec:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep spec {path} not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    return parse_spec(raw, str(path))


# -- best-hyperparameter files (written by search, read by include) ---------------------
def load_best(path: str, source: str) -> dict:
    """``{method, model, per_task: {task: {key: value}}}``; applies to trials of ``method``."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{_where(source, 'include')}: file {p} not found (written by superpos search)")
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict) or "method" not in data or not isinstance(data.get("per_task"), dict):
        raise ConfigError(f"{_where(source, 'include')}: {p} is no best-hyperparameter file (needs method and per_task)")
    for task, values in data["per_task"].items():
        _check_flat_keys(values, f"{p}", f"per_task.{task}")
    return data


def write_best(path: Path, method: str, model: str, per_task: dict, sweep: str, tied: dict | None = None) -> None:
    """Merge ``per_task`` into the file (a search resumed or run per task adds to it);
    ``tied``: tasks whose trials all tied, with no best values (under key ``tied``)."""
    data = {"method": method, "model": model, "per_task": {}, "tied": {}}
    if path.is_file():
        old = yaml.safe_load(path.read_text()) or {}
        if old.get("method") == method:
            data["per_task"].update(old.get("per_task", {}))
            data["tied"].update(old.get("tied") or {})
    data["per_task"].update(per_task)
    data["tied"].update(tied or {})
    for task in data["tied"].keys() & per_task.keys():
        del data["tied"][task]
    for task in tied or {}:
        data["per_task"].pop(task, None)
    if not data["tied"]:
        del data["tied"]
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# best hyperparameters per task from `superpos search` (sweep {sweep}); use with `include:` in a sweep spec\n"
    path.write_text(header + yaml.safe_dump(data, sort_keys=True))


def round_best(value):
    """Readable numbers in the best file: lr to 4 significant digits."""
    if isinstance(value, float) and math.isfinite(value) and value != 0:
        return float(f"{value:.4g}")
    return value
