"""What a run keeps: its run directory and its checkpoints (files: superpos.run_dir).

``_start_outputs`` writes config.json and environment.json and restores a checkpoint when
resuming, and ``_align_group`` brings a resumed group's members back to one position;
``_record_evaluation`` appends each evaluation to the trial's history and
metrics.jsonl, keeps the best prompt and writes a checkpoint (trainable state, optimizer,
scheduler, RNG states, data position, best score, history), so that an interrupted run resumes
where it stopped and ends as the uninterrupted one would (CPU); ``_finish`` writes the prompt
and result.json and drops the checkpoint of an ended run.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict
from pathlib import Path

import torch

from superpos import environment
from superpos.errors import ConfigError
from superpos.run_dir import (
    BEST_PROMPT_FILE, CHECKPOINT_DIR, CHECKPOINT_FILE, CONFIG_FILE, ENVIRONMENT_FILE, METRICS_FILE, PREVIOUS_CHECKPOINT_FILE, PROMPT_FILE,
    RESULT_FILE, clear_run, read_checkpoint, write_checkpoint,
)
from superpos.train.trial import Trial, TrialState, save_prompt


class Checkpoints:
    """The Trainer's outputs; uses its ``overwrite``, ``callbacks``, ``train_split``, ``input_counts`` and ``backbone``."""

    def _checkpoint_path(self, trial: Trial) -> Path | None:
        return trial.out_dir / CHECKPOINT_DIR / CHECKPOINT_FILE if trial.out_dir else None

    def save_checkpoint(self, trial: Trial) -> None:
        path = self._checkpoint_path(trial)
        if path is None:
            return
        state = asdict(trial.state)
        state["history"] = json.dumps(state["history"])
        payload = {
            "trainable": {k: m.state_dict() for k, m in trial.trainable_modules().items()},
            "optimizer": trial.optimizer.state_dict(),
            "scheduler": trial.scheduler.state_dict(),
            "state": state,
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }
        write_checkpoint(payload, path)

    def load_checkpoint(self, trial: Trial, previous: bool = False) -> bool:
        """Restore the trial from its checkpoint (``previous``: the one before, ``state.prev.pt``)."""
        path = self._checkpoint_path(trial)
        if previous and path is not None:
            path = path.with_name(PREVIOUS_CHECKPOINT_FILE)

        def restore(payload: dict) -> None:  # raises on a checkpoint of another run or method
            for name, module in trial.trainable_modules().items():
                module.load_state_dict(payload["trainable"][name])
            trial.optimizer.load_state_dict(payload["optimizer"])
            trial.scheduler.load_state_dict(payload["scheduler"])
            state = dict(payload["state"])
            state["history"] = json.loads(state["history"])
            trial.state = TrialState(**state)
            torch.set_rng_state(payload["rng_cpu"])
            if payload["rng_cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(payload["rng_cuda"])

        if path is None or read_checkpoint(path, restore) is None:
            return False
        # metrics.jsonl is rewritten from the checkpoint: lines written after it are dropped
        with open(trial.out_dir / METRICS_FILE, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in trial.state.history)
        return True

    def _start_outputs(self, trial: Trial, resume: bool) -> bool:
        """Create the output directory; returns True if a checkpoint was restored."""
        if trial.out_dir is None:
            return False
        if self.overwrite and trial.out_dir.exists():
            clear_run(trial.out_dir)
        trial.out_dir.mkdir(parents=True, exist_ok=True)
        trial.config.save(trial.out_dir / CONFIG_FILE)
        environment.write(trial.out_dir / ENVIRONMENT_FILE)
        if resume and self.load_checkpoint(trial):
            return True
        (trial.out_dir / METRICS_FILE).write_text("")
        return False

    def _align_group(self) -> None:
        """Bring a resumed group's running members to one position. A group writes its members'
        checkpoints one after another at each evaluation, so a process killed among them leaves
        some members one evaluation ahead; they go back to their previous checkpoint (or, with
        none at the others' step, start over), as the fused loop moves all members together."""
        running = [t for t in self.trials if t.running]
        step = min((t.state.step for t in running), default=0)
        for i, t in enumerate(self.trials):
            if not t.running or t.state.step == step:
                continue
            if step and self.load_checkpoint(t, previous=True) and t.state.step == step:
                continue
            if step:  # the sequential writes leave a member at most one evaluation ahead
                raise ConfigError(f"cannot resume the group: {t.out_dir} has no checkpoint at step {step}, where its other members are; "
                                  f"pass --overwrite to start the group afresh")
            fresh = self._build_trial(t.config, t.out_dir)
            self.trials[i] = fresh
            torch.manual_seed(self.configs[0].seed)  # a checkpoint's RNG state was loaded: seeded as fit seeds a new group
            if fresh.out_dir:
                (fresh.out_dir / METRICS_FILE).write_text("")
                shutil.rmtree(fresh.out_dir / CHECKPOINT_DIR, ignore_errors=True)
                (fresh.out_dir / BEST_PROMPT_FILE).unlink(missing_ok=True)

    def _record_evaluation(self, trial: Trial, scores: dict) -> dict:
        s = trial.state
        epoch = s.epoch + s.batch_in_epoch / max(1, math.ceil(len(self.train_split) / trial.config.batch_size))
        improved = scores["score"] > s.best_score
        if improved:
            s.best_score, s.best_step, s.best_epoch = scores["score"], s.step, epoch
        record = {
            "epoch": round(epoch, 4),
            "step": s.step,
            "examples": s.examples,
            "train_loss": s.loss_sum / s.loss_count if s.loss_count else float("nan"),
            **scores,
            "best_score": s.best_score,
            **self.input_counts,
        }
        if "test_score" in scores:  # heldout protocol: report the test score at the best validation step
            record["best_test_score"] = scores["test_score"] if improved or not s.history else s.history[-1]["best_test_score"]
        s.loss_sum, s.loss_count = 0.0, 0
        s.history.append(record)
        if trial.out_dir:
            with open(trial.out_dir / METRICS_FILE, "a") as f:
                f.write(json.dumps(record) + "\n")
            if improved and not trial.method.trains_backbone:
                save_prompt(trial, trial.out_dir / BEST_PROMPT_FILE)
        self.save_checkpoint(trial)
        for cb in self.callbacks:
            cb.on_evaluation(trial, record)
        return record

    # -- the loop -----------------------------------------------------------------------
    def _finish(self, trial: Trial, status: str, message: str = "") -> None:
        trial.state.status, trial.state.message = status, message
        if trial.out_dir:
            save_prompt(trial, trial.out_dir / PROMPT_FILE)
            result = {
                "status": status,
                "message": message,
                "best_score": trial.state.best_score if trial.state.history else None,
                "best_test_score": trial.state.history[-1].get("best_test_score") if trial.state.history else None,
                "best_step": trial.state.best_step,
                "best_epoch": trial.state.best_epoch,
                "steps": trial.state.step,
                "examples": trial.state.examples,
                "trainable_parameters": trial.num_trainable(),
                "inputs": self.input_counts,
                # False: the frozen model has no dropout, so the dropout switch changed nothing
                "frozen_model_has_dropout": self.backbone.has_dropout,
            }
            (trial.out_dir / RESULT_FILE).write_text(json.dumps(result, indent=2) + "\n")
            # an ended run is never resumed: its optimizer state (3x the weights for full
            # fine-tuning) would only fill the disk
            shutil.rmtree(trial.out_dir / CHECKPOINT_DIR, ignore_errors=True)
