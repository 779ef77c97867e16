"""ATTEMPT (Asai et al. 2022; SuperPos paper section 3.4): attentional mixture of prompts.

Trainable: the target prompt P_t (n x d, from n unique sampled real token embeddings) and
the attention module h = LayerNorm(W_up SiLU(W_down x)) with W_down (d -> G) and W_up
(G -> d), both without bias, as the official code. Frozen: k source prompts loaded from
safetensors files (key ``prompt``, shape (n, d): what a ``simple`` run exports as
``prompt.safetensors``) or PEFT prompt-tuning adapter folders (``superpos export``; a sweep spec can take them from another sweep's runs,
trainables/chain.py).

Without source prompts the attention runs over the target prompt alone (weight 1), the
attention module gets no gradient, and the method is simple prompt tuning at lr 0.3: not the
paper's ATTEMPT. So no source prompts is refused unless asked for with ``source_prompts:
"none"`` (CLI ``--source-prompts none``); such runs are tagged and the report says so.

Forward (the official "sub" method, methods.md section 1): x = max-pool of the input
embeddings over (unmasked) tokens; pool_j = max-pool of each of the k source prompts and of
P_t; score_j = <h, pool_j> / T; a = softmax over the k+1 prompts; the instance prompt is
sum_j a_j P_j + P_t, so it differs per example. T defaults to d * e (the official 2087 for
d = 768). Paper: G = 100, lr 0.3, weight decay 1e-5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from superpos.errors import ConfigError, check_finite
from superpos.adapter import adapter_prompt, is_adapter_dir
from superpos.files import load_tensors
from superpos.methods.base import PromptMethod, SampledInitConfig


#: the value of ``source_prompts`` that runs ATTEMPT without source prompts on purpose
NO_SOURCES = "none"


@dataclass
class AttemptConfig(SampledInitConfig):
    lr: float = 0.3
    weight_decay: float = 1e-5
    bottleneck: int = 100
    #: source prompt files, or NO_SOURCES to run without on purpose (an empty list is refused)
    source_prompts: list[str] | str = field(default_factory=list)
    #: softmax temperature T; None means d * e
    temperature: float | None = None

    def validate(self):
        super().validate()
        if self.bottleneck < 1:
            raise ConfigError(f"bottleneck must be >= 1, got {self.bottleneck}")
        if self.temperature is not None:
            check_finite("temperature", self.temperature, where="or unset for d*e")
        if self.source_prompts == NO_SOURCES:
            return
        if isinstance(self.source_prompts, str) or not self.source_prompts:
            raise ConfigError(
                f"ATTEMPT needs source prompts (source_prompts: .safetensors files of simple prompt tuning runs on the source tasks; "
                f"SuperPos paper section 3.4), got {self.source_prompts!r}; a sweep spec can take them from another sweep "
                f"({{sweep: NAME, tasks: [...]}}); write source_prompts: {NO_SOURCES} to run without them (not the paper's ATTEMPT)"
            )
        for path in self.source_prompts:
            if not (str(path).endswith(".safetensors") or is_adapter_dir(path)):
                raise ConfigError(f"source prompt {path!r} is neither a .safetensors file nor a PEFT prompt-tuning adapter folder")


def load_source_prompt(path: str, n: int, d: int) -> torch.Tensor:
    """Key ``prompt`` of a superpos prompt file, or the prompt of a PEFT prompt-tuning adapter folder."""
    if is_adapter_dir(path):
        return adapter_prompt(path, n, d)
    tensors = load_tensors(path, "source prompt file")
    if "prompt" not in tensors:
        raise ConfigError(f"source prompt file {path} holds no tensor 'prompt' (keys: {', '.join(tensors)})")
    prompt = tensors["prompt"].float()
    if tuple(prompt.shape) != (n, d):
        raise ConfigError(f"source prompt {path} has shape {tuple(prompt.shape)}, expected ({n}, {d}) = (prompt_len, hidden size)")
    return prompt


def masked_max(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return x.masked_fill(~mask.bool().unsqueeze(-1), float("-inf")).amax(1)


class AttemptPrompt(PromptMethod):
    name = "attempt"
    input_dependent = True

    def __init__(self, config: AttemptConfig, vocab: torch.Tensor, generator: torch.Generator, candidates: torch.Tensor | None = None):
        super().__init__(config)
        n, d = config.prompt_len, vocab.shape[1]
        self.target = self._sampled_prompt(vocab, n, generator, candidates)
        paths = [] if config.source_prompts == NO_SOURCES else config.source_prompts
        sources = [load_source_prompt(p, n, d) for p in paths]
        self.register_buffer("sources", torch.stack(sources) if sources else torch.empty(0, n, d))
        self.temperature = config.temperature or d * math.e
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
            self.down = nn.Linear(d, config.bottleneck, bias=False)
            self.up = nn.Linear(config.bottleneck, d, bias=False)
        self.norm = nn.LayerNorm(d)

    def attention(self, inputs_embeds, attention_mask) -> torch.Tensor:
        """Attention weights (B, k+1) over the k source prompts and the target prompt."""
        x = masked_max(inputs_embeds.float(), attention_mask)
        h = self.norm(self.up(nn.functional.silu(self.down(x))))
        prompts = torch.cat([self.sources, self.target.unsqueeze(0)])  # (k+1, n, d)
        return torch.softmax(h @ prompts.amax(1).T / self.temperature, dim=-1)

    def forward(self, inputs_embeds, attention_mask):
        a = self.attention(inputs_embeds, attention_mask)
        prompts = torch.cat([self.sources, self.target.unsqueeze(0)])
        return torch.einsum("bk,knd->bnd", a, prompts) + self.target
