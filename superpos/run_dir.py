"""What a run directory holds, and the only code that writes or reads it.

``<out>/config.json`` (the resolved config), ``metrics.jsonl`` (one line per evaluation),
``prompt.safetensors`` (the trained tensors), ``result.json`` (status and best score),
``environment.json`` (versions and hardware of the process that started or last resumed the
run, ``superpos.environment``), and,
while the run is unfinished, ``checkpoint/state.pt`` (everything a resume needs, loaded with
``weights_only=True``: no pickle) beside ``checkpoint/state.prev.pt``, the one before it.

A directory is a superpos run when it holds ``config.json`` and nothing but the files a run
writes (``RUN_FILES``); ``--overwrite`` removes exactly those files and refuses anything else,
so a mistyped ``--out`` never costs the user a file of their own.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import torch

from superpos.config import TrainConfig
from superpos.errors import ConfigError, WriteError
from superpos.files import check_out_path, load_tensors

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
PROMPT_FILE = "prompt.safetensors"
RESULT_FILE = "result.json"
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_FILE = "state.pt"
ENVIRONMENT_FILE = "environment.json"
#: the trained tensors at the best validation evaluation, the one the reported score comes from
#: (what export and evaluate use); full fine-tuning keeps none (a whole model per improvement)
BEST_PROMPT_FILE = "best_prompt.safetensors"
#: the checkpoint before the latest, kept until a newer one is written and read back
PREVIOUS_CHECKPOINT_FILE = "state.prev.pt"
CHECKPOINT_TMP_FILE = "state.tmp"
#: every file a run writes: what makes a directory a run, and all that --overwrite removes
RUN_FILES = (CONFIG_FILE, METRICS_FILE, PROMPT_FILE, BEST_PROMPT_FILE, RESULT_FILE, ENVIRONMENT_FILE, CHECKPOINT_DIR)
CHECKPOINT_FILES = (CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE, CHECKPOINT_TMP_FILE)


def foreign_entries(out_dir: Path) -> list[str]:
    """What ``out_dir`` holds that no run writes (sub-folders marked with a trailing /)."""
    entries = [p for p in out_dir.iterdir() if p.name not in RUN_FILES]
    checkpoint = out_dir / CHECKPOINT_DIR
    if checkpoint.is_dir():
        entries += [p for p in checkpoint.iterdir() if p.name not in CHECKPOINT_FILES]
    elif checkpoint.exists():
        entries.append(checkpoint)
    return sorted(str(p.relative_to(out_dir)) + ("/" if p.is_dir() else "") for p in entries)


def prepare_out_dir(config: TrainConfig, out_dir: Path, overwrite: bool) -> bool:
    """Check an output directory before any work; returns True if it holds a run to resume.

    A directory holding anything a run does not write is refused, with or without
    ``overwrite``. A finished (or diverged) run is refused unless ``overwrite``; an unfinished
    run with the same config is resumed; one with another config is refused, naming the
    differing keys. Nothing is deleted here: ``overwrite`` clears the run's files only once
    training starts (``clear_run``).
    """
    check_out_path(out_dir)
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return False
    foreign = foreign_entries(out_dir)
    if foreign or not (out_dir / CONFIG_FILE).is_file():
        what = f"holds {', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}" if foreign else f"has no {CONFIG_FILE}"
        raise ConfigError(f"output directory {out_dir} is not a superpos run (it {what}); choose another --out, a new or empty directory")
    if not any((out_dir / n).exists() for n in RUN_FILES if n != CONFIG_FILE) and not _is_superpos_config(out_dir / CONFIG_FILE):
        raise ConfigError(f"output directory {out_dir} is not a superpos run (its only file, {CONFIG_FILE}, is no superpos config); choose another --out, a new or empty directory")
    if overwrite:
        return False
    try:
        if (out_dir / RESULT_FILE).exists():
            status = json.loads((out_dir / RESULT_FILE).read_text()).get("status", "?")
            raise ConfigError(f"output directory {out_dir} already holds a {status} run; pass --overwrite to replace it")
        previous = TrainConfig.load(out_dir / CONFIG_FILE).to_dict()
    except json.JSONDecodeError as e:
        raise ConfigError(f"output directory {out_dir} holds a damaged superpos run ({e}); pass --overwrite to replace it") from None
    differing = sorted(k for k, v in config.to_dict().items() if previous.get(k) != v)
    if differing:
        raise ConfigError(
            f"output directory {out_dir} holds an unfinished run with another config (differs in: {', '.join(differing)});"
            " pass --overwrite to replace it or use the same settings to resume"
        )
    return True


def _is_superpos_config(path: Path) -> bool:
    try:
        TrainConfig.load(path)
    except (ConfigError, ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError):
        return False
    return True


def clear_run(out_dir: Path) -> None:
    """Remove the files a run writes, and nothing else (``prepare_out_dir`` refused any other)."""
    for name in RUN_FILES:
        path = out_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def write_checkpoint(payload: dict, path: Path) -> None:
    """Write ``path`` so that a good checkpoint exists at every moment: the new one goes to a
    temporary file and is read back before it replaces ``path``, whose old version is kept as
    ``state.prev.pt`` (``read_checkpoint`` falls back to it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(CHECKPOINT_TMP_FILE)
    try:
        torch.save(payload, tmp)
        _load(tmp)  # verify: a short write or a full disk fails here, with the old checkpoints intact
    except Exception as e:  # torch reports a full disk as RuntimeError("basic_ios::clear") or OSError
        tmp.unlink(missing_ok=True)
        free = shutil.disk_usage(path.parent).free
        kept = [p.name for p in (path, path.with_name(PREVIOUS_CHECKPOINT_FILE)) if p.exists()]
        raise WriteError(
            f"cannot write the checkpoint {path} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); {free} bytes free on its disk. "
            f"The partial file was removed and {', '.join(kept) or 'nothing earlier'} kept: free space, then run the same command again to resume"
        ) from e
    if path.exists():
        os.replace(path, path.with_name(PREVIOUS_CHECKPOINT_FILE))
    os.replace(tmp, path)


def _load(path: Path) -> dict:
    return torch.load(path, weights_only=True, map_location="cpu")


def read_checkpoint(path: Path, restore=None) -> dict | None:
    """The latest usable checkpoint: ``path``, else the previous one (with a warning on stderr);
    None if there is none; a ConfigError naming the files if none can be used. A checkpoint is
    usable when it loads and ``restore(payload)`` takes it: one that loads but is not this
    run's (another method's tensors, another format) fails there and the previous is tried."""
    candidates = [p for p in (path, path.with_name(PREVIOUS_CHECKPOINT_FILE)) if p.exists()]
    errors = []
    for candidate in candidates:
        try:
            payload = _load(candidate)
        except Exception as e:  # torch raises RuntimeError, EOFError or pickle errors for a damaged file
            errors.append(f"{candidate}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            continue
        if restore is not None:
            try:
                restore(payload)
            except (KeyError, TypeError, ValueError, RuntimeError) as e:  # load_state_dict: RuntimeError on other keys or shapes
                errors.append(f"{candidate}: not a checkpoint of this run ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
                continue
        if errors:
            print(f"warning: checkpoint unusable ({errors[-1]}); resuming from the previous checkpoint {candidate}", file=sys.stderr)
        return payload
    if errors:
        raise ConfigError(
            f"no usable checkpoint in {path.parent} ({'; '.join(errors)}); delete {path.parent} to restart the run"
            " from its beginning, or pass --overwrite to start it afresh"
        )
    return None


# -- a finished run ------------------------------------------------------------------------
def saved_prompt(run_dir) -> tuple[Path, float | None]:
    """The prompt file that export and evaluate use, and the validation score it was evaluated
    at: the best evaluation's (``best_prompt.safetensors``: the run's reported score) where the
    run kept one, else the last evaluation's (``prompt.safetensors``; full fine-tuning)."""
    run_dir = Path(run_dir)
    path = run_dir / METRICS_FILE
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    if (run_dir / BEST_PROMPT_FILE).is_file():
        return run_dir / BEST_PROMPT_FILE, max((line["score"] for line in lines), default=None)
    return run_dir / PROMPT_FILE, lines[-1].get("score") if lines else None


def read_run_dir(run_dir) -> tuple[TrainConfig, dict, dict]:
    """A finished run's config, saved prompt tensors (``saved_prompt``) and result; ConfigError if it is no such run."""
    run_dir = Path(run_dir)
    prompt = saved_prompt(run_dir)[0]
    missing = [f.name for f in (run_dir / CONFIG_FILE, prompt) if not f.is_file()]
    if missing:
        raise ConfigError(f"{run_dir} is not a finished superpos run directory (no {', '.join(missing)})")
    config = TrainConfig.load(run_dir / CONFIG_FILE)
    result = json.loads((run_dir / RESULT_FILE).read_text()) if (run_dir / RESULT_FILE).is_file() else {}
    return config, load_tensors(prompt, "saved prompt"), result


def effective_prompt(tensors: dict, where: str) -> torch.Tensor:
    if "prompt" not in tensors:
        raise ConfigError(f"{where} holds no tensor 'prompt' (keys: {', '.join(tensors)})")
    return tensors["prompt"].float().contiguous()
