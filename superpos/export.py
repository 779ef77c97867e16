"""PEFT prompt-tuning adapters: a run's effective prompt out, and prompts trained anywhere in.

``export_run_dir`` turns a run directory into a folder that ``peft.PeftModel.from_pretrained(base,
folder)`` loads with no superpos installed (PEFT 0.21's on-disk format, written here without
importing peft):

* ``adapter_config.json``: ``peft_type`` PROMPT_TUNING, ``task_type`` from the backbone's kind
  (``TASK_TYPES``), ``num_virtual_tokens`` n, ``token_dim`` d, ``num_transformer_submodules`` 1
  (superpos prompts only the encoder input of T5; PEFT's seq2seq default of 2 would add a
  decoder prompt that superpos never trained), ``num_attention_heads``, ``num_layers`` (read
  from the model config as PEFT reads them), ``prompt_tuning_init`` RANDOM (the weights are
  loaded, so the init is never used), ``base_model_name_or_path``, ``inference_mode`` true;
* ``adapter_model.safetensors``: the single key ``prompt_embeddings``, (n, d), fp32;
* ``README.md``: method, task, template, label texts, score, run id and the Python that loads
  it and classifies one example.

Every input-independent method exports its effective prompt, the ``prompt`` tensor of
``prompt.safetensors`` (``PromptMethod.prompt_matrix()`` in eval mode): simple P, SuperPos E p',
Residual's projected prompt (MLP applied), low-rank A B. ATTEMPT's prompt depends on the input
and full fine-tuning has none: both are refused, as is an encoder run with a trained linear head
(a PEFT prompt adapter holds no head).

Encoder backbones (MiniLM) export with ``task_type`` FEATURE_EXTRACTION: PEFT's forward then
returns the prompted encoder's hidden states exactly as superpos computes them; the pooling
over the input positions and the cosine with the label texts' embeddings are not part of any
PEFT model, so the folder's README shows them in a few lines.

``read_adapter`` is the way in: ``--init-from`` (simple prompt tuning) and ATTEMPT's source
prompts read PEFT prompt-tuning folders through it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from superpos.backbones.encoder import EncoderBackbone
from superpos.config import TrainConfig
from superpos.errors import ConfigError
from superpos.run_dir import BEST_PROMPT_FILE, CONFIG_FILE, METRICS_FILE, PROMPT_FILE, RESULT_FILE

ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
CARD_FILE = "README.md"
PEFT_KEY = "prompt_embeddings"
#: Backbone.kind -> PEFT task type
TASK_TYPES = {"seq2seq": "SEQ_2_SEQ_LM", "causal": "CAUSAL_LM", "encoder": "FEATURE_EXTRACTION"}
#: superpos presets whose weights are a hub model's (tiny-t5 is random-init: its own name stays)
HUB_NAMES = {"minilm": "sentence-transformers/all-MiniLM-L6-v2"}
#: what a prompt-free or input-dependent method lacks, by method name
NOT_EXPORTABLE = {
    "attempt": "ATTEMPT's prompt depends on the input (an attention over source prompts per example), so no single prompt exists",
    "full": "full fine-tuning trains the model's own weights and has no prompt",
}


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
    tensors = load_file(weights)
    if PEFT_KEY not in tensors:
        raise ConfigError(f"{weights} holds no tensor {PEFT_KEY!r} (keys: {', '.join(tensors)})")
    n = config.get("num_virtual_tokens")
    prompt = tensors[PEFT_KEY].float()
    if not isinstance(n, int) or prompt.dim() != 2 or prompt.shape[0] < n:
        raise ConfigError(f"{weights}: {PEFT_KEY} has shape {tuple(prompt.shape)}, num_virtual_tokens is {n!r}")
    return config, prompt[:n].contiguous()


def adapter_prompt(folder, n: int, d: int) -> torch.Tensor:
    """The adapter's prompt, checked against the backbone's prompt length n and hidden size d."""
    _, prompt = read_adapter(folder)
    if tuple(prompt.shape) != (n, d):
        raise ConfigError(f"adapter {folder} has a ({prompt.shape[0]}, {prompt.shape[1]}) prompt; this run needs ({n}, {d}) = (prompt_len, hidden size of the model)")
    return prompt


# -- out ----------------------------------------------------------------------------------
def check_exportable(config: TrainConfig, where: str) -> None:
    if config.method in NOT_EXPORTABLE:
        raise ConfigError(f"cannot export {where} (method {config.method!r}): {NOT_EXPORTABLE[config.method]}; exportable: simple, superpos, residual, lowrank")
    if config.model == "minilm" and config.head != "similarity":
        raise ConfigError(f"cannot export {where}: it trained a {config.head!r} head, which a PEFT prompt adapter cannot hold; exportable: head 'similarity'")


def effective_prompt(tensors: dict, where: str) -> torch.Tensor:
    if "prompt" not in tensors:
        raise ConfigError(f"{where} holds no tensor 'prompt' (keys: {', '.join(tensors)})")
    return tensors["prompt"].float().contiguous()


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
    """Before any work: an existing non-empty --out is refused unless ``overwrite``, and then
    only when it is an adapter folder (nothing else is ever deleted)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise ConfigError(f"output folder {out} exists and is not empty; pass --overwrite to replace it")
        if not is_adapter_dir(out):
            raise ConfigError(f"output folder {out} is not an adapter folder; --overwrite replaces only adapter folders")


