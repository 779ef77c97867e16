"""PEFT prompt-tuning adapter folders: the one module that reads and writes them.

The on-disk format is PEFT 0.21's, written here without importing peft, so that
``peft.PeftModel.from_pretrained(base, folder)`` loads a folder with no superpos installed:

* ``adapter_config.json``: ``peft_type`` PROMPT_TUNING, ``task_type`` from the backbone's kind
  (``TASK_TYPES``), ``num_virtual_tokens`` n, ``token_dim`` d, ``num_transformer_submodules`` 1
  (superpos prompts only the encoder input of T5; PEFT's seq2seq default of 2 would add a
  decoder prompt that superpos never trained), ``num_attention_heads``, ``num_layers`` (read
  from the model config as PEFT reads them), ``prompt_tuning_init`` RANDOM (the weights are
  loaded, so the init is never used), ``base_model_name_or_path``, ``inference_mode`` true;
* ``adapter_model.safetensors``: the single key ``prompt_embeddings``, (n, d), fp32;
* ``README.md``: the model card the writer passes (what the prompt is and how to load it).

``read_adapter`` is the way in: ``--init-from`` (simple prompt tuning), ATTEMPT's source
prompts and ``superpos evaluate`` read folders through it; ``write_adapter`` the way out
(``superpos export``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from superpos.errors import ConfigError
from superpos.files import check_out_path, load_tensors, umask_mode, write_tensors

ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
CARD_FILE = "README.md"
#: what export writes into an adapter folder: all that --overwrite replaces
EXPORT_FILES = (ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, CARD_FILE)
PEFT_KEY = "prompt_embeddings"
#: Backbone.kind -> PEFT task type
TASK_TYPES = {"seq2seq": "SEQ_2_SEQ_LM", "causal": "CAUSAL_LM", "encoder": "FEATURE_EXTRACTION"}
#: superpos presets whose weights are a hub model's (tiny-t5 is random-init: its own name stays)
HUB_NAMES = {"minilm": "sentence-transformers/all-MiniLM-L6-v2"}


# -- in -----------------------------------------------------------------------------------
def is_adapter_dir(path) -> bool:
    return Path(path).is_dir() and (Path(path) / ADAPTER_CONFIG_FILE).is_file()


def read_adapter(folder) -> tuple[dict, torch.Tensor]:
    """The adapter config and the (n, d) fp32 prompt of a PEFT prompt-tuning folder; ConfigError
    naming the folder and what is wrong otherwise. A seq2seq adapter saved with PEFT's default of
    two transformer submodules holds 2n rows, of which PEFT's forward puts the first n on the
    encoder input (peft_model.py, PeftModelForSeq2SeqLM.forward): those are the prompt."""
    folder = Path(folder)
    if not is_adapter_dir(folder):
        raise ConfigError(f"{folder} is not a PEFT adapter folder (no {ADAPTER_CONFIG_FILE})")
    try:
        config = json.loads((folder / ADAPTER_CONFIG_FILE).read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{folder / ADAPTER_CONFIG_FILE} is not valid JSON ({e.msg})") from None
    if config.get("peft_type") != "PROMPT_TUNING":
        raise ConfigError(f"{folder} holds a {config.get('peft_type')!r} adapter; allowed: PROMPT_TUNING (peft_type in {ADAPTER_CONFIG_FILE})")
    weights = folder / ADAPTER_WEIGHTS_FILE
    if not weights.is_file():
        raise ConfigError(f"{folder} has no {ADAPTER_WEIGHTS_FILE} (only safetensors weights are read)")
    tensors = load_tensors(weights, "adapter weights")
    if PEFT_KEY not in tensors:
        raise ConfigError(f"{weights} holds no tensor {PEFT_KEY!r} (keys: {', '.join(tensors)})")
    n = config.get("num_virtual_tokens")
    prompt = tensors[PEFT_KEY].float()
    if not isinstance(n, int) or prompt.dim() != 2 or prompt.shape[0] < n:
        raise ConfigError(f"{weights}: {PEFT_KEY} has shape {tuple(prompt.shape)}, num_virtual_tokens is {n!r}")
    if config.get("token_dim") is not None and config["token_dim"] != prompt.shape[1]:
        raise ConfigError(f"{folder / ADAPTER_CONFIG_FILE}: token_dim is {config['token_dim']!r}, but {weights} holds a prompt of width {prompt.shape[1]}")
    return config, prompt[:n].contiguous()


def adapter_prompt(folder, n: int, d: int) -> torch.Tensor:
    """The adapter's prompt, checked against the backbone's prompt length n and hidden size d."""
    _, prompt = read_adapter(folder)
    if tuple(prompt.shape) != (n, d):
        raise ConfigError(f"adapter {folder} has a ({prompt.shape[0]}, {prompt.shape[1]}) prompt; this run needs ({n}, {d}) = (prompt_len, hidden size of the model)")
    return prompt


# -- out ----------------------------------------------------------------------------------
def model_config_values(model_config) -> dict:
    """num_layers, num_attention_heads and token_dim as PEFT reads them from a model config
    (peft/utils/other.py, _prepare_prompt_learning_config)."""
    c = model_config.to_dict()

    def first(*keys):
        return next((c[k] for k in keys if c.get(k) is not None), None)

    return {
        "num_layers": first("num_hidden_layers", "num_layers", "n_layer"),
        "num_attention_heads": first("num_attention_heads", "n_head", "num_heads", "encoder_attention_heads"),
        "token_dim": first("hidden_size", "n_embd", "d_model"),
    }


def adapter_config(backbone, n: int) -> dict:
    if backbone.kind not in TASK_TYPES:
        raise ConfigError(f"no PEFT task type for a {backbone.kind!r} backbone ({backbone.name}); allowed kinds: {', '.join(TASK_TYPES)}")
    return {
        "peft_type": "PROMPT_TUNING",
        "task_type": TASK_TYPES[backbone.kind],
        "num_virtual_tokens": n,
        **model_config_values(backbone.model.config),
        "num_transformer_submodules": 1,
        "prompt_tuning_init": "RANDOM",
        "prompt_tuning_init_text": None,
        "tokenizer_name_or_path": None,
        "tokenizer_kwargs": None,
        "base_model_name_or_path": HUB_NAMES.get(backbone.name, backbone.name),
        "revision": None,
        "inference_mode": True,
        "modules_to_save": None,
        "auto_mapping": None,
    }


def check_out_dir(out: Path, overwrite: bool) -> None:
    """Before any work: an --out through a file is refused; an existing non-empty --out is
    refused unless ``overwrite``, and then only when it is an adapter folder (of which only the
    files export writes are replaced)."""
    check_out_path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise ConfigError(f"output folder {out} exists and is not empty; pass --overwrite to replace it")
        if not is_adapter_dir(out):
            raise ConfigError(f"output folder {out} is not an adapter folder; --overwrite replaces only adapter folders")


def write_adapter(out: Path, prompt: torch.Tensor, backbone, card: str, overwrite: bool = False) -> Path:
    """Write the folder next to ``out`` and move it (or, into an existing folder, each file)
    into place: a failure leaves ``out`` as it was."""
    out = Path(out)
    check_out_dir(out, overwrite)
    config = adapter_config(backbone, prompt.shape[0])
    if prompt.shape[1] != config["token_dim"]:
        raise ConfigError(f"prompt has width {prompt.shape[1]}, model {backbone.name} has hidden size {config['token_dim']}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(umask_mode(0o777))  # the folder as mkdir would make it (mkdtemp's is private)
    try:
        (tmp / ADAPTER_CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        write_tensors({PEFT_KEY: prompt.detach().float().cpu().contiguous()}, tmp / ADAPTER_WEIGHTS_FILE, metadata={"format": "pt"})
        (tmp / CARD_FILE).write_text(card)
        if out.exists():  # --overwrite: the files export writes are replaced, whatever else is there stays
            for name in EXPORT_FILES:
                os.replace(tmp / name, out / name)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
