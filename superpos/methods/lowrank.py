"""Decomposed (low-rank) prompt tuning, DPT (Xiao et al. 2023).

P = A B with A (n x b) and B (b x d), both initialised uniform(-0.5, 0.5) as the official
code; b = 10, lr 0.3, weight decay 1e-5. The official runs also used a linear schedule with
10% warmup: ``--schedule linear --warmup-ratio 0.1`` reproduces it (the SuperPos paper's
protocol, and this loop's default, is no scheduler).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from superpos.errors import ConfigError
from superpos.methods.base import MethodConfig, PromptMethod


@dataclass
class LowRankConfig(MethodConfig):
    lr: float = 0.3
    weight_decay: float = 1e-5
    rank: int = 10

    def validate(self):
        super().validate()
        if self.rank < 1:
            raise ConfigError(f"rank must be >= 1, got {self.rank}")


class LowRankPrompt(PromptMethod):
    name = "lowrank"

    def __init__(self, config: LowRankConfig, vocab: torch.Tensor, generator: torch.Generator):
        super().__init__(config)
        d = vocab.shape[1]
        self.A = nn.Parameter(torch.rand(config.prompt_len, config.rank, generator=generator) - 0.5)
        self.B = nn.Parameter(torch.rand(config.rank, d, generator=generator) - 0.5)

    def prompt_matrix(self):
        return self.A @ self.B
