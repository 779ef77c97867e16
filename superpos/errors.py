"""One exception type for bad input: the CLI prints its message and exits 2 before any work starts."""

import math


class ConfigError(ValueError):
    """Bad user input. The message names the value, the allowed values and the file or key."""


class WriteError(RuntimeError):
    """A file a run writes could not be written (a full disk): the CLI prints the message,
    which says what was kept and how to go on, and exits 1."""


class DataError(ConfigError):
    """A data file that does not hold what its task needs (message names file, line and field)."""


def check_finite(name: str, value, *, positive: bool = True, where: str = "") -> None:
    """Raise a ConfigError unless ``value`` is a finite real number > 0 (``positive``) or >= 0.
    YAML reads ``inf`` as a string and ``.inf`` as a float: both are refused here."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not (ok and (value > 0 if positive else value >= 0)):
        at = f" ({where})" if where else ""
        raise ConfigError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}{at}")


def choose(kind: str, value, allowed, where: str = "") -> None:
    """Raise a ConfigError unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        at = f" ({where})" if where else ""
        raise ConfigError(f"unknown {kind} {value!r}{at}; allowed: {', '.join(map(str, allowed))}")
