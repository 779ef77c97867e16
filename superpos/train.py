"""The training loop: K trials that share one frozen backbone, trained together.

Read top to bottom: ``Trainer.__init__`` validates every config and output directory before
any work, loads the data and the backbone once, and builds one ``Trial`` (prompt method,
optimizer, data order, state) per config. ``fit`` then runs epochs of ``train_step``: the K
trials' batches are prompted by their own methods, concatenated into one forward/backward
through the frozen model, and each trial's loss is its own mean over its own tokens. Their
sum is back-propagated: a trial's parameters only reach its own rows, so gradients never mix,
and each trial steps its own optimizer. With K = 1 this is the ordinary prompt-tuning loop.

Dropout of the frozen model (when on) draws its masks from one stream, seeded with the first
member's seed, over the whole fused batch: a fused group is reproducible (same group, same
order, same width), but a member does not end as it would alone, and a width halved on GPU
out-of-memory changes the masks. With dropout off, every member ends as it does alone (to
float rounding) at any width. Per-trial dropout generators would need every dropout call of
the frozen model split by trial rows; not done.

Protocol (SuperPos paper section 3.4; methods.md section 5): AdamW with per-group weight
decay, no LR scheduler by default, evaluation every epoch by greedy generation (rank
classification is an option, not the paper's), invalid generations count as wrong, the
reported score is the best validation score over training.

Every evaluation appends a line to ``metrics.jsonl`` and writes a checkpoint (trainable
state, optimizer, scheduler, RNG states, data position, best score, history; the previous one
kept as a fallback, see run_dir.py), so an interrupted run resumes where it stopped and ends
as the uninterrupted one would (CPU). A loss that becomes NaN or inf, or parameters or a
prompt that a step made non-finite, end that trial with status ``diverged``; the others go on.
On CPU the process keeps the memory it frees for reuse (``superpos.cpu_allocator``; a fused
group's large activations would otherwise be page-faulted in afresh at every step).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from superpos import environment
from superpos import metrics as metric_fns
from superpos.backbones import load_backbone
from superpos.backbones.base import TrialRows
from superpos.config import TrainConfig
from superpos.cpu_allocator import retain_freed_memory
from superpos.data import Batch, EncodedSplit, collate, encode_split
from superpos.determinism import make_deterministic
from superpos.errors import ConfigError
from superpos.methods import build_method, check_vocabulary
from superpos.methods.base import PromptMethod
from superpos.run_dir import BEST_PROMPT_FILE, CHECKPOINT_DIR, CHECKPOINT_FILE, CONFIG_FILE, ENVIRONMENT_FILE, METRICS_FILE, PROMPT_FILE, RESULT_FILE, clear_run, prepare_out_dir, read_checkpoint, save_prompt, write_checkpoint
from superpos.tasks import get_task
from superpos.tasks.splits import load_splits

RUNNING, FINISHED, DIVERGED = "running", "finished", "diverged"

#: config keys that must agree for trials to share one backbone and one batch schedule
SHARED_KEYS = (
    "task", "model", "data_dir", "dropout", "batch_size", "eval_batch_size", "grad_accum", "epochs",
    "template", "split", "source", "max_train_examples", "max_eval_examples", "max_input_len", "eval_every",
    "checkpoint_every", "head", "device", "forward", "evaluation", "deterministic", "gradient_checkpointing",
)


class Callback:
    """The hook the Ray trainables use (and tests, to interrupt a run)."""

    def on_evaluation(self, trial: "Trial", record: dict) -> None:
        """After each evaluation; the trial's checkpoint for that evaluation is already written."""


@dataclass
class TrialState:
    epoch: int = 0  # epochs completed
    batch_in_epoch: int = 0  # micro-batches consumed in the current epoch
    step: int = 0  # optimizer steps
    examples: int = 0
    loss_sum: float = 0.0  # train loss since the last evaluation
    loss_count: int = 0
    best_score: float = float("-inf")
    best_step: int = -1
    best_epoch: float = -1.0
    status: str = RUNNING
    message: str = ""
    history: list = field(default_factory=list)


