"""The flat config keys a sweep spec may name (``TrainConfig`` keys and method options, as in
``TrainConfig.flat()``), and how every spec error names its place."""

from __future__ import annotations

import dataclasses

from superpos.config import TrainConfig
from superpos.errors import ConfigError
from superpos.methods import METHODS

CONFIG_KEYS = {f.name for f in dataclasses.fields(TrainConfig)} - {"method_options"}
OPTION_KEYS = {f.name for cfg, _ in METHODS.values() for f in dataclasses.fields(cfg)} - {"lr", "weight_decay"}


def where(source: str, key: str) -> str:
    return f"{source}: key '{key}'"


def check_flat_keys(d: dict, source: str, key: str) -> None:
    unknown = sorted(set(d) - CONFIG_KEYS - OPTION_KEYS)
    if unknown:
        raise ConfigError(
            f"{where(source, key)}: unknown config key(s) {', '.join(unknown)}; allowed: TrainConfig keys"
            f" ({', '.join(sorted(CONFIG_KEYS))}) or method options ({', '.join(sorted(OPTION_KEYS))})"
        )
