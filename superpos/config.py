"""TrainConfig: everything that determines a run (with its seed), as plain data.

A run is a pure function of its resolved config: ``resolve()`` fills the method's defaults
(lr, weight decay and method options from the paper, section 3.4) so that config.json and
MLflow params record what actually ran. ``flat()``/``from_flat()`` give the one-level view
that sweep specs and MLflow use (method options such as ``m`` and ``softmax`` appear as
top-level keys there).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from superpos.backbones import check_model_name
from superpos.backbones.seq2seq import EVALUATIONS
from superpos.errors import ConfigError, choose
from superpos.methods import MethodConfig, method_config
from superpos.settings import default_data_dir
from superpos.tasks import TEMPLATES, get_task
from superpos.tasks.sources import SOURCES
from superpos.tasks.splits import SPLITS

SCHEDULES = ("constant", "linear")
DEVICES = ("auto", "cpu", "cuda")
FORWARDS = ("hf", "fast")  # see superpos.backbones.fast_t5


@dataclass
class TrainConfig:
    task: str = "rte"
    method: str = "superpos"
    model: str = "tiny-t5"
    data_dir: str = field(default_factory=lambda: str(default_data_dir()))
    epochs: int = 80
    batch_size: int = 32
    eval_batch_size: int = 64
    grad_accum: int = 1
    #: None: the method's paper default
    lr: float | None = None
    weight_decay: float | None = None
    #: dropout of the frozen model (the paper runs every method with and without)
    dropout: bool = True
    seed: int = 0
    template: str = "t5"
    split: str = "paper"
    #: "local" (files under data_dir: original formats or Parquet) or "hub" (datasets.load_dataset)
    source: str = "local"
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    #: input tokens per example (prompt excluded): T5's own maximum (512). A longer input is
    #: fitted by shortening its context field only (superpos.inputs); counts per split are logged
    max_input_len: int = 512
    #: evaluate every N optimizer steps as well as at the end of every epoch
    eval_every: int | None = None
    #: also checkpoint every N optimizer steps (spot instances); always at every evaluation
    checkpoint_every: int | None = None
    schedule: str = "constant"
    warmup_ratio: float = 0.0
    #: encoder backbones only: "similarity" (pure prompt tuning) or "linear"
    head: str = "similarity"
    device: str = "auto"
    #: T5 forward: "hf" (Hugging Face's modules) or "fast" (superpos.backbones.fast_t5: the same
    #: results, compiled on CUDA); a speed choice, not a result-changing one
    forward: str = "hf"
    #: seq2seq evaluation: "generate" (greedy decoding, the paper's) or "rank" (score each target text)
    evaluation: str = "generate"
    #: deterministic kernels (superpos.determinism: what is and is not deterministic on CUDA)
    deterministic: bool = False
    #: causal LMs: recompute activations in the backward (memory for time; results unchanged)
    gradient_checkpointing: bool = False
    #: method-specific options (m, softmax, p_init, prompt_len, bottleneck, ...)
    method_options: dict = field(default_factory=dict)

    # -- validation ---------------------------------------------------------------------
    def validate(self, where: str = "config") -> "TrainConfig":
        """Check every value that can be checked without loading the model or data."""
        get_task(self.task, where)
        method_config(self.method, self._method_options(), f"{where}: method options of {self.method}")
        check_model_name(self.model, where)
        choose("template", self.template, TEMPLATES, where)
        choose("split", self.split, SPLITS, where)
        choose("source", self.source, SOURCES, where)
        choose("schedule", self.schedule, SCHEDULES, where)
        choose("device", self.device, DEVICES, where)
        choose("forward", self.forward, FORWARDS, where)
        choose("evaluation", self.evaluation, EVALUATIONS, where)
        if self.model == "minilm" and (self.forward, self.evaluation) != ("hf", "generate"):
            raise ConfigError(f"model 'minilm' is an encoder: forward must be 'hf' and evaluation 'generate' (got {self.forward!r}, {self.evaluation!r}; {where})")
        for name in ("epochs", "batch_size", "eval_batch_size", "grad_accum", "max_input_len"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)} ({where})")
        for name in ("max_train_examples", "max_eval_examples", "eval_every", "checkpoint_every"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1 or unset, got {value} ({where})")
        if not isinstance(self.deterministic, bool):
            raise ConfigError(f"deterministic must be true or false, got {self.deterministic!r} ({where})")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio} ({where})")
        return self

    def _method_options(self) -> dict:
        opts = dict(self.method_options)
        if self.lr is not None:
            opts["lr"] = self.lr
        if self.weight_decay is not None:
            opts["weight_decay"] = self.weight_decay
        return opts

    def method_config(self) -> MethodConfig:
        return method_config(self.method, self._method_options())

    def resolve(self) -> "TrainConfig":
        """A copy with the method's defaults filled in (what config.json records)."""
        self.validate()
        mc = asdict(self.method_config())
        lr, wd = mc.pop("lr"), mc.pop("weight_decay")
        # a gs:// or s3:// data dir stays a URI (Path would fold its "//"); the sweep's nodes fetch from it
        data_dir = self.data_dir if "://" in self.data_dir else str(Path(self.data_dir))
        return dataclasses.replace(self, lr=lr, weight_decay=wd, data_dir=data_dir, method_options=mc)

    # -- views --------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "config") -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown key(s) {', '.join(unknown)} in {where}; allowed: {', '.join(sorted(known))}")
        return cls(**data)

    def flat(self) -> dict:
        """One level: method options merged in (for sweep axes, MLflow params and tags)."""
        d = self.to_dict()
        d.update(d.pop("method_options"))
        return d

    @classmethod
    def from_flat(cls, data: dict, where: str = "config") -> "TrainConfig":
        """Inverse of ``flat``: keys that are no TrainConfig field become method options."""
        known = {f.name for f in fields(cls)}
        top = {k: v for k, v in data.items() if k in known and k != "method_options"}
        opts = dict(data.get("method_options") or {})
        opts.update({k: v for k, v in data.items() if k not in known})
        cfg = cls(**top, method_options=opts)
        cfg.validate(where)
        return cfg

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path) -> "TrainConfig":
        return cls.from_dict(json.loads(Path(path).read_text()), str(path))
