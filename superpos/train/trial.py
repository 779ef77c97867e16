"""One trial of a fused group and what follows from it alone.

A ``Trial`` is a config with its prompt method (and, for an encoder's linear head, its head),
optimizer, LR schedule and ``TrialState`` (position in the data, best score, history, status).
``save_prompt`` writes its trained tensors (a run directory's ``prompt.safetensors`` and
``best_prompt.safetensors``, superpos.run_dir); ``trial_finite`` is the divergence check after
each optimizer step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from superpos.config import TrainConfig
from superpos.files import write_tensors
from superpos.methods.base import PromptMethod

RUNNING, FINISHED, DIVERGED = "running", "finished", "diverged"


class Callback:
    """The hook the Ray trainables use (and tests, to interrupt a run)."""

    def on_evaluation(self, trial: "Trial", record: dict) -> None:
        """After each evaluation; the trial's checkpoint for that evaluation is already written."""


@dataclass
class TrialState:
    epoch: int = 0  # epochs completed
    batch_in_epoch: int = 0  # micro-batches consumed in the current epoch
    step: int = 0  # optimizer steps
    examples: int = 0
    loss_sum: float = 0.0  # train loss since the last evaluation
    loss_count: int = 0
    best_score: float = float("-inf")
    best_step: int = -1
    best_epoch: float = -1.0
    status: str = RUNNING
    message: str = ""
    history: list = field(default_factory=list)


@dataclass
class Trial:
    config: TrainConfig
    out_dir: Path | None
    method: PromptMethod
    head: torch.nn.Module | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    state: TrialState

    @property
    def running(self) -> bool:
        return self.state.status == RUNNING

    def trainable_modules(self) -> dict:
        return {"method": self.method, **({"head": self.head} if self.head is not None else {})}

    def trainable_params(self) -> list[torch.nn.Parameter]:
        return [p for m in self.trainable_modules().values() for p in m.parameters() if p.requires_grad]

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.trainable_params())


def save_prompt(trial: Trial, path: Path) -> None:
    """The trial's trained tensors as they are now (the method's export, ``head.*`` for a head),
    fp32, with method, task, optimizer step and trainable parameter count as metadata."""
    tensors = {k: v.float().cpu() if v.is_floating_point() else v.cpu() for k, v in trial.method.export().items()}
    if trial.head is not None:
        tensors.update({f"head.{k}": v.detach().cpu() for k, v in trial.head.state_dict().items()})
    meta = {"method": trial.config.method, "task": trial.config.task, "step": str(trial.state.step), "trainable_parameters": str(trial.num_trainable())}
    write_tensors(tensors, path, meta)


@torch.no_grad()
def trial_finite(trial: Trial) -> bool:
    """Its parameters and, where there is one, its prompt (E p' can overflow with finite E and
    p'): one reduction a tensor, one sync. A NaN or inf makes a sum non-finite; so does a sum
    past fp32's range, which only a diverged trial reaches."""
    sums = [p.float().sum() for p in trial.trainable_params()]
    if not trial.method.input_dependent:
        sums.append(trial.method.prompt_matrix().float().sum())
    return bool(torch.isfinite(torch.stack(sums).sum()))
