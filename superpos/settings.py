"""Process-wide settings, read from the environment once."""

from __future__ import annotations

import os
from pathlib import Path

#: The one setting that locates GLUE/SuperGLUE files on disk. Default: the shared data
#: folder beside this checkout (``<repo>/../shared/data``).
DATA_DIR_ENV = "SUPERPOS_DATA_DIR"

_REPO_ROOT = Path(__file__).resolve().parent.parent


def default_data_dir() -> Path:
    return Path(os.environ.get(DATA_DIR_ENV, _REPO_ROOT.parent / "shared" / "data"))


def cache_dir() -> Path:
    """Where tokenised data sets are cached (``SUPERPOS_CACHE``, default ~/.cache/superpos)."""
    return Path(os.environ.get("SUPERPOS_CACHE", Path.home() / ".cache" / "superpos"))
