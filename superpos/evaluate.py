"""``superpos evaluate``: a saved prompt on a task's validation split or on any file in its format.

The prompt comes from a run directory (its ``prompt.safetensors``: the prompt of the run's last
evaluation) or a PEFT prompt-tuning adapter folder; ``analysis.export`` adds MLflow runs. It is
put into a simple-prompt trial and evaluated by the Trainer's own evaluation path
(``Trainer._predict_split``: same batching, ordering, generation budget and parsing), on the
examples the run itself evaluated (validation split, ``max_eval_examples``, template and input
length from the run's config). A run's prompt therefore scores exactly what the run logged at
its last evaluation, which is its best score when the last evaluation was the best.

Outputs: the metrics and the Table 1 score (files with gold labels); ``--predictions FILE``, one
JSON line per example (index, input, predicted label text or null when the generation was no
label, parsed label, gold); ``--submission DIR``, the file a benchmark server takes for a test
file without labels:

* GLUE (gluebenchmark.com): ``<TASK>.tsv`` (``CoLA``, ``SST-2``, ``MRPC``, ``STS-B``, ``QQP``,
  ``MNLI-m`` / ``MNLI-mm``, ``QNLI``, ``RTE``) with header ``index<TAB>prediction``; labels as
  the task's original files spell them (``0``/``1``; ``entailment``/``not_entailment``; MNLI's
  three words; STS-B a number in [0, 5]);
* SuperGLUE (super.gluebenchmark.com): ``<Task>.jsonl`` (``BoolQ``, ``CB``, ``COPA``, ``RTE``,
  ``WiC``), one ``{"idx": ..., "label": ...}`` a line; labels ``"true"``/``"false"`` (BoolQ,
  WiC), the label words (CB, RTE), 0/1 (COPA). MultiRC's nested format is not written.

A generation that is no label has no prediction; the servers need one for every line, so the
submission writes the first label there and the count is reported.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from superpos import metrics as metric_fns
from superpos.adapter import is_adapter_dir, read_adapter
from superpos.backbones import load_backbone
from superpos.config import TrainConfig
from superpos.data import encode_split
from superpos.errors import ConfigError, DataError
from superpos.files import check_out_path
from superpos.run_dir import effective_prompt, read_run_dir, saved_prompt
from superpos.tasks import get_task
from superpos.tasks.base import Example, Task
from superpos.tasks.readers import read_jsonl, read_parquet, read_tsv
from superpos.tasks.sources import load_examples
from superpos.tasks.splits import load_splits
from superpos.train import Trainer, pick_device

GLUE_SUBMISSION = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "qqp": "QQP", "mnli": "MNLI-m", "qnli": "QNLI", "rte": "RTE"}
SUPERGLUE_SUBMISSION = {"boolq": "BoolQ", "cb": "CB", "copa": "COPA", "superglue_rte": "RTE", "wic": "WiC"}
#: base_model_name_or_path of an exported adapter -> superpos model name
MODEL_NAMES = {"sentence-transformers/all-MiniLM-L6-v2": "minilm"}


@dataclass
class Examples:
    """What is evaluated: the examples, their ids (file index / idx), whether they carry gold labels."""

    examples: list[Example]
    ids: list
    labelled: bool
    where: str


class Evaluator(Trainer):
    """The Trainer's evaluation path over one fixed (n, d) prompt, without training data."""

    def __init__(self, config: TrainConfig, prompt: torch.Tensor, head_state: dict | None = None):
        config = dataclasses.replace(config, method="simple", lr=None, weight_decay=None, method_options={"prompt_len": prompt.shape[0]}).resolve()
        self.configs, self.out_dirs, self.callbacks, self.progress = [config], [None], [], False
        self.device = pick_device(config.device)
        self.task = get_task(config.task)
        self.backbone = load_backbone(config.model, dropout=config.dropout, head=config.head, device=self.device, fast=config.forward == "fast", evaluation=config.evaluation)
        if prompt.shape[1] != self.backbone.hidden_size:
            raise ConfigError(f"the prompt is {tuple(prompt.shape)}; model {config.model} needs width {self.backbone.hidden_size}")
        self.backbone.prepare(self.task, config.template)
        self.train_split = ()
        trial = self._build_trial(config, None)
        with torch.no_grad():
            trial.method.prompt.copy_(prompt)
        if head_state:
            trial.head.load_state_dict(head_state)
        self.trials, self.fused_width = [trial], 1
        if self.device.type == "cuda":
            self.backbone.model.to(torch.bfloat16)

    def predict(self, data: Examples) -> list:
        c = self.configs[0]
        split = encode_split(self.backbone, self.task, data.examples, c.template, c.max_input_len)
        return self._predict_split(self.trials, split)[0]


