"""Simple prompt tuning (Lester et al. 2021; SuperPos paper section 3.4).

P (n x d) initialised from n *unique* token embeddings sampled from the real vocabulary.
Paper hyperparameters: lr 0.01, weight decay 0.01, AdamW, no scheduler. (PEFT's
SAMPLE_VOCAB samples with replacement over all rows; the paper samples unique real tokens.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from superpos.methods.base import PromptMethod, SampledInitConfig


@dataclass
class SimpleConfig(SampledInitConfig):
    lr: float = 0.01
    weight_decay: float = 0.01


class SimplePrompt(PromptMethod):
    name = "simple"

    def __init__(self, config: SimpleConfig, vocab: torch.Tensor, generator: torch.Generator, candidates: torch.Tensor | None = None):
        super().__init__(config)
        self.prompt = self._sampled_prompt(vocab, config.prompt_len, generator, candidates)

    def prompt_matrix(self):
        return self.prompt
