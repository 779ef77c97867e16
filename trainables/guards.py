"""Checks a sweep or search passes before anything is launched or written: inputs that cannot
change between retries are refused here, once, instead of failing every Ray trial
``max_failures`` times.

* ``check_trials``: SuperPos' m (also a searched m's upper bound) fits the model's
  real vocabulary (read from its tokenizer and config only, never its weights).
* ``check_scheduler``: ASHA's grace period fits the epochs (Ray's own check is an assertion).
* ``check_size``: grids above ``CONFIRM_ABOVE`` trials need ``--yes``.
* ``check_resources``: what one trial reserves against what the Ray cluster has: refused on a
  local cluster (it never grows), a warning on a real one (an autoscaler may add nodes).
* ``fingerprint``: the hash of the resolved spec kept in the sweep record, so ``--resume``
  refuses a storage path that another spec (or someone else) left.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys

from superpos.errors import ConfigError

#: grids (or searches) with more trials than this need ``--yes``
CONFIRM_ABOVE = 1000


def vocab_size(model: str) -> int | None:
    """Real tokens of ``model`` (``superpos.backbones.vocab_size_of``: tokenizer and config
    files only); None when they cannot be read here (an uncached hub model offline: the trial
    itself will say so)."""
    from superpos.backbones import vocab_size_of

    try:
        return vocab_size_of(model)
    except ConfigError:
        return None


def check_trials(configs, where: str, space: dict | None = None) -> None:
    """m within 1..vocabulary (also the upper bound of a searched m), from the tokenizer alone.
    lr, also a searched one's bounds, is checked with each (probe) config: MethodConfig.validate."""
    for c in configs:
        if c.method != "superpos":
            continue
        m = max(space["m"].args) if space and "m" in space else c.method_options.get("m")
        vocab = vocab_size(c.model) if m is not None else None
        if vocab is not None and m > vocab:
            key = "space.m" if space and "m" in space else "m"
            raise ConfigError(f"{where}: key '{key}': m = {m} exceeds the vocabulary of {c.model} ({vocab} real tokens); allowed: 1..{vocab}")


def check_scheduler(spec, epochs: int, flags: tuple[str, str] = ("scheduler.grace_period", "epochs")) -> None:
    """ASHA stops no trial before ``grace_period`` evaluations; a grace period past the last
    evaluation (one per epoch) is a contradiction Ray only asserts on, after launch."""
    if spec.scheduler.type != "asha":
        return
    grace, (g_flag, e_flag) = spec.scheduler.grace_period, flags
    if grace > epochs:
        raise ConfigError(f"{spec.source}: {g_flag} = {grace} exceeds {e_flag} = {epochs}; allowed: {g_flag} in 1..{epochs} (ASHA's grace period counts epochs)")


def check_size(n_trials: int, yes: bool, source: str) -> None:
    if n_trials > CONFIRM_ABOVE and not yes:
        raise ConfigError(f"{source}: {n_trials} trials (more than {CONFIRM_ABOVE}); check the grid, then pass --yes to launch them")


def check_resources(resources, local: bool, source: str) -> None:
    """Run inside a Ray session: can the cluster ever place one trial?"""
    import ray

    have = ray.cluster_resources()
    need = {"CPU": resources.cpu, "GPU": resources.gpu}
    short = {k: (v, have.get(k, 0.0)) for k, v in need.items() if v > have.get(k, 0.0)}
    if not short:
        return
    what = ", ".join(f"{k.lower()} {v:g} (cluster has {h:g})" for k, (v, h) in short.items())
    if local:
        raise ConfigError(f"{source}: key 'resources': one trial needs {what}; a local Ray cluster never grows, so no trial could start")
    print(f"warning: {source}: one trial needs {what}; trials wait until the autoscaler adds such a node", file=sys.stderr, flush=True)


#: spec fields that say where a sweep runs, not what it runs (a resume may change them)
_LOCATION = ("source", "description", "tracking_uri", "storage_path", "best_file", "include")


def fingerprint(spec, trials: list[dict]) -> str:
    """sha256 of the resolved spec: its settings and every trial's (or study's) flat config,
    without data_dir and the location fields, so the same sweep resumed from another
    checkout, data disk or head node matches."""
    settings = {k: v for k, v in dataclasses.asdict(spec).items() if k not in _LOCATION}
    trials = [{k: v for k, v in t.items() if k != "data_dir"} for t in trials]
    blob = json.dumps({"spec": settings, "trials": trials}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()
