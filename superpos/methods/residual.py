"""Residual Prompt Tuning (Razdaibiedina et al. 2023; SuperPos paper section 3.4).

P (n x d) from n unique sampled real token embeddings, reparameterised through a bottleneck
MLP with a residual link: P' = LayerNorm(W_up ReLU(W_down P)) + P, as the official ResMLP.
One MLP shared by all prompt tokens (official default); ``shared_mlp=False`` gives one per
token. SuperPos comparison: bottleneck 128 (official default 800), lr 0.3, weight decay 0.01
(the official code used 1e-5 on all groups: set ``weight_decay`` to reproduce it). The
projected prompt is input-independent, so it is exported and the MLP can be dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from superpos.errors import ConfigError
from superpos.methods.base import PromptMethod, SampledInitConfig


@dataclass
class ResidualConfig(SampledInitConfig):
    lr: float = 0.3
    weight_decay: float = 0.01
    bottleneck: int = 128
    shared_mlp: bool = True

    def validate(self):
        super().validate()
        if self.bottleneck < 1:
            raise ConfigError(f"bottleneck must be >= 1, got {self.bottleneck}")


def res_mlp(d: int, b: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d, b), nn.ReLU(), nn.Linear(b, d), nn.LayerNorm(d))


class ResidualPrompt(PromptMethod):
    name = "residual"

    def __init__(self, config: ResidualConfig, vocab: torch.Tensor, generator: torch.Generator, candidates: torch.Tensor | None = None):
        super().__init__(config)
        self.prompt = self._sampled_prompt(vocab, config.prompt_len, generator, candidates)
        d = vocab.shape[1]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
            count = 1 if config.shared_mlp else config.prompt_len
            self.mlps = nn.ModuleList(res_mlp(d, config.bottleneck) for _ in range(count))

    def prompt_matrix(self):
        if len(self.mlps) == 1:
            projected = self.mlps[0](self.prompt)
        else:
            projected = torch.stack([mlp(p) for mlp, p in zip(self.mlps, self.prompt)])
        return projected + self.prompt
