"""Parsing: a ``sweeps/*.yaml`` file (or its raw mapping) checked key by key into a
``SweepSpec``; every error names the file and the key, before any work.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import yaml

from superpos.errors import ConfigError
from superpos.methods import METHODS

from trainables.sources import parse_source_sweeps
from trainables.spec.expand import Param, Resources, Scheduler, SweepSpec
from trainables.spec.keys import check_flat_keys, where

SEARCHES = ("grid", "random", "optuna")
SCHEDULERS = ("none", "asha")
#: search-space kinds; bounds are inclusive for the integer kinds
SPACE_KINDS = ("uniform", "loguniform", "randint", "lograndint", "choice")
#: names that are safe as one path component on every filesystem and object store
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_name(value: str, source: str, key: str) -> str:
    """A spec's ``name`` and ``experiment`` become path components under the storage path (and
    MLflow names): a safe character set, no separators, no ``..``."""
    if not NAME_PATTERN.fullmatch(value) or ".." in value:
        raise ConfigError(
            f"{source}: key '{key}': {value!r} is not a safe name; allowed: 1-128 characters from "
            "A-Z a-z 0-9 . _ -, starting with a letter or digit, no '..' (it names folders under the storage path)"
        )
    return value


_SPEC_KEYS = {f.name for f in dataclasses.fields(SweepSpec)} - {"source", "source_sweeps"}


def _check_type(value, types, source: str, key: str, what: str):
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in _as_tuple(types)):
        raise ConfigError(f"{where(source, key)} must be {what}, got {value!r}")
    return value


def _as_tuple(t):
    return t if isinstance(t, tuple) else (t,)


def _param(name: str, raw, source: str) -> Param:
    key = f"space.{name}"
    if not isinstance(raw, dict) or len(raw) != 1:
        raise ConfigError(f"{where(source, key)} must be one of {{{' | '.join(SPACE_KINDS)}: [...]}}, got {raw!r}")
    (kind, args), = raw.items()
    if kind not in SPACE_KINDS:
        raise ConfigError(f"{where(source, key)}: unknown space kind {kind!r}; allowed: {', '.join(SPACE_KINDS)}")
    if not isinstance(args, list) or not args:
        raise ConfigError(f"{where(source, key)}: {kind} needs a list of values, got {args!r}")
    if kind != "choice":
        if len(args) != 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
            raise ConfigError(f"{where(source, key)}: {kind} needs [low, high] numbers, got {args!r}")
        lo, hi = args
        if not lo < hi:
            raise ConfigError(f"{where(source, key)}: bad range [{lo}, {hi}]: low must be < high")
        if kind.startswith("log") and lo <= 0:
            raise ConfigError(f"{where(source, key)}: bad range [{lo}, {hi}]: {kind} needs low > 0")
        if kind.endswith("randint") and not all(isinstance(a, int) for a in args):
            raise ConfigError(f"{where(source, key)}: {kind} needs integer bounds, got {args!r}")
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
            raise ConfigError(f"{where(source, key)} is required")
        check_name(_check_type(raw[key], str, source, key, "a string"), source, key)
    kw: dict[str, Any] = {"name": raw["name"], "experiment": raw["experiment"], "source": source}
    for key in ("description", "tracking_uri", "storage_path", "metric"):
        if key in raw:
            kw[key] = _check_type(raw[key], str, source, key, "a string")
    if "best_file" in raw:
        kw["best_file"] = _check_type(raw["best_file"], str, source, "best_file", "a path")

    kw["base"] = dict(_check_type(raw.get("base", {}), dict, source, "base", "a mapping of config keys"))
    check_flat_keys(kw["base"], source, "base")
    opts = _check_type(raw.get("method_options", {}), dict, source, "method_options", "a mapping method -> options")
    for method, o in opts.items():
        if method not in METHODS:
            raise ConfigError(f"{where(source, 'method_options')}: unknown method {method!r}; allowed: {', '.join(METHODS)}")
        _check_type(o, dict, source, f"method_options.{method}", "a mapping of options")
        allowed = {f.name for f in dataclasses.fields(METHODS[method][0])}
        bad = sorted(set(o) - allowed)
        if bad:
            raise ConfigError(f"{where(source, f'method_options.{method}')}: unknown option(s) {', '.join(bad)}; allowed: {', '.join(sorted(allowed))}")
    kw["method_options"] = {k: dict(v) for k, v in opts.items()}
    kw["source_sweeps"] = parse_source_sweeps(kw["method_options"], source)

    grid = _check_type(raw.get("grid", {}), dict, source, "grid", "a mapping key -> list of values")
    check_flat_keys(grid, source, "grid")
    for k, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where(source, f'grid.{k}')} must be a non-empty list, got {values!r}")
    if "seed" in grid and "seeds" in raw:
        raise ConfigError(f"{where(source, 'seeds')}: give seeds either as 'seeds' or as grid axis 'seed', not both")
    kw["grid"] = {k: list(v) for k, v in grid.items()}

    exclude = _check_type(raw.get("exclude", []), list, source, "exclude", "a list of partial configs")
    for i, ex in enumerate(exclude):
        _check_type(ex, dict, source, f"exclude[{i}]", "a mapping (a partial config)")
        if not ex:
            raise ConfigError(f"{where(source, f'exclude[{i}]')} is empty: it would exclude every trial")
        check_flat_keys(ex, source, f"exclude[{i}]")
    kw["exclude"] = [dict(e) for e in exclude]

    includes = _check_type(raw.get("include", []), list, source, "include", "a list of files")
    base_dir = Path(source).parent if source != "<spec>" else Path.cwd()
    kw["include"] = [str((base_dir / p).resolve()) if not Path(p).is_absolute() else p for p in includes]

    if "seeds" in raw:
        seeds = _check_type(raw["seeds"], list, source, "seeds", "a list of integers")
        if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
            raise ConfigError(f"{where(source, 'seeds')} must be a non-empty list of integers, got {seeds!r}")
        kw["seeds"] = list(seeds)
    for key, lo in (("epochs", 1), ("num_samples", 1), ("group_size", 1), ("max_concurrent", 0), ("max_failures", -1)):
        if key in raw:
            v = _check_type(raw[key], int, source, key, "an integer")
            if v < lo:
                raise ConfigError(f"{where(source, key)} must be >= {lo}, got {v}")
            kw[key] = v

    search = raw.get("search", "grid")
    if search not in SEARCHES:
        raise ConfigError(f"{where(source, 'search')}: unknown search {search!r}; allowed: {', '.join(SEARCHES)}")
    kw["search"] = search
    space = _check_type(raw.get("space", {}), dict, source, "space", "a mapping key -> {kind: [...]}")
    check_flat_keys(space, source, "space")
    kw["space"] = {k: _param(k, v, source) for k, v in space.items()}

    sched = _check_type(raw.get("scheduler", {}), (dict, str), source, "scheduler", "none, asha or a mapping")
    sched = {"type": sched} if isinstance(sched, str) else dict(sched)
    bad = sorted(set(sched) - {f.name for f in dataclasses.fields(Scheduler)})
    if bad:
        raise ConfigError(f"{where(source, 'scheduler')}: unknown key(s) {', '.join(bad)}; allowed: type, grace_period, reduction_factor")
    if sched.get("type", "none") not in SCHEDULERS:
        raise ConfigError(f"{where(source, 'scheduler.type')}: unknown scheduler {sched['type']!r}; allowed: {', '.join(SCHEDULERS)}")
    kw["scheduler"] = Scheduler(**sched)
    if kw["scheduler"].grace_period < 1 or kw["scheduler"].reduction_factor <= 1:
        raise ConfigError(f"{where(source, 'scheduler')}: need grace_period >= 1 and reduction_factor > 1")

    res = _check_type(raw.get("resources", {}), dict, source, "resources", "a mapping {cpu, gpu}")
    bad = sorted(set(res) - {"cpu", "gpu"})
    if bad:
        raise ConfigError(f"{where(source, 'resources')}: unknown key(s) {', '.join(bad)}; allowed: cpu, gpu")
    kw["resources"] = Resources(**res)
    r = kw["resources"]
    if r.cpu < 0 or r.gpu < 0 or (r.gpu > 1 and r.gpu != int(r.gpu)):
        raise ConfigError(f"{where(source, 'resources')}: bad values cpu={r.cpu}, gpu={r.gpu} (fractional gpu only below 1)")

    spec = SweepSpec(**kw)
    _check_modes(spec)
    return spec


def _check_modes(spec: SweepSpec) -> None:
    src = spec.source
    if spec.metric not in ("score", "best_score"):
        raise ConfigError(f"{where(src, 'metric')}: unknown metric {spec.metric!r}; allowed: best_score (best validation score so far, the paper's), score")
    if spec.search == "grid":
        if spec.space:
            raise ConfigError(f"{where(src, 'space')}: a search space needs search: random or optuna")
        if spec.num_samples != 1:
            raise ConfigError(f"{where(src, 'num_samples')}: grid sweeps repeat with 'seeds', not num_samples")
        if spec.scheduler.type != "none" and spec.group_size > 1:
            raise ConfigError(f"{where(src, 'scheduler')}: ASHA stops a fused group as a whole; use group_size: 1")
        return
    if not spec.space:
        raise ConfigError(f"{where(src, 'space')} is required for search: {spec.search}")
    if spec.group_size != 1:
        raise ConfigError(f"{where(src, 'group_size')}: searches run one trial per Ray trial (group_size: 1)")
    if set(spec.grid) - {"task"}:
        raise ConfigError(f"{where(src, 'grid')}: a search runs one study per task; only 'task' may vary, got {', '.join(sorted(spec.grid))}")
    if len(spec.seeds) != 1:
        raise ConfigError(f"{where(src, 'seeds')}: a search uses one seed, got {spec.seeds}")
    if "method" not in spec.base:
        raise ConfigError(f"{where(src, 'base.method')} is required for a search (best values are per method)")


def load_spec(path: str | Path) -> SweepSpec:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep spec {path} not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    return parse_spec(raw, str(path))
