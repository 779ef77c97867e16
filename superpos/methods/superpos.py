"""SuperPos-Prompt (SuperPos paper section 2; appendix A.2 for the softmax variant).

Each prompt token i is a superposition p_i = E_i p'_i of m sampled token embeddings:
E_i (d x m) and p'_i (m) are both tuned. Every E_i starts as the SAME m unique sampled real
token embeddings (as columns) and is then tuned separately. E is excluded from weight decay
("including weight decay ... reduced the norm of E, resulting in significant information
loss"); weight decay applies to p' only. ``softmax=True`` computes p_i = E_i softmax(p'_i)
(A.2; worse in the paper, off by default). Paper: m = 128, lr 0.01, weight decay 1e-5.

The paper does not state how p' is initialised (methods.md section 1). Options:

* ``normal`` (default): p'_ij ~ N(0, 1/m). For near-orthogonal embeddings,
  ||p_i||^2 ~= sum_j p'_ij^2 ||e_j||^2 ~= mean ||e_j||^2, so the first prompt has the norm of
  a real token embedding.
* ``one_hot``: p'_i selects sampled token i mod m, so p_i starts as exactly one real token.
* ``uniform``: p'_ij ~ U(-sqrt(3/m), sqrt(3/m)) (same variance as ``normal``).
* ``zeros``: p' = 0 (E receives no gradient on the first step).

Trainable parameters with per-token E: n*d*m + n*m (T5-base, m = 128, n = 10: 984,320).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from superpos.errors import ConfigError
from superpos.methods.base import PromptMethod, SampledInitConfig, sample_token_ids

P_INITS = ("normal", "one_hot", "uniform", "zeros")


@dataclass
class SuperPosConfig(SampledInitConfig):
    lr: float = 0.01
    weight_decay: float = 1e-5
    m: int = 128
    softmax: bool = False
    p_init: str = "normal"

    def validate(self):
        super().validate()
        if self.m < 1:
            raise ConfigError(f"m must be >= 1, got {self.m}")
        if self.p_init not in P_INITS:
            raise ConfigError(f"unknown p_init {self.p_init!r}; allowed: {', '.join(P_INITS)}")


class SuperPosPrompt(PromptMethod):
    name = "superpos"

    def __init__(self, config: SuperPosConfig, vocab: torch.Tensor, generator: torch.Generator, candidates: torch.Tensor | None = None):
        super().__init__(config)
        n, m = config.prompt_len, config.m
        ids = sample_token_ids(torch.arange(vocab.shape[0]) if candidates is None else candidates, m, generator)
        self.register_buffer("token_ids", ids)
        sampled = vocab[ids].detach().float().T  # (d, m): embeddings as columns
        self.E = nn.Parameter(sampled.unsqueeze(0).repeat(n, 1, 1))  # (n, d, m)
        self.p_prime = nn.Parameter(self._init_p(n, m, config.p_init, generator))

    @staticmethod
    def _init_p(n: int, m: int, how: str, generator: torch.Generator) -> torch.Tensor:
        if how == "normal":
            return torch.randn(n, m, generator=generator) / math.sqrt(m)
        if how == "uniform":
            return (torch.rand(n, m, generator=generator) * 2 - 1) * math.sqrt(3 / m)
        if how == "one_hot":
            return torch.eye(m)[torch.arange(n) % m]
        return torch.zeros(n, m)

    def param_groups(self):
        cfg = self.config
        return [
            {"params": [self.E], "weight_decay": 0.0, "lr": cfg.lr, "name": "E"},
            {"params": [self.p_prime], "weight_decay": cfg.weight_decay, "lr": cfg.lr, "name": "p_prime"},
        ]

    def weights(self) -> torch.Tensor:
        return torch.softmax(self.p_prime, dim=-1) if self.config.softmax else self.p_prime

    def prompt_matrix(self):
        return torch.einsum("ndm,nm->nd", self.E, self.weights())
