"""Prompt methods by name, each a module with its config dataclass beside it."""

from __future__ import annotations

import torch

from superpos.errors import ConfigError, choose
from superpos.methods.attempt import AttemptConfig, AttemptPrompt
from superpos.methods.base import MethodConfig, PromptMethod, SampledInitConfig, sampleable_ids
from superpos.methods.full import FullConfig, FullFineTuning
from superpos.methods.lowrank import LowRankConfig, LowRankPrompt
from superpos.methods.residual import ResidualConfig, ResidualPrompt
from superpos.methods.simple import SimpleConfig, SimplePrompt
from superpos.methods.superpos import SuperPosConfig, SuperPosPrompt

METHODS: dict[str, tuple[type[MethodConfig], type[PromptMethod]]] = {
    "simple": (SimpleConfig, SimplePrompt),
    "superpos": (SuperPosConfig, SuperPosPrompt),
    "residual": (ResidualConfig, ResidualPrompt),
    "attempt": (AttemptConfig, AttemptPrompt),
    "lowrank": (LowRankConfig, LowRankPrompt),
    "full": (FullConfig, FullFineTuning),
}


def method_config(name: str, options: dict, where: str = "method_options") -> MethodConfig:
    choose("method", name, list(METHODS), where)
    return METHODS[name][0].from_options(options, where)


def build_method(name: str, config: MethodConfig, backbone, generator: torch.Generator) -> PromptMethod:
    """Instantiate a method on a backbone; init draws only from ``generator``."""
    cls = METHODS[name][1]
    if cls is FullFineTuning:
        return cls(config, backbone)
    vocab = backbone.vocab_embeddings()
    if not isinstance(config, SampledInitConfig):
        return cls(config, vocab.float().cpu(), generator)
    candidates = sampleable_ids(backbone.tokenizer, vocab.shape[0], config.sample_special_tokens)
    if getattr(config, "m", 1) > len(candidates):
        what = "real tokens" if config.sample_special_tokens else "real tokens that are no special or added token (sample_special_tokens: false)"
        raise ConfigError(f"m = {config.m} exceeds the vocabulary of {backbone.name} ({len(candidates)} {what}); allowed: 1..{len(candidates)}")
    return cls(config, vocab.float().cpu(), generator, candidates)


__all__ = ["METHODS", "MethodConfig", "PromptMethod", "build_method", "method_config"]
