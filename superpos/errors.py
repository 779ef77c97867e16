"""One exception type for bad input: the CLI prints its message and exits 2 before any work starts."""


class ConfigError(ValueError):
    """Bad user input. The message names the value, the allowed values and the file or key."""


class DataError(ConfigError):
    """A data file that does not hold what its task needs (message names file, line and field)."""


def choose(kind: str, value, allowed, where: str = "") -> None:
    """Raise a ConfigError unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        at = f" ({where})" if where else ""
        raise ConfigError(f"unknown {kind} {value!r}{at}; allowed: {', '.join(map(str, allowed))}")