# -- what a prompt and its examples come from -----------------------------------------------
def prompt_source(source, task: str | None = None, model: str | None = None, template: str = "t5", data_dir: str | None = None):
    """(config, prompt, head state, run score) of a run directory or a PEFT adapter folder."""
    source = Path(source)
    if is_adapter_dir(source):
        adapter, prompt = read_adapter(source)
        if task is None:
            raise ConfigError(f"{source} is an adapter folder: pass --task (it does not record one)")
        base = adapter.get("base_model_name_or_path") or ""
        model = model or MODEL_NAMES.get(base, base)
        if not model:
            raise ConfigError(f"{source} names no base model: pass --model")
        extra = {"data_dir": data_dir} if data_dir else {}
        return TrainConfig(task=task, model=model, template=template, **extra).validate(str(source)), prompt, None, None
    config, tensors, result = read_run_dir(source)
    if config.method in ("attempt", "full"):
        raise ConfigError(f"{source}: method {config.method!r} has no single saved prompt to evaluate; allowed: simple, superpos, residual, lowrank")
    if task is not None and task != config.task:
        raise ConfigError(f"{source} is a {config.task!r} run; --task {task} does not match")
    if data_dir:
        config = dataclasses.replace(config, data_dir=data_dir)
    head = {k[len("head."):]: v for k, v in tensors.items() if k.startswith("head.")}
    return config, effective_prompt(tensors, str(source)), head or None, saved_prompt(source)[1]


def validation_examples(config: TrainConfig) -> Examples:
    """The examples the run evaluated on (its split protocol's validation split, capped as it was)."""
    task = get_task(config.task)
    if config.split == "paper":
        examples = load_examples(task, "validation", config.data_dir, source=config.source)
    else:
        examples = load_splits(task, config.split, config.data_dir, source=config.source).validation
    examples = examples[: config.max_eval_examples]
    return Examples(examples, list(range(len(examples))), True, f"{task.name} validation split")


def read_task_file(task: Task, path) -> Examples:
    """Any file in the task's format (TSV, JSONL or hub Parquet), with or without labels (test
    files). GLUE test TSVs start with an ``index`` column (CoLA's test file has a header, its
    other files none); SuperGLUE rows carry ``idx``. Labels are all present or all absent."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no file {path}")
    if path.suffix == ".parquet":
        rows = [(i, r) for i, r in read_parquet(path)]
        label_key, id_key = "label", "idx"
    elif path.suffix == ".jsonl":
        rows, label_key, id_key = list(read_jsonl(path)), task.label_column, "idx"
    elif path.suffix == ".tsv":
        with open(path, encoding="utf-8-sig") as f:
            has_index = f.readline().startswith("index\t")
        rows, label_key, id_key = list(read_tsv(path, None if has_index else task.columns)), task.label_column, "index"
    else:
        raise ConfigError(f"{path}: unknown file type {path.suffix!r}; allowed: .tsv, .jsonl, .parquet")
    if not rows:
        raise DataError(f"{path} holds no rows")

    def labelled(row) -> bool:
        return row.get(label_key) not in (None, "", -1)

    has = [labelled(r) for _, r in rows]
    if any(has) and not all(has):
        lineno = rows[has.index(False)][0]
        raise DataError(f"{path}, line {lineno}: no label, while other rows have one (a file is either labelled or a test file)")
    if not has[0] and task.flatten is not None:
        raise ConfigError(f"{path}: unlabelled {task.name} files are not supported (MultiRC's nested test format)")
    placeholder = 0 if path.suffix == ".parquet" else (str(task.value_range[0]) if task.regression else next(iter(task.raw_labels)))
    examples, ids = [], []
    for i, (lineno, row) in enumerate(rows):
        if not has[0]:
            row = {**row, label_key: placeholder}
        where = f"{path}, line {lineno}"
        parsed = task.example_from_hub_row(row, where) if path.suffix == ".parquet" else task.example_from_row(row, where)
        examples += parsed
        ids += [row.get(id_key, row.get("id", i))] * len(parsed)  # QQP's test file names its index "id"
    return Examples(examples, ids, has[0], str(path))


# -- outputs ---------------------------------------------------------------------------------
def submission_file(task: Task, source_name: str) -> str:
    """The benchmark's file name for ``task``; ConfigError for tasks without one."""
    if task.name == "mnli" and "mismatched" in source_name:
        return "MNLI-mm.tsv"
    if task.name in GLUE_SUBMISSION:
        return GLUE_SUBMISSION[task.name] + ".tsv"
    if task.name in SUPERGLUE_SUBMISSION:
        return SUPERGLUE_SUBMISSION[task.name] + ".jsonl"
    allowed = ", ".join([*GLUE_SUBMISSION, *SUPERGLUE_SUBMISSION])
    raise ConfigError(f"no benchmark submission format for task {task.name!r} (MultiRC's nested format is not written); allowed: {allowed}")


