"""The training step: K trials' batches through one forward and backward of the frozen backbone.

Each trial's batch is prompted by its own method (``prompted``), the K prompted batches are
right-padded to one width and concatenated (``_fuse``), and each trial's loss is its own mean
over its own tokens (``_train_fused``); their sum is back-propagated, so a trial's parameters
only reach its own rows. ``_by_width`` runs at most ``fused_width`` trials a forward and halves
that width when CUDA runs out of memory. Evaluation (superpos.train.evaluation) fuses its
forwards the same way.
"""

from __future__ import annotations

import math
import sys
from typing import Sequence

import torch

from superpos.backbones.base import Backbone, TrialRows
from superpos.data import Batch
from superpos.train.trial import Trial


class FusedStep:
    """The Trainer's step; uses its ``backbone``, ``device`` and ``fused_width``."""

    backbone: Backbone
    device: torch.device
    #: most trials that share one forward
    fused_width: int
    #: halve ``fused_width`` on CUDA out of memory (the benchmark turns it off: there OOM is a result)
    halve_on_oom = True

    def prompted(self, trial: Trial, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Input embeddings with the trial's prompt prepended and the attention mask extended."""
        embeds = self.backbone.embed(batch.input_ids)
        prompt = trial.method(embeds, batch.attention_mask)
        mask = batch.attention_mask
        if prompt is not None:
            embeds = torch.cat([prompt.to(embeds.dtype), embeds], dim=1)
            mask = torch.cat([mask.new_ones(mask.shape[0], prompt.shape[1]), mask], dim=1)
        return embeds, mask

    def _fuse(self, trials: Sequence[Trial], batches: Sequence[Batch]):
        """Concatenate the K trials' prompted batches, right-padded to one width."""
        parts = [self.prompted(t, b) for t, b in zip(trials, batches)]
        width = max(e.shape[1] for e, _ in parts)
        embeds = torch.cat([torch.nn.functional.pad(e, (0, 0, 0, width - e.shape[1])) for e, _ in parts])
        masks = torch.cat([torch.nn.functional.pad(m, (0, width - m.shape[1])) for _, m in parts])
        groups, start = [], 0
        for (e, _), t, b in zip(parts, trials, batches):
            groups.append(TrialRows(slice(start, start + len(b)), t.head, e.shape[1] - b.input_ids.shape[1]))
            start += len(b)
        return embeds, masks, groups

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else torch.autocast("cpu", enabled=False)

    def _by_width(self, trials: Sequence[Trial], run, keeps_grads: bool = False) -> list:
        """``run(indices)`` over consecutive chunks of at most ``fused_width`` trials, results concatenated.

        The group size from memory: a sweep packs up to ``group_size`` trials into a group; when
        they do not fit through one forward on the GPU, CUDA's out-of-memory error halves the
        width for the rest of the run and the chunk that failed is redone, after restoring any
        gradient it had added (``keeps_grads``: gradient accumulation). A generous group size
        costs no trial, and with dropout off results are the same at every width, since trials never
        mix (with dropout on the masks depend on the width: see the module docstring).
        """
        out, start = [], 0
        while start < len(trials):
            chunk = list(range(start, min(start + self.fused_width, len(trials))))
            saved = [(p, None if p.grad is None else p.grad.clone()) for i in chunk for p in trials[i].trainable_params()] if keeps_grads else []
            try:
                out += run(chunk)
                start += len(chunk)
                continue
            except torch.cuda.OutOfMemoryError:
                if len(chunk) == 1 or not self.halve_on_oom:
                    raise
            # out of the except block, whose traceback holds the failed chunk's activations
            for p, grad in saved:
                p.grad = grad
            self.fused_width = len(chunk) // 2
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            print(f"out of GPU memory with {len(chunk)} trials fused: {self.fused_width} a forward from now on", file=sys.stderr)
        return out

    def train_step(self, trials: Sequence[Trial], batches: Sequence[Batch], accum: int | None = None) -> list[float]:
        """Forward/backward of one micro-batch per trial (``fused_width`` trials a forward); returns
        each trial's mean loss. ``accum``: micro-batches in this accumulation (default ``grad_accum``;
        fewer in an epoch's short last one), each loss is divided by it."""
        run = lambda chunk: self._train_fused([trials[i] for i in chunk], [batches[i] for i in chunk], accum)  # noqa: E731
        return self._by_width(trials, run, keeps_grads=True)

    def _train_fused(self, trials: Sequence[Trial], batches: Sequence[Batch], accum: int | None = None) -> list[float]:
        with self._autocast():
            embeds, masks, groups = self._fuse(trials, batches)
            tgt_width = max(b.targets.shape[1] for b in batches)
            targets = torch.cat([torch.nn.functional.pad(b.targets, (0, tgt_width - b.targets.shape[1]), value=-100) for b in batches])
            sums, counts = self.backbone.example_losses(embeds, masks, targets, groups)
        losses, total = [], None
        for group, trial in zip(groups, trials):
            loss = sums[group.rows].sum() / counts[group.rows].sum().clamp(min=1)
            losses.append(loss.item())
            if math.isfinite(losses[-1]):
                part = loss / (accum or trial.config.grad_accum)
                total = part if total is None else total + part
        if total is not None:
            total.backward()
        return losses

    def optimizer_step(self, trial: Trial) -> None:
        trial.optimizer.step()
        trial.scheduler.step()
        trial.optimizer.zero_grad(set_to_none=True)
        trial.state.step += 1
