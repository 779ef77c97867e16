"""Encoder-only backbones (all-MiniLM-L6-v2): prompt tuning for classification and STS-B, kept pure.

Design (documented choice; the SuperPos paper uses T5 only): the prompted input is encoded by
the frozen sentence encoder and mean-pooled, as sentence-transformers pools, over the unmasked
positions of the input tokens only: the prompt acts through attention, as it does in T5, and
its own output positions do not dilute short inputs (SST-2's training phrases are much
shorter than its validation sentences; pooling the prompt positions too measured about 3
points lower after 4,000 examples). The result is L2-normalised. Each class is represented by the
frozen, prompt-free embedding of its label text (``"not_entailment"`` -> ``"not entailment"``).
The logit of a class is ``scale * cos(sentence, class)`` with ``scale = 20`` (temperature
0.05, the one all-MiniLM-L6-v2 was trained with). The prompt method's parameters are then the
only trainable ones. ``head="linear"`` adds a per-trial linear layer over the pooled embedding
instead, as an option.

Regression (STS-B): the pair is encoded jointly, as for classification (``"stsb sentence1: ...
sentence2: ..."``), and scored against two anchor classes, ``"dissimilar"`` and ``"similar"``
(or two outputs of the linear head). The prediction is the expected value of the two-anchor
distribution over the task's range, ``lo + (hi - lo) * p(similar)`` (STS-B: ``5 * p``), a
float; the loss is the cross-entropy against the soft target ``(1 - y', y')`` with
``y' = (y - lo) / (hi - lo)``. So STS-B, too, trains the prompt only, and its predictions are
never invalid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from superpos.backbones.base import Backbone, TrialRows

HEADS = ("similarity", "linear")
#: the low and high end of a regression task's range
REGRESSION_ANCHORS = ("dissimilar", "similar")


class EncoderBackbone(Backbone):
    kind = "encoder"

    def __init__(self, model, tokenizer, name, dropout=True, head: str = "similarity", scale: float = 20.0):
        super().__init__(model, tokenizer, name, dropout)
        self.head = head
        self.scale = scale
        self.register_buffer("class_embeddings", torch.empty(0), persistent=False)
        self.task = None

    def pooled(self, inputs_embeds, attention_mask, groups: list[TrialRows] | None = None):
        """Mean over the input tokens' outputs (each group's leading prompt positions left out)."""
        hidden = self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask).last_hidden_state
        pool = attention_mask.clone()
        for g in groups or ():
            pool[g.rows, : g.prompt_len] = 0
        mask = pool.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    @staticmethod
    def class_texts(task) -> list[str]:
        if task.regression:
            return list(REGRESSION_ANCHORS)
        return [t.replace("_", " ") for t in task.label_texts("t5")]

    @torch.no_grad()
    def prepare(self, task, template):
        self.task = task
        enc = self.tokenizer(self.class_texts(task), padding=True, return_tensors="pt").to(self.device)
        was_training = self.model.training
        self.model.eval()
        emb = self.pooled(self.embed(enc["input_ids"]), enc["attention_mask"])
        self.model.train(was_training)
        self.class_embeddings = F.normalize(emb.float(), dim=-1)

    def new_head(self, task):
        if self.head == "linear":
            return nn.Linear(self.hidden_size, len(self.class_texts(task)))
        return None

    def encode_target(self, task, example, template):
        return [example.label]  # the gold index (or float) itself

    def _logits(self, inputs_embeds, attention_mask, groups):
        groups = groups or [TrialRows(slice(None))]
        pooled = self.pooled(inputs_embeds, attention_mask, groups)
        logits = []
        for g in groups:
            part = pooled[g.rows].float()
            if g.head is None:
                logits.append(self.scale * F.normalize(part, dim=-1) @ self.class_embeddings.T)
            else:
                logits.append(g.head(part))
        return torch.cat(logits)

    def example_losses(self, inputs_embeds, attention_mask, targets, groups=None):
        logits = self._logits(inputs_embeds, attention_mask, groups)
        if self.task.regression:
            lo, hi = self.task.value_range
            high = ((targets[:, 0].float() - lo) / (hi - lo)).clamp(0, 1)
            losses = F.cross_entropy(logits, torch.stack([1 - high, high], dim=1), reduction="none")
        else:
            losses = F.cross_entropy(logits, targets[:, 0].long(), reduction="none")
        return losses, torch.ones_like(losses)

    @torch.no_grad()
    def predict(self, inputs_embeds, attention_mask, task, template, groups=None):
        logits = self._logits(inputs_embeds, attention_mask, groups)
        if task.regression:
            lo, hi = task.value_range
            return (lo + (hi - lo) * logits.softmax(-1)[:, 1]).tolist()
        return logits.argmax(-1).tolist()
