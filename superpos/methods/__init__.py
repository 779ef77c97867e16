"""Prompt methods by name, each a module with its config dataclass beside it."""

from __future__ import annotations

import torch

from superpos.errors import ConfigError, choose
from superpos.methods.attempt import AttemptConfig, AttemptPrompt
from superpos.methods.base import MethodConfig, PromptMethod
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
    check_vocabulary(config, backbone.name, vocab.shape[0])
    return cls(config, vocab.float().cpu(), generator)


def check_vocabulary(config: MethodConfig, model: str, vocab_size: int | None = None) -> None:
    """SuperPos's m within the model's real tokens. ``vocab_size`` defaults to
    ``superpos.backbones.vocab_size_of(model)`` (tokenizer and config only, no weights), so
    a trainer or a sweep driver can check before any model load."""
    m = getattr(config, "m", None)
    if m is None:
        return
    if vocab_size is None:
        from superpos.backbones import vocab_size_of

        vocab_size = vocab_size_of(model)
    if m > vocab_size:
        raise ConfigError(f"m = {m} exceeds the vocabulary of {model} ({vocab_size} real tokens); allowed: 1..{vocab_size}")


__all__ = ["METHODS", "MethodConfig", "PromptMethod", "build_method", "check_vocabulary", "method_config"]
