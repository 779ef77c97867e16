"""The Trainer, read top to bottom: build (``__init__``), then the loop (``fit``).

``Trainer`` puts together the fused step (step.py), evaluation (evaluation.py) and the run
directory with its checkpoints (checkpoint.py); the package docstring (superpos/train/__init__.py)
tells the whole loop and its protocol.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch

from superpos import portable_cpu
from superpos.backbones import load_backbone
from superpos.config import TrainConfig
from superpos.cpu_allocator import retain_freed_memory
from superpos.data import collate, encode_split
from superpos.determinism import make_deterministic
from superpos.errors import ConfigError
from superpos.methods import METHODS, build_method, check_vocabulary
from superpos.run_dir import prepare_out_dir
from superpos.tasks import get_task
from superpos.tasks.splits import load_splits
from superpos.train.checkpoint import Checkpoints
from superpos.train.evaluation import Evaluation
from superpos.train.step import FusedStep
from superpos.train.trial import DIVERGED, FINISHED, Callback, Trial, TrialState, trial_finite

#: config keys that must agree for trials to share one backbone and one batch schedule
SHARED_KEYS = (
    "task", "model", "data_dir", "dropout", "batch_size", "eval_batch_size", "grad_accum", "epochs",
    "template", "split", "source", "max_train_examples", "max_eval_examples", "max_input_len", "eval_every",
    "checkpoint_every", "head", "device", "forward", "evaluation", "deterministic", "gradient_checkpointing",
)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but no CUDA device is available; allowed here: auto, cpu")
    return torch.device(name)


def epoch_order(seed: int, epoch: int, n: int) -> list[int]:
    """The data order of one epoch: a pure function of (seed, epoch), so resume needs no RNG state."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


def lr_lambda(schedule: str, warmup: int, total: int):
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if schedule == "linear":
            return max(0.0, (total - step) / max(1, total - warmup))
        return 1.0

    return f


