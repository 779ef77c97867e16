"""Best-hyperparameter files: written by ``superpos search`` (per task, per method), read by
a grid spec's ``include:``."""

from __future__ import annotations

import math
from pathlib import Path

import yaml

from superpos.errors import ConfigError

from trainables.spec.keys import check_flat_keys, where


def load_best(path: str, source: str) -> dict:
    """``{method, model, per_task: {task: {key: value}}}``; applies to trials of ``method``."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{where(source, 'include')}: file {p} not found (written by superpos search)")
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict) or "method" not in data or not isinstance(data.get("per_task"), dict):
        raise ConfigError(f"{where(source, 'include')}: {p} is no best-hyperparameter file (needs method and per_task)")
    for task, values in data["per_task"].items():
        check_flat_keys(values, f"{p}", f"per_task.{task}")
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
