"""Evaluation: the trials' scores on the validation split (and, under the heldout protocol, test).

Greedy generation (or rank classification, an option) over length-sorted batches, the K
trials fused through one forward as in training (superpos.train.step); invalid generations
count as wrong (SuperPos paper section 3.4; methods.md section 5). ``superpos evaluate`` scores
saved prompts through the same ``_predict_split`` (superpos/evaluate.py).
"""

from __future__ import annotations

from typing import Sequence

import torch

from superpos import metrics as metric_fns
from superpos.data import EncodedSplit, collate
from superpos.train.trial import Trial


class Evaluation:
    """The Trainer's evaluation; uses its ``task``, ``backbone``, ``device``, ``configs``, the
    evaluation splits and the fused forward of ``FusedStep`` (``_fuse``, ``_by_width``, ``_autocast``)."""

    @torch.no_grad()
    def evaluate(self, trials: Sequence[Trial]) -> list[dict]:
        """Scores on the validation split and, under the heldout protocol, on the test split (``test_*``)."""
        scores = self._evaluate_split(trials, self.eval_split)
        if self.test_split is not None:
            for s, test in zip(scores, self._evaluate_split(trials, self.test_split)):
                s.update({f"test_{k}": v for k, v in test.items()})
        return scores

    @torch.no_grad()
    def _evaluate_split(self, trials: Sequence[Trial], split: EncodedSplit) -> list[dict]:
        """Each trial's metrics on one split."""
        return [metric_fns.compute(self.task.metrics, p, split.golds, split.groups) for p in self._predict_split(trials, split)]

    @torch.no_grad()
    def _predict_split(self, trials: Sequence[Trial], split: EncodedSplit) -> list[list]:
        """Greedy generation (or class scoring) on one split, fused across trials: predictions per
        trial (``superpos evaluate`` scores saved prompts through this path, superpos/evaluate.py)."""
        self.backbone.eval()
        for t in trials:
            t.method.eval()
        order = sorted(range(len(split)), key=lambda i: len(split.input_ids[i]))  # less padding
        preds: list[list] = [[None] * len(split) for _ in trials]
        bs = self.configs[0].eval_batch_size
        pad = self.backbone.tokenizer.pad_token_id
        for start in range(0, len(order), bs):
            batch = collate(split, order[start : start + bs], pad, self.device)

            def predict(chunk):
                with self._autocast():
                    embeds, masks, groups = self._fuse([trials[k] for k in chunk], [batch] * len(chunk))
                    out = self.backbone.predict(embeds, masks, self.task, self.configs[0].template, groups)
                return [out[group.rows] for group in groups]

            for k, trial_preds in enumerate(self._by_width(trials, predict)):
                for i, p in zip(batch.indices, trial_preds):
                    preds[k][i] = p
        self.backbone.train()
        for t in trials:
            t.method.train()
        return preds
