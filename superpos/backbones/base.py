"""The Backbone interface: a frozen Hugging Face model that takes prompted input embeddings.

Every backbone keeps its wrapped model frozen and exposes:

* ``embed(input_ids)``: token embeddings the prompt is prepended to;
* ``vocab_embeddings()``: the rows of real tokens (T5's table has padded rows past the
  tokenizer's size: prompt initialisations sample only from these), on the scale of
  ``embed()`` (Gemma's embedding module multiplies its rows by sqrt(d));
* ``arrange(input_ids, target, training)``: how one tokenised example enters the model
  (a causal LM reads its label in the input when training, not when generating);
* ``example_losses(inputs_embeds, attention_mask, targets, head)``: per-example loss sums
  and counts, so that K fused trials each get their own mean;
* ``predict(...)``: predictions for evaluation (label indices, floats or ``None`` = invalid).

Dropout switch (paper section 4, "Impact of Dropout"): with ``dropout=False`` the wrapped
model stays in eval mode even when the backbone is put in train mode, so every dropout of
the frozen model is inactive during training. For a frozen transformer, train mode changes
nothing but dropout, so this is exactly "dropout off". ``has_dropout`` says whether the
frozen model has any dropout for the switch to act on (Llama's configs have none).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class TrialRows(NamedTuple):
    """The rows of one trial in a fused batch, its per-trial head, and its prompt length."""

    rows: slice
    head: nn.Module | None = None
    prompt_len: int = 0


class Backbone(nn.Module):
    kind: str = ""

    def __init__(self, model: nn.Module, tokenizer, name: str, dropout: bool = True):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.dropout = dropout
        self.freeze()

    # -- frozen weights and dropout -----------------------------------------------------
    def freeze(self) -> None:
        for p in self.model.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.dropout:
            self.model.eval()
        return self

    @property
    def hidden_size(self) -> int:
        return self.model.get_input_embeddings().weight.shape[1]

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(input_ids)

    def vocab_size(self) -> int:
        """Number of real tokens (the tokenizer's size), never the padded table size."""
        return min(len(self.tokenizer), self.model.get_input_embeddings().weight.shape[0])

    def vocab_embeddings(self) -> torch.Tensor:
        table = self.model.get_input_embeddings()
        if type(table) is nn.Embedding:
            return table.weight[: self.vocab_size()].detach()
        # an embedding module that transforms its rows (Gemma's scales them by sqrt(d))
        return self.embed(torch.arange(self.vocab_size(), device=self.device)).detach()

    @property
    def has_dropout(self) -> bool:
        """Whether the frozen model has any dropout (a module or a config probability > 0)."""
        modules = any(isinstance(m, nn.Dropout) and m.p > 0 for m in self.model.modules())
        config = vars(getattr(self.model, "config", None) or object())
        probs = [v for k, v in config.items() if ("dropout" in k or "pdrop" in k) and isinstance(v, float)]
        return modules or any(p > 0 for p in probs)

    # -- task-specific hooks ------------------------------------------------------------
    def prepare(self, task, template: str) -> None:
        """Called once per task before training (e.g. embed the label texts)."""

    def new_head(self, task) -> nn.Module | None:
        """A per-trial trainable head, if the backbone's design has one (default: none)."""
        return None

    def encode_target(self, task, example, template: str) -> list[int]:
        raise NotImplementedError

    def arrange(self, input_ids: list[int], target: list, training: bool) -> tuple[list[int], list]:
        """One tokenised example's model input and targets (default: as tokenised)."""
        return input_ids, target

    def encoding_key(self, training: bool) -> str:
        """What besides the tokenizer and texts decides ``arrange``'s result (tokenisation cache key)."""
        return self.kind

    def example_losses(self, inputs_embeds, attention_mask, targets, groups: list[TrialRows] | None = None):
        raise NotImplementedError

    def predict(self, inputs_embeds, attention_mask, task, template: str, groups: list[TrialRows] | None = None) -> list:
        raise NotImplementedError