def write_adapter(out: Path, prompt: torch.Tensor, backbone, card: str, overwrite: bool = False) -> Path:
    """Write the folder next to ``out`` and move it into place: a failure leaves ``out`` as it was."""
    out = Path(out)
    check_out_dir(out, overwrite)
    config = adapter_config(backbone, prompt.shape[0])
    if prompt.shape[1] != config["token_dim"]:
        raise ConfigError(f"prompt has width {prompt.shape[1]}, model {backbone.name} has hidden size {config['token_dim']}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / ADAPTER_CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        save_file({PEFT_KEY: prompt.detach().float().cpu().contiguous()}, tmp / ADAPTER_WEIGHTS_FILE, metadata={"format": "pt"})
        (tmp / CARD_FILE).write_text(card)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def model_card(config: TrainConfig, backbone, n: int, score: float | None, run_id: str, folder: str) -> str:
    """The folder's README: what the prompt is and the exact Python that uses it."""
    from superpos.tasks import get_task

    task = get_task(config.task)
    labels = task.candidate_texts(config.template) if task.regression else task.label_texts(config.template)
    base = HUB_NAMES.get(backbone.name, backbone.name)
    head = [
        f"# Soft prompt: {config.method} on {config.task} ({base})", "",
        "A PEFT prompt-tuning adapter exported by superpos (`superpos export`).", "",
        f"- method: `{config.method}` (the effective {n} x {backbone.hidden_size} prompt)",
        f"- task: `{config.task}`, template `{config.template}`: input `\"{task.prefix} "
        + " ".join(f"{k}: ..." for k in task.fields) + "\"`",
        f"- label texts: {', '.join(f'`{t}`' for t in labels) if not task.regression else 'numbers on the 0.2 grid, `0.0` to `5.0`'}",
        f"- score (Table 1 score of this prompt on the validation split): {score if score is not None else 'unknown'}",
        f"- run: {run_id or 'unknown'}; dropout of the frozen model {'on' if config.dropout else 'off'}, seed {config.seed}",
        "",
    ]
    if backbone.name == "tiny-t5":
        load_base = "from superpos.backbones import build_tiny_t5  # tiny-t5 is superpos's random-init test model\nbase, tok = build_tiny_t5()"
    elif backbone.kind == "encoder":
        load_base = f'from transformers import AutoModel, AutoTokenizer\nbase = AutoModel.from_pretrained("{base}")\ntok = AutoTokenizer.from_pretrained("{base}")'
    elif backbone.kind == "causal":
        load_base = f'from transformers import AutoModelForCausalLM, AutoTokenizer\nbase = AutoModelForCausalLM.from_pretrained("{base}")\ntok = AutoTokenizer.from_pretrained("{base}")'
    else:
        load_base = f'from transformers import AutoModelForSeq2SeqLM, AutoTokenizer\nbase = AutoModelForSeq2SeqLM.from_pretrained("{base}")\ntok = AutoTokenizer.from_pretrained("{base}")'
    example = f"{task.prefix} " + " ".join(f"{k}: ..." for k in task.fields)
    if backbone.kind == "encoder":
        classes = EncoderBackbone.class_texts(task)
        use = [
            "import torch, torch.nn.functional as F",
            f"x = tok([{example!r}], return_tensors='pt')",
            "hidden = model(**x).last_hidden_state[:, model.peft_config['default'].num_virtual_tokens:]  # input positions only",
            "pooled = F.normalize((hidden * x.attention_mask[..., None]).sum(1) / x.attention_mask.sum(1, keepdim=True), dim=-1)",
            f"c = tok({classes!r}, return_tensors='pt', padding=True)",
            "h = model.get_base_model()(**c).last_hidden_state  # the label texts are embedded without the prompt",
            "classes = F.normalize((h * c.attention_mask[..., None]).sum(1) / c.attention_mask.sum(1, keepdim=True), dim=-1)",
            f"print({classes!r}[int((pooled @ classes.T).argmax())])",
        ]
    else:
        budget = max(len(backbone.tokenizer(t)["input_ids"]) for t in task.candidate_texts(config.template))
        use = [
            f"x = tok([{example!r}], return_tensors='pt')",
            f"out = model.generate(input_ids=x.input_ids, attention_mask=x.attention_mask, max_new_tokens={budget}, do_sample=False)",
            "print(tok.decode(out[0], skip_special_tokens=True))  # one of the label texts above",
        ]
    code = [load_base, "from peft import PeftModel", "", f'model = PeftModel.from_pretrained(base, "{folder}").eval()', *use]
    return "\n".join([*head, "```python", *code, "```", ""])


# -- a run directory ----------------------------------------------------------------------
def saved_prompt(run_dir) -> tuple[Path, float | None]:
    """The prompt file that export and evaluate use, and the validation score it was evaluated
    at: the best evaluation's (``best_prompt.safetensors``: the run's reported score) where the
    run kept one, else the last evaluation's (``prompt.safetensors``; full fine-tuning)."""
    run_dir = Path(run_dir)
    path = run_dir / METRICS_FILE
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    if (run_dir / BEST_PROMPT_FILE).is_file():
        return run_dir / BEST_PROMPT_FILE, max((line["score"] for line in lines), default=None)
    return run_dir / PROMPT_FILE, lines[-1].get("score") if lines else None


def read_run_dir(run_dir) -> tuple[TrainConfig, dict, dict]:
    """A finished run's config, saved prompt tensors (``saved_prompt``) and result; ConfigError if it is no such run."""
    run_dir = Path(run_dir)
    prompt = saved_prompt(run_dir)[0]
    missing = [f.name for f in (run_dir / CONFIG_FILE, prompt) if not f.is_file()]
    if missing:
        raise ConfigError(f"{run_dir} is not a finished superpos run directory (no {', '.join(missing)})")
    config = TrainConfig.load(run_dir / CONFIG_FILE)
    result = json.loads((run_dir / RESULT_FILE).read_text()) if (run_dir / RESULT_FILE).is_file() else {}
    return config, load_file(prompt), result


def export_prompt(config: TrainConfig, tensors: dict, out, *, where: str, score=None, run_id: str = "", overwrite: bool = False) -> Path:
    """Write the adapter folder of a run's config and prompt tensors (everything checked first)."""
    from superpos.backbones import load_backbone

    check_exportable(config, where)
    prompt = effective_prompt(tensors, where)
    check_out_dir(Path(out), overwrite)
    backbone = load_backbone(config.model, dropout=config.dropout, head=config.head, device="cpu")
    card = model_card(config, backbone, prompt.shape[0], score, run_id, str(out))
    return write_adapter(Path(out), prompt, backbone, card, overwrite)


def export_run_dir(run_dir, out, overwrite: bool = False) -> Path:
    """``superpos export RUN_DIR --out FOLDER``."""
    config, tensors, _ = read_run_dir(run_dir)
    return export_prompt(config, tensors, out, where=f"run directory {run_dir}", score=saved_prompt(run_dir)[1], run_id=f"run directory {run_dir}", overwrite=overwrite)