@dataclass
class Trial:
    config: TrainConfig
    out_dir: Path | None
    method: PromptMethod
    head: torch.nn.Module | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    state: TrialState

    @property
    def running(self) -> bool:
        return self.state.status == RUNNING

    def trainable_modules(self) -> dict:
        return {"method": self.method, **({"head": self.head} if self.head is not None else {})}

    def trainable_params(self) -> list[torch.nn.Parameter]:
        return [p for m in self.trainable_modules().values() for p in m.parameters() if p.requires_grad]

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.trainable_params())


@torch.no_grad()
def trial_finite(trial: Trial) -> bool:
    """Its parameters and, where there is one, its prompt (E p' can overflow with finite E and
    p'): one reduction a tensor, one sync. A NaN or inf makes a sum non-finite; so does a sum
    past fp32's range, which only a diverged trial reaches."""
    sums = [p.float().sum() for p in trial.trainable_params()]
    if not trial.method.input_dependent:
        sums.append(trial.method.prompt_matrix().float().sum())
    return bool(torch.isfinite(torch.stack(sums).sum()))


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


class Trainer:
    #: halve ``fused_width`` on CUDA out of memory (the benchmark turns it off: there OOM is a result)
    halve_on_oom = True

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
        self.task = get_task(first.task)
        splits = load_splits(self.task, first.split, first.data_dir, source=first.source)

        self.backbone = load_backbone(
            first.model, dropout=first.dropout, head=first.head, device=self.device, fast=first.forward == "fast", evaluation=first.evaluation,
            gradient_checkpointing=first.gradient_checkpointing,
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

    # -- checkpoints --------------------------------------------------------------------
    def _checkpoint_path(self, trial: Trial) -> Path | None:
        return trial.out_dir / CHECKPOINT_DIR / CHECKPOINT_FILE if trial.out_dir else None

    def save_checkpoint(self, trial: Trial) -> None:
        path = self._checkpoint_path(trial)
        if path is None:
            return
        state = asdict(trial.state)
        state["history"] = json.dumps(state["history"])
        payload = {
            "trainable": {k: m.state_dict() for k, m in trial.trainable_modules().items()},
            "optimizer": trial.optimizer.state_dict(),
            "scheduler": trial.scheduler.state_dict(),
            "state": state,
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }
        write_checkpoint(payload, path)

    def load_checkpoint(self, trial: Trial) -> bool:
        path = self._checkpoint_path(trial)
        payload = read_checkpoint(path) if path is not None else None
        if payload is None:
            return False
        for name, module in trial.trainable_modules().items():
            module.load_state_dict(payload["trainable"][name])
        trial.optimizer.load_state_dict(payload["optimizer"])
        trial.scheduler.load_state_dict(payload["scheduler"])
        state = dict(payload["state"])
        state["history"] = json.loads(state["history"])
        trial.state = TrialState(**state)
        torch.set_rng_state(payload["rng_cpu"])
        if payload["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(payload["rng_cuda"])
        # metrics.jsonl is rewritten from the checkpoint: lines written after it are dropped
        with open(trial.out_dir / METRICS_FILE, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in trial.state.history)
        return True

    def _start_outputs(self, trial: Trial, resume: bool) -> bool:
        """Create the output directory; returns True if a checkpoint was restored."""
        if trial.out_dir is None:
            return False
        if self.overwrite and trial.out_dir.exists():
            clear_run(trial.out_dir)
        trial.out_dir.mkdir(parents=True, exist_ok=True)
        trial.config.save(trial.out_dir / CONFIG_FILE)
        environment.write(trial.out_dir / ENVIRONMENT_FILE)
        if resume and self.load_checkpoint(trial):
            return True
        (trial.out_dir / METRICS_FILE).write_text("")
        return False

    # -- one step -----------------------------------------------------------------------
    def prompted(self, trial: Trial, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Input embeddings with the trial's prompt prepended and the attention mask extended."""
        embeds = self.backbone.embed(batch.input_ids)
        prompt = trial.method(embeds, batch.attention_mask)
        mask = batch.attention_mask
        if prompt is not None:
            embeds = torch.cat([prompt.to(embeds.dtype), embeds], dim=1)
            mask = torch.cat([mask.new_ones(mask.shape[0], prompt.shape[1]), mask], dim=1)
        return embeds, mask

    def _fuse(self, trials: Sequence[Trial], batches: Sequence[Batch]):
        """Concatenate the K trials' prompted batches, right-padded to one width."""
        parts = [self.prompted(t, b) for t, b in zip(trials, batches)]
        width = max(e.shape[1] for e, _ in parts)
        embeds = torch.cat([torch.nn.functional.pad(e, (0, 0, 0, width - e.shape[1])) for e, _ in parts])
        masks = torch.cat([torch.nn.functional.pad(m, (0, width - m.shape[1])) for _, m in parts])
        groups, start = [], 0
        for (e, _), t, b in zip(parts, trials, batches):
            groups.append(TrialRows(slice(start, start + len(b)), t.head, e.shape[1] - b.input_ids.shape[1]))
            start += len(b)
        return embeds, masks, groups

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else torch.autocast("cpu", enabled=False)

    def _by_width(self, trials: Sequence[Trial], run, keeps_grads: bool = False) -> list:
        """``run(indices)`` over consecutive chunks of at most ``fused_width`` trials, results concatenated.

        The group size from memory: a sweep packs up to ``group_size`` trials into a group; when
        they do not fit through one forward on the GPU, CUDA's out-of-memory error halves the
        width for the rest of the run and the chunk that failed is redone, after restoring any
        gradient it had added (``keeps_grads``: gradient accumulation). A generous group size
        costs no trial, and with dropout off results are the same at every width, since trials never
        mix (with dropout on the masks depend on the width: see the module docstring).
        """
        out, start = [], 0
        while start < len(trials):
            chunk = list(range(start, min(start + self.fused_width, len(trials))))
            saved = [(p, None if p.grad is None else p.grad.clone()) for i in chunk for p in trials[i].trainable_params()] if keeps_grads else []
            try:
                out += run(chunk)
                start += len(chunk)
                continue
            except torch.cuda.OutOfMemoryError:
                if len(chunk) == 1 or not self.halve_on_oom:
                    raise
            # out of the except block, whose traceback holds the failed chunk's activations
            for p, grad in saved:
                p.grad = grad
            self.fused_width = len(chunk) // 2
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            print(f"out of GPU memory with {len(chunk)} trials fused: {self.fused_width} a forward from now on", file=sys.stderr)
        return out

    def train_step(self, trials: Sequence[Trial], batches: Sequence[Batch], accum: int | None = None) -> list[float]:
        """Forward/backward of one micro-batch per trial (``fused_width`` trials a forward); returns
        each trial's mean loss. ``accum``: micro-batches in this accumulation (default ``grad_accum``;
        fewer in an epoch's short last one), each loss is divided by it."""
        run = lambda chunk: self._train_fused([trials[i] for i in chunk], [batches[i] for i in chunk], accum)  # noqa: E731
        return self._by_width(trials, run, keeps_grads=True)

    def _train_fused(self, trials: Sequence[Trial], batches: Sequence[Batch], accum: int | None = None) -> list[float]:
        with self._autocast():
            embeds, masks, groups = self._fuse(trials, batches)
            tgt_width = max(b.targets.shape[1] for b in batches)
            targets = torch.cat([torch.nn.functional.pad(b.targets, (0, tgt_width - b.targets.shape[1]), value=-100) for b in batches])
            sums, counts = self.backbone.example_losses(embeds, masks, targets, groups)
        losses, total = [], None
        for group, trial in zip(groups, trials):
            loss = sums[group.rows].sum() / counts[group.rows].sum().clamp(min=1)
            losses.append(loss.item())
            if math.isfinite(losses[-1]):
                part = loss / (accum or trial.config.grad_accum)
                total = part if total is None else total + part
        if total is not None:
            total.backward()
        return losses

    def optimizer_step(self, trial: Trial) -> None:
        trial.optimizer.step()
        trial.scheduler.step()
        trial.optimizer.zero_grad(set_to_none=True)
        trial.state.step += 1

    # -- evaluation ---------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, trials: Sequence[Trial]) -> list[dict]:
        """Scores on the validation split and, under the heldout protocol, on the test split (``test_*``)."""
        scores = self._evaluate_split(trials, self.eval_split)
        if self.test_split is not None:
            for s, test in zip(scores, self._evaluate_split(trials, self.test_split)):
                s.update({f"test_{k}": v for k, v in test.items()})
        return scores

    @torch.no_grad()
    def _evaluate_split(self, trials: Sequence[Trial], split: EncodedSplit) -> list[dict]:
        """Each trial's metrics on one split."""
        return [metric_fns.compute(self.task.metrics, p, split.golds, split.groups) for p in self._predict_split(trials, split)]

    @torch.no_grad()
    def _predict_split(self, trials: Sequence[Trial], split: EncodedSplit) -> list[list]:
        """Greedy generation (or class scoring) on one split, fused across trials: predictions per
        trial (``superpos evaluate`` scores saved prompts through this path, superpos/evaluate.py)."""
        self.backbone.eval()
        for t in trials:
            t.method.eval()
        order = sorted(range(len(split)), key=lambda i: len(split.input_ids[i]))  # less padding
        preds: list[list] = [[None] * len(split) for _ in trials]
        bs = self.configs[0].eval_batch_size
        pad = self.backbone.tokenizer.pad_token_id
        for start in range(0, len(order), bs):
            batch = collate(split, order[start : start + bs], pad, self.device)

            def predict(chunk):
                with self._autocast():
                    embeds, masks, groups = self._fuse([trials[k] for k in chunk], [batch] * len(chunk))
                    out = self.backbone.predict(embeds, masks, self.task, self.configs[0].template, groups)
                return [out[group.rows] for group in groups]

            for k, trial_preds in enumerate(self._by_width(trials, predict)):
                for i, p in zip(batch.indices, trial_preds):
                    preds[k][i] = p
        self.backbone.train()
        for t in trials:
            t.method.train()
        return preds

    def _record_evaluation(self, trial: Trial, scores: dict) -> dict:
        s = trial.state
        epoch = s.epoch + s.batch_in_epoch / max(1, math.ceil(len(self.train_split) / trial.config.batch_size))
        improved = scores["score"] > s.best_score
        if improved:
            s.best_score, s.best_step, s.best_epoch = scores["score"], s.step, epoch
        record = {
            "epoch": round(epoch, 4),
            "step": s.step,
            "examples": s.examples,
            "train_loss": s.loss_sum / s.loss_count if s.loss_count else float("nan"),
            **scores,
            "best_score": s.best_score,
            **self.input_counts,
        }
        if "test_score" in scores:  # heldout protocol: report the test score at the best validation step
            record["best_test_score"] = scores["test_score"] if improved or not s.history else s.history[-1]["best_test_score"]
        s.loss_sum, s.loss_count = 0.0, 0
        s.history.append(record)
        if trial.out_dir:
            with open(trial.out_dir / METRICS_FILE, "a") as f:
                f.write(json.dumps(record) + "\n")
            if improved and not trial.method.trains_backbone:
                save_prompt(trial, trial.out_dir / BEST_PROMPT_FILE)
        self.save_checkpoint(trial)
        for cb in self.callbacks:
            cb.on_evaluation(trial, record)
        return record

    # -- the loop -----------------------------------------------------------------------
    def _finish(self, trial: Trial, status: str, message: str = "") -> None:
        trial.state.status, trial.state.message = status, message
        if trial.out_dir:
            save_prompt(trial, trial.out_dir / PROMPT_FILE)
            result = {
                "status": status,
                "message": message,
                "best_score": trial.state.best_score if trial.state.history else None,
                "best_test_score": trial.state.history[-1].get("best_test_score") if trial.state.history else None,
                "best_step": trial.state.best_step,
                "best_epoch": trial.state.best_epoch,
                "steps": trial.state.step,
                "examples": trial.state.examples,
                "trainable_parameters": trial.num_trainable(),
                "inputs": self.input_counts,
                # False: the frozen model has no dropout, so the dropout switch changed nothing
                "frozen_model_has_dropout": self.backbone.has_dropout,
            }
            (trial.out_dir / RESULT_FILE).write_text(json.dumps(result, indent=2) + "\n")
            # an ended run is never resumed: its optimizer state (3x the weights for full
            # fine-tuning) would only fill the disk
            shutil.rmtree(trial.out_dir / CHECKPOINT_DIR, ignore_errors=True)

    def fit(self) -> list[Trial]:
        cfg = self.configs[0]
        torch.manual_seed(cfg.seed)  # dropout masks; restored from the checkpoint on resume
        for trial, resume in zip(self.trials, self.resume):
            self._start_outputs(trial, resume)
        # a group resumes together: all members share the position of the first
        position = (self.trials[0].state.epoch, self.trials[0].state.batch_in_epoch)
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