def submission_label(task: Task, pred):
    """A prediction in the benchmark's label vocabulary (the task's original file spelling)."""
    if task.regression:
        lo, hi = task.value_range
        return min(hi, max(lo, float(pred)))
    raw = next(value for value, index in task.raw_labels.items() if index == pred)
    if isinstance(raw, bool):
        return "true" if raw else "false"
    return raw


def write_submission(task: Task, data: Examples, preds: list, out_dir: Path, name: str) -> tuple[Path, int]:
    invalid = sum(p is None for p in preds)
    fallback = task.value_range[0] if task.regression else 0
    labels = [submission_label(task, fallback if p is None else p) for p in preds]
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    if name.endswith(".tsv"):
        lines = ["index\tprediction", *(f"{i}\t{label}" for i, label in zip(data.ids, labels))]
    else:
        lines = [json.dumps({"idx": i, "label": label}) for i, label in zip(data.ids, labels)]
    path.write_text("\n".join(lines) + "\n")
    return path, invalid


def write_predictions(task: Task, template: str, data: Examples, preds: list, path: Path) -> None:
    def text(p):
        return None if p is None else (f"{p:.4g}" if task.regression else task.label_texts(template)[p])

    with open(path, "w") as f:
        for i, ex, p in zip(data.ids, data.examples, preds):
            row = {"index": i, "input": task.format_input(ex, template), "prediction": text(p), "label": p, "gold": ex.label if data.labelled else None}
            f.write(json.dumps(row) + "\n")


def check_outputs(predictions: Path | None, submission: Path | None, overwrite: bool, names: list[str]) -> None:
    """Before any work: existing output files are refused unless ``overwrite``."""
    if submission:
        check_out_path(submission, "--submission")
    if predictions:
        check_out_path(predictions.parent, "--predictions")
    targets = ([predictions] if predictions else []) + ([submission / n for n in names] if submission else [])
    taken = [str(p) for p in targets if p.exists()]
    if taken and not overwrite:
        raise ConfigError(f"{', '.join(taken)} exist(s); pass --overwrite to replace")


def evaluate(
    source,
    *,
    task: str | None = None,
    model: str | None = None,
    template: str = "t5",
    data_dir: str | None = None,
    file: str | None = None,
    predictions: str | None = None,
    submission: str | None = None,
    overwrite: bool = False,
    device: str | None = None,
) -> dict:
    """Evaluate a saved prompt; returns the summary ``superpos evaluate`` prints."""
    config, prompt, head, run_score = prompt_source(source, task, model, template, data_dir)
    if device:
        config = dataclasses.replace(config, device=device)
    task_obj = get_task(config.task)
    names = [submission_file(task_obj, Path(file or "").name)] if submission else []
    data = read_task_file(task_obj, file) if file else validation_examples(config)
    if submission and data.labelled and not file:
        raise ConfigError("--submission is for a test file without labels: pass it with --file")
    check_outputs(Path(predictions) if predictions else None, Path(submission) if submission else None, overwrite, names)
    evaluator = Evaluator(config, prompt, head)
    preds = evaluator.predict(data)
    summary = {"source": str(source), "task": config.task, "model": config.model, "data": data.where, "examples": len(data.examples)}
    if data.labelled:
        scores = metric_fns.compute(task_obj.metrics, preds, [e.label for e in data.examples], [e.group for e in data.examples])
        summary.update(metrics=scores, score=scores["score"])
        if run_score is not None and not file:
            summary["run_score"] = run_score
    if predictions:
        write_predictions(task_obj, config.template, data, preds, Path(predictions))
        summary["predictions"] = predictions
    if submission:
        path, invalid = write_submission(task_obj, data, preds, Path(submission), names[0])
        summary.update(submission=str(path), invalid_predictions=invalid)
    return summary
