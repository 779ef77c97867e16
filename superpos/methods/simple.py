"""Simple prompt tuning (Lester et al. 2021; SuperPos paper section 3.4).

P (n x d) initialised from n *unique* token embeddings sampled from the real vocabulary.
Paper hyperparameters: lr 0.01, weight decay 0.01, AdamW, no scheduler. (PEFT's
SAMPLE_VOCAB samples with replacement over all rows; the paper samples unique real tokens.)
``init_from`` starts P from a PEFT prompt-tuning adapter folder instead (``superpos export``
writes them; checked against n = prompt_len and the model's hidden size d).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from superpos.errors import ConfigError
from superpos.adapter import adapter_prompt, read_adapter
from superpos.methods.base import PromptMethod, SampledInitConfig


@dataclass
class SimpleConfig(SampledInitConfig):
    lr: float = 0.01
    weight_decay: float = 0.01
    #: a PEFT prompt-tuning adapter folder whose prompt is the initial P (None: sampled tokens)
    init_from: str | None = None

    def validate(self):
        super().validate()
        if self.init_from is not None:
            n = read_adapter(self.init_from)[1].shape[0]
            if n != self.prompt_len:
                raise ConfigError(f"adapter {self.init_from} (init_from) has {n} virtual tokens, prompt_len is {self.prompt_len}; pass --prompt-len {n}")


class SimplePrompt(PromptMethod):
    name = "simple"

    def __init__(self, config: SimpleConfig, vocab: torch.Tensor, generator: torch.Generator, candidates: torch.Tensor | None = None):
        super().__init__(config)
        if config.init_from is None:
            self.prompt = self._sampled_prompt(vocab, config.prompt_len, generator, candidates)
        else:
            self.prompt = torch.nn.Parameter(adapter_prompt(config.init_from, config.prompt_len, vocab.shape[1]))

    def prompt_matrix(self):
        return self.prompt
