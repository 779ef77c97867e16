"""Prompt methods by name, each a module with its config dataclass beside it."""

from __future__ import annotations

import torch

from superpos.backbones import vocab_size_of
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
    what = "real tokens" if config.sample_special_tokens else "real tokens that are no special or added token (sample_special_tokens: false)"
    check_vocabulary(config, backbone.name, len(candidates), what)
    return cls(config, vocab.float().cpu(), generator, candidates)


def check_vocabulary(config: MethodConfig, model: str, vocab_size: int | None = None, what: str = "real tokens") -> None:
    """SuperPos's m within the tokens its initialisation may draw. ``vocab_size`` defaults to
    ``superpos.backbones.vocab_size_of(model)`` (tokenizer and config only, no weights), so a
    trainer or a sweep driver can check before any model load; that bound counts special
    tokens too, and ``build_method`` checks again against the exact candidates."""
    m = getattr(config, "m", None)
    if m is None:
        return
    if vocab_size is None:
        vocab_size = vocab_size_of(model)
    if m > vocab_size:
        raise ConfigError(f"m = {m} exceeds the vocabulary of {model} ({vocab_size} {what}); allowed: 1..{vocab_size}")


__all__ = ["METHODS", "MethodConfig", "PromptMethod", "build_method", "check_vocabulary", "method_config"]
