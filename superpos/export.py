"""``superpos export``: a run's effective prompt as a PEFT prompt-tuning adapter folder.

``export_run_dir`` turns a run directory into a folder that ``peft.PeftModel.from_pretrained(base,
folder)`` loads with no superpos installed (the format: ``superpos.adapter``), with a
``README.md`` model card: method, task, template, label texts, score, run id and the Python that
loads it and classifies one example.

Every input-independent method exports its effective prompt, the ``prompt`` tensor of
``prompt.safetensors`` (``PromptMethod.prompt_matrix()`` in eval mode): simple P, SuperPos E p',
Residual's projected prompt (MLP applied), low-rank A B. ATTEMPT's prompt depends on the input
and full fine-tuning has none: both are refused, as is an encoder run with a trained linear head
(a PEFT prompt adapter holds no head).

Encoder backbones (MiniLM) export with ``task_type`` FEATURE_EXTRACTION: PEFT's forward then
returns the prompted encoder's hidden states exactly as superpos computes them; the pooling
over the input positions and the cosine with the label texts' embeddings are not part of any
PEFT model, so the folder's README shows them in a few lines.
"""

from __future__ import annotations

from pathlib import Path

from superpos.adapter import HUB_NAMES, check_out_dir, write_adapter
from superpos.backbones import load_backbone
from superpos.backbones.encoder import EncoderBackbone
from superpos.config import TrainConfig
from superpos.errors import ConfigError
from superpos.run_dir import effective_prompt, read_run_dir, saved_prompt
from superpos.tasks import get_task

#: what a prompt-free or input-dependent method lacks, by method name
NOT_EXPORTABLE = {
    "attempt": "ATTEMPT's prompt depends on the input (an attention over source prompts per example), so no single prompt exists",
    "full": "full fine-tuning trains the model's own weights and has no prompt",
}


def check_exportable(config: TrainConfig, where: str) -> None:
    if config.method in NOT_EXPORTABLE:
        raise ConfigError(f"cannot export {where} (method {config.method!r}): {NOT_EXPORTABLE[config.method]}; exportable: simple, superpos, residual, lowrank")
    if config.model == "minilm" and config.head != "similarity":
        raise ConfigError(f"cannot export {where}: it trained a {config.head!r} head, which a PEFT prompt adapter cannot hold; exportable: head 'similarity'")


def model_card(config: TrainConfig, backbone, n: int, score: float | None, run_id: str, folder: str) -> str:
    """The folder's README: what the prompt is and the exact Python that uses it."""
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
    elif backbone.name == "t5-base-random":
        load_base = "from superpos.backbones import build_t5_base_random  # superpos's random-init T5-base shape\nbase, tok = build_t5_base_random()"
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
def export_prompt(config: TrainConfig, tensors: dict, out, *, where: str, score=None, run_id: str = "", overwrite: bool = False) -> Path:
    """Write the adapter folder of a run's config and prompt tensors (everything checked first)."""
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
