"""The PromptMethod interface shared by every method (one module per method, as in peft).

A method owns its trainable parameters and answers four questions:

* ``param_groups()``: optimizer groups, each with its own weight decay (SuperPos excludes E);
* ``forward(inputs_embeds, attention_mask)``: the prompt for a batch, (B, n, d), or ``None``
  for methods that add no prompt (full fine-tuning);
* ``export()``: tensors to save; key ``"prompt"`` (n, d) where the prompt is input-independent;
* ``num_trainable()``: trainable parameter count.

Each method has a config dataclass beside it whose defaults are the SuperPos paper's
(section 3.4; methods.md section 1). ``lr`` and ``weight_decay`` live there too, since the
paper sets them per method.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

import torch
from torch import nn

from superpos.errors import ConfigError, check_finite


@dataclass
class MethodConfig:
    lr: float = 0.01
    weight_decay: float = 0.0
    #: number of prompt tokens n (paper: 10)
    prompt_len: int = 10
    min_prompt_len: ClassVar[int] = 1

    @classmethod
    def from_options(cls, options: dict, where: str = "method_options") -> "MethodConfig":
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ConfigError(f"unknown option(s) {', '.join(unknown)} in {where}; allowed: {', '.join(sorted(known))}")
        cfg = cls(**options)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        check_finite("lr", self.lr)
        check_finite("weight_decay", self.weight_decay, positive=False)
        if self.prompt_len < self.min_prompt_len:
            raise ConfigError(f"prompt_len must be >= {self.min_prompt_len}, got {self.prompt_len}")


@dataclass
class SampledInitConfig(MethodConfig):
    """Options of methods initialised from sampled vocabulary embeddings.

    The paper samples "unique token embeddings from the embedding layer" (section 3.4) and
    names no special tokens; PEFT's ``PromptTuningInit.SAMPLE_VOCAB`` draws any row of the
    embedding table, with replacement (``torch.randint(0, num_embeddings, ...)``), padded rows,
    pad, EOS, UNK and T5's sentinels included. Here the draw is over real tokens without
    replacement, and by default without the tokenizer's special and added tokens (pad, EOS,
    UNK, T5's 100 sentinels: rows the model never reads as words); ``sample_special_tokens:
    true`` keeps them in the draw.
    """

    sample_special_tokens: bool = False


def sampleable_ids(tokenizer, vocab_size: int, special: bool) -> torch.Tensor:
    """Ids a prompt initialisation may draw: the ``vocab_size`` real token rows, less every id
    of ``tokenizer.all_special_ids`` and of its added vocabulary unless ``special``. Works for
    any Hugging Face tokenizer, so every backbone gets the same rule."""
    ids = torch.arange(vocab_size)
    if special:
        return ids
    excluded = set(tokenizer.all_special_ids) | set(tokenizer.get_added_vocab().values())
    keep = torch.ones(vocab_size, dtype=torch.bool)
    keep[[i for i in excluded if 0 <= i < vocab_size]] = False
    return ids[keep]


def sample_token_ids(candidates: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k unique ids drawn from ``candidates`` (1-D real vocabulary ids)."""
    n = len(candidates)
    if not 1 <= k <= n:
        raise ConfigError(f"cannot sample {k} unique tokens from a vocabulary of {n} sampleable tokens; allowed: 1..{n}")
    return candidates[torch.randperm(n, generator=generator)[:k]]


class PromptMethod(nn.Module):
    name: str = ""
    #: the prompt differs per example (ATTEMPT), so no single prompt can be exported
    input_dependent: bool = False
    #: trains the backbone's own weights (full fine-tuning): never fused with other trials
    trains_backbone: bool = False

    def __init__(self, config: MethodConfig):
        super().__init__()
        self.config = config

    def param_groups(self) -> list[dict]:
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"params": params, "weight_decay": self.config.weight_decay, "lr": self.config.lr}]

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor | None:
        """The (B, n, d) prompt; input-independent methods repeat ``prompt_matrix()`` per example."""
        return self.prompt_matrix().unsqueeze(0).expand(inputs_embeds.shape[0], -1, -1)

    def prompt_matrix(self) -> torch.Tensor:
        """The (n, d) prompt of input-independent methods."""
        raise NotImplementedError

    def export(self) -> dict[str, torch.Tensor]:
        out = {k: v.detach().clone().contiguous() for k, v in self.state_dict().items()}
        if not self.input_dependent:
            with torch.no_grad():
                out["prompt"] = self.prompt_matrix().detach().float().contiguous()
        return out

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def _sampled_prompt(self, vocab: torch.Tensor, n: int, generator: torch.Generator, candidates: torch.Tensor | None) -> nn.Parameter:
        """n unique sampled real-token embeddings as a trainable prompt (ids kept as ``token_ids``)."""
        ids = sample_token_ids(torch.arange(vocab.shape[0]) if candidates is None else candidates, n, generator)
        self.register_buffer("token_ids", ids)
        return nn.Parameter(vocab[ids].detach().clone().float())
