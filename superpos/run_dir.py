"""What a run directory holds, and the only code that writes or reads it.

``<out>/config.json`` (the resolved config), ``metrics.jsonl`` (one line per evaluation),
``prompt.safetensors`` (the trained tensors), ``result.json`` (status and best score),
``environment.json`` (versions and hardware of the process that started or last resumed the
run, ``superpos.environment``), and,
while the run is unfinished, ``checkpoint/state.pt`` (everything a resume needs, loaded with
``weights_only=True``: no pickle).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import save_file

from superpos.config import TrainConfig
from superpos.errors import ConfigError

if TYPE_CHECKING:
    from superpos.train import Trial

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
PROMPT_FILE = "prompt.safetensors"
RESULT_FILE = "result.json"
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_FILE = "state.pt"
ENVIRONMENT_FILE = "environment.json"


def save_prompt(trial: "Trial", path: Path) -> None:
    """The trial's trained tensors as they are now (the method's export, ``head.*`` for a head),
    fp32, with method, task, optimizer step and trainable parameter count as metadata."""
    tensors = {k: v.float().cpu() if v.is_floating_point() else v.cpu() for k, v in trial.method.export().items()}
    if trial.head is not None:
        tensors.update({f"head.{k}": v.detach().cpu() for k, v in trial.head.state_dict().items()})
    meta = {"method": trial.config.method, "task": trial.config.task, "step": str(trial.state.step), "trainable_parameters": str(trial.num_trainable())}
    save_file(tensors, path, metadata=meta)


def prepare_out_dir(config: TrainConfig, out_dir: Path, overwrite: bool) -> bool:
    """Check an output directory before any work; returns True if it holds a run to resume.

    A finished (or diverged) run is refused unless ``overwrite``; an unfinished run with the
    same config is resumed; one with another config is refused, naming the differing keys.
    Nothing is deleted here: ``overwrite`` clears the directory only once training starts.
    """
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return False
    if overwrite:
        return False
    if (out_dir / RESULT_FILE).exists():
        status = json.loads((out_dir / RESULT_FILE).read_text()).get("status", "?")
        raise ConfigError(f"output directory {out_dir} already holds a {status} run; pass --overwrite to replace it")
    config_path = out_dir / CONFIG_FILE
    if not config_path.exists():
        raise ConfigError(f"output directory {out_dir} is not empty and holds no superpos run; choose another --out or pass --overwrite")
    previous = TrainConfig.load(config_path).to_dict()
    differing = sorted(k for k, v in config.to_dict().items() if previous.get(k) != v)
    if differing:
        raise ConfigError(
            f"output directory {out_dir} holds an unfinished run with another config (differs in: {', '.join(differing)});"
            " pass --overwrite to replace it or use the same settings to resume"
        )
    return True


def write_checkpoint(payload: dict, path: Path) -> None:
    """Write atomically: a kill mid-write leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: Path) -> dict:
    return torch.load(path, weights_only=True, map_location="cpu")
