"""Files a run reads and writes, with errors that name them: safetensors in and out, and
output paths checked before any work."""

from __future__ import annotations

import os
from pathlib import Path

from safetensors.torch import load_file, save

from superpos.errors import ConfigError


def load_tensors(path, what: str) -> dict:
    """The tensors of a safetensors file; ConfigError naming ``what`` and the file when it is
    missing or not a safetensors file (a text file renamed ``.safetensors``, a truncated one)."""
    from safetensors import SafetensorError

    try:
        return load_file(path)
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except (SafetensorError, OSError) as e:
        raise ConfigError(f"{what} {path} is not a readable safetensors file ({e}); give a prompt.safetensors that superpos wrote or a PEFT adapter folder") from None


def umask_mode(mode: int) -> int:
    """``mode`` as the process umask leaves it (what open() and mkdir() give a new file)."""
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


def write_tensors(tensors: dict, path: Path, metadata: dict | None = None) -> None:
    """A safetensors file with the mode of every other file a run writes (safetensors'
    ``save_file`` makes it 0600)."""
    Path(path).write_bytes(save(tensors, metadata=metadata))


def check_out_path(out_dir: Path, flag: str = "--out") -> None:
    """``out_dir`` and every existing folder above it must be directories."""
    for path in (out_dir, *out_dir.parents):
        if path.exists():
            if not path.is_dir():
                raise ConfigError(f"output directory {out_dir}: {path} is a file, not a directory; choose another {flag}")
            return