class Trainer(FusedStep, Evaluation, Checkpoints):
    def __init__(
        self,
        configs: Sequence[TrainConfig],
        out_dirs: Sequence[Path | str | None] | None = None,
        *,
        overwrite: bool = False,
        callbacks: Sequence[Callback] = (),
        progress: bool = True,
    ):
        if not configs:
            raise ConfigError("no trial configs given")
        self.configs = [c.resolve() for c in configs]
        self.out_dirs = [Path(d) if d is not None else None for d in (out_dirs or [None] * len(configs))]
        self.callbacks = list(callbacks)
        self.progress = progress
        self._check_group()
        self.resume = [prepare_out_dir(c, d, overwrite) if d else False for c, d in zip(self.configs, self.out_dirs)]
        self.overwrite = overwrite
        for c in self.configs:  # from the tokenizer alone: a bad m costs no model load
            check_vocabulary(c.method_config(), c.model)

        first = self.configs[0]
        if first.deterministic:
            make_deterministic()
        self.device = pick_device(first.device)
        if self.device.type == "cpu":
            retain_freed_memory()
            portable_cpu.use(first.deterministic)
        self.task = get_task(first.task)
        splits = load_splits(self.task, first.split, first.data_dir, source=first.source)

        # a worker that runs trial after trial (Ray's reuse_actors) loads the frozen backbone once;
        # full fine-tuning trains it, so it gets its own
        self.backbone = load_backbone(
            first.model, dropout=first.dropout, head=first.head, device=self.device, fast=first.forward == "fast", evaluation=first.evaluation,
            gradient_checkpointing=first.gradient_checkpointing, shared=not any(METHODS[c.method][1].trains_backbone for c in self.configs),
        )
        self.backbone.prepare(self.task, first.template)

        def encode(examples, cap, training=False):
            return encode_split(self.backbone, self.task, examples[:cap], first.template, first.max_input_len, training=training)

        self.train_split = encode(splits.train, first.max_train_examples, training=True)
        self.eval_split = encode(splits.validation, first.max_eval_examples)
        self.test_split = encode(splits.test, first.max_eval_examples) if splits.test is not None else None
        #: per split, inputs over max_input_len: context shortened / text cut (superpos.inputs); logged with every evaluation
        self.input_counts = {
            f"{what}_{name}": getattr(split, what)
            for name, split in (("train", self.train_split), ("validation", self.eval_split), ("test", self.test_split)) if split is not None
            for what in ("shortened", "cut")
        }
        self._check_positions()
        self.trials = [self._build_trial(c, d) for c, d in zip(self.configs, self.out_dirs)]
        #: most trials that share one forward; halved when the GPU runs out of memory (_by_width)
        self.fused_width = len(self.trials)
        if self.device.type == "cuda" and not any(t.method.trains_backbone for t in self.trials):
            self.backbone.model.to(torch.bfloat16)  # frozen weights in bf16; trainables stay fp32

    # -- set-up -------------------------------------------------------------------------
    def _check_group(self) -> None:
        first = self.configs[0]
        for c in self.configs[1:]:
            differing = [k for k in SHARED_KEYS if getattr(c, k) != getattr(first, k)]
            if differing:
                raise ConfigError(f"trials cannot share one backbone: they differ in {', '.join(differing)}")
        if len(self.configs) > 1 and any(c.method == "full" for c in self.configs):
            raise ConfigError("full fine-tuning changes the shared backbone and never fuses with other trials")

    def _check_positions(self) -> None:
        """A backbone with absolute positions (MiniLM: 512) must fit the prompt and the longest input."""
        limit = getattr(self.backbone.model.config, "max_position_embeddings", None)
        longest = max(len(r) for s in (self.train_split, self.eval_split, self.test_split) if s is not None for r in s.input_ids)
        prompt = max(c.method_config().prompt_len for c in self.configs)
        if limit is not None and longest + prompt > limit:
            raise ConfigError(
                f"inputs of up to {longest} tokens plus a {prompt}-token prompt exceed the {limit} positions of {self.backbone.name}; "
                f"allowed: max_input_len <= {limit - prompt} (got {self.configs[0].max_input_len})"
            )

    def steps_per_epoch(self) -> int:
        c = self.configs[0]
        return math.ceil(math.ceil(len(self.train_split) / c.batch_size) / c.grad_accum)

    def _build_trial(self, config: TrainConfig, out_dir: Path | None) -> Trial:
        generator = torch.Generator().manual_seed(config.seed)
        method = build_method(config.method, config.method_config(), self.backbone, generator)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            head = self.backbone.new_head(self.task)
        method.to(self.device)
        if head is not None:
            head.to(self.device)
        groups = method.param_groups()
        if head is not None:
            groups.append({"params": list(head.parameters()), "weight_decay": config.weight_decay, "lr": config.lr})
        optimizer = torch.optim.AdamW(groups, lr=config.lr)
        total = config.epochs * self.steps_per_epoch()
        warmup = int(config.warmup_ratio * total)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config.schedule, warmup, total))
        return Trial(config, out_dir, method, head, optimizer, scheduler, TrialState())

    def fit(self) -> list[Trial]:
        cfg = self.configs[0]
        torch.manual_seed(cfg.seed)  # dropout masks; restored from the checkpoint on resume
        for trial, resume in zip(self.trials, self.resume):
            self._start_outputs(trial, resume)
        self._align_group()
        # a group resumes together: the running members share one position (_align_group)
        lead = next((t for t in self.trials if t.running), self.trials[0]).state
        position = (lead.epoch, lead.batch_in_epoch)
        n, bs, accum = len(self.train_split), cfg.batch_size, cfg.grad_accum
        batches_per_epoch = math.ceil(n / bs)
        pad = self.backbone.tokenizer.pad_token_id
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.epochs * batches_per_epoch, initial=position[0] * batches_per_epoch + position[1], desc=f"{cfg.task}/{cfg.method}", unit="batch")
        self.backbone.train()
        for t in self.trials:
            t.method.train()
        best = max(t.state.best_score for t in self.trials)
        for epoch in range(position[0], cfg.epochs):
            orders = [epoch_order(t.config.seed, epoch, n) for t in self.trials]
            start = position[1] if epoch == position[0] else 0
            for b in range(start, batches_per_epoch):
                live = [(k, t) for k, t in enumerate(self.trials) if t.running]
                if not live:
                    break
                batches = [collate(self.train_split, orders[k][b * bs : (b + 1) * bs], pad, self.device) for k, _ in live]
                # an epoch's last accumulation may be short: average over the micro-batches it has
                losses = self.train_step([t for _, t in live], batches, min(accum, batches_per_epoch - b // accum * accum))
                last_in_epoch = b == batches_per_epoch - 1
                due = []
                for (k, t), loss, batch in zip(live, losses, batches):
                    s = t.state
                    s.batch_in_epoch, s.examples = b + 1, s.examples + len(batch)
                    if not math.isfinite(loss):
                        t.optimizer.zero_grad(set_to_none=True)
                        self._finish(t, DIVERGED, f"loss became {loss} at step {s.step} (epoch {epoch}); the trial stopped")
                        continue
                    s.loss_sum, s.loss_count = s.loss_sum + loss, s.loss_count + 1
                    if (b + 1) % accum and not last_in_epoch:
                        continue
                    self.optimizer_step(t)
                    if not trial_finite(t):  # a huge lr: else the run could end on this prompt, 'finished'
                        self._finish(t, DIVERGED, f"the trainable parameters or the prompt became non-finite at step {s.step} (epoch {epoch}); the trial stopped")
                        continue
                    if last_in_epoch:
                        s.epoch, s.batch_in_epoch = epoch + 1, 0
                    if last_in_epoch or (cfg.eval_every and s.step % cfg.eval_every == 0):
                        due.append(t)
                    elif cfg.checkpoint_every and s.step % cfg.checkpoint_every == 0:
                        self.save_checkpoint(t)
                if due:
                    records = [self._record_evaluation(t, scores) for t, scores in zip(due, self.evaluate(due))]
                    best = max(r["best_score"] for r in records)
                if bar is not None:
                    bar.set_postfix_str(f"loss={sum(losses) / len(losses):.4f} best={best:.4f}", refresh=False)
                    bar.update(1)
        if bar is not None:
            bar.close()
        for t in self.trials:
            if t.running:
                self._finish(t, FINISHED)
        return self.trials


def run(config: TrainConfig, out_dir: Path | str | None = None, **kwargs) -> Trial:
    """Train one trial (K = 1)."""
    return Trainer([config], [out_dir], **kwargs).fit()[0]


def run_group(configs: Sequence[TrainConfig], out_dirs: Sequence[Path | str | None] | None = None, **kwargs) -> list[Trial]:
    """Train K compatible trials fused through one frozen backbone."""
    return Trainer(configs, out_dirs, **kwargs).fit()
