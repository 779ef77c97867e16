"""``superpos bench --startup``: where a trial's start-up goes, for the first trial of a process
and for a second one in the same process (a worker Ray Tune reuses; the backbone cache hits).

Measured once, in new interpreters: ``process`` (``python -c pass``) and ``imports``
(``import superpos.train``, less the process). Then per model (``--models``; default tiny-t5,
MiniLM and ``t5-base-random``, T5 v1.1 base's shape with random weights), two trials, each a
``Trainer`` built and stepped once as a sweep's trial is:

* ``backbone``: ``load_backbone`` (build or read, freeze, place; ``hit`` on the second trial);
* ``data``: the splits read and encoded: tokenised and written to the tokenisation cache, or
  read back from it (``tokenised`` says which);
* ``setup``: the rest of the Trainer (task, prompt methods, optimizers);
* ``first_step``: one training step and optimizer step; T5 models use ``forward: fast``, so on
  CUDA this includes compiling its blocks (TorchInductor's caches under ``SUPERPOS_CACHE``); on
  CPU nothing is compiled (``compiled`` says which).

The start-up of a Ray actor is left out: superpos imports no Ray (docs/benchmarks.md has a
separate figure). Figures, not tests: tests/test_bench.py checks the structure only.
"""

from __future__ import annotations

import contextlib
import gc
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from superpos.backbones import cache
from superpos.config import TrainConfig
from superpos.data import collate
from superpos.settings import cache_dir
from superpos.train import Trainer
from superpos.train import trainer as trainer_module

MODELS = ("tiny-t5", "minilm", "t5-base-random")
PHASES = ("backbone", "data", "setup", "first_step")
REPO = Path(__file__).resolve().parent.parent.parent


def interpreter_seconds(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    return time.perf_counter() - start


@contextlib.contextmanager
def timed(names: tuple[str, ...], into: dict[str, float]):
    """Add the wall time of every call of the Trainer module's ``names`` to ``into[name]``."""
    originals = {n: getattr(trainer_module, n) for n in names}

    def wrap(name, fn):
        def timed_call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                into[name] = into.get(name, 0.0) + time.perf_counter() - start
        return timed_call

    for n, fn in originals.items():
        setattr(trainer_module, n, wrap(n, fn))
    try:
        yield
    finally:
        for n, fn in originals.items():
            setattr(trainer_module, n, fn)


def trial_config(model: str, data_dir: str | None, device: str, seed: int) -> TrainConfig:
    extra = {"data_dir": data_dir} if data_dir else {}
    return TrainConfig(task="cb", model=model, method="superpos", method_options={"m": 8}, epochs=1, batch_size=4, eval_batch_size=4,
                       max_train_examples=4, max_eval_examples=4, seed=seed, device=device,
                       forward="fast" if "t5" in model else "hf", **extra).resolve()


def one_trial(config: TrainConfig) -> dict:
    """One trial's start-up, phase by phase (seconds)."""
    calls: dict[str, float] = {}
    hits = cache.stats["hits"]
    tokenized = cache_dir() / "tokenized"
    before = set(tokenized.glob("*.pt")) if tokenized.is_dir() else set()
    start = time.perf_counter()
    with timed(("load_backbone", "load_splits", "encode_split"), calls):
        trainer = Trainer([config], progress=False)
    built = time.perf_counter() - start
    step_start = time.perf_counter()
    trainer.backbone.train()
    for t in trainer.trials:
        t.method.train()
    batch = collate(trainer.train_split, list(range(min(config.batch_size, len(trainer.train_split)))), trainer.backbone.tokenizer.pad_token_id, trainer.device)
    trainer.train_step(trainer.trials, [batch])
    for t in trainer.trials:
        trainer.optimizer_step(t)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    row = {
        "backbone": calls["load_backbone"],
        "data": calls["load_splits"] + calls["encode_split"],
        "first_step": time.perf_counter() - step_start,
        "hit": cache.stats["hits"] > hits,
        "tokenised": bool(set(tokenized.glob("*.pt")) - before) if tokenized.is_dir() else True,
        "compiled": trainer.device.type == "cuda" and config.forward == "fast",
    }
    row["setup"] = built - row["backbone"] - row["data"]
    row["total"] = built + row["first_step"]
    return row


def run(models: tuple[str, ...] = MODELS, device: str = "cpu", data_dir: str | None = None) -> dict:
    process = interpreter_seconds("pass")
    result = {"process": process, "imports": interpreter_seconds("import superpos.train") - process, "device": device, "models": {}}
    for model in models:
        cache.clear()  # the first trial loads the backbone as a new worker would
        result["models"][model] = [one_trial(trial_config(model, data_dir, device, seed)) for seed in (0, 1)]
        cache.clear()
        gc.collect()
    return result


def table(result: dict) -> str:
    lines = [f"process start {result['process']:.2f} s, imports (import superpos.train) {result['imports']:.2f} s; device {result['device']}",
             f"{'model':<16}{'trial':>6}" + "".join(f"{p:>12}" for p in (*PHASES, "total")) + "  notes"]
    for model, trials in result["models"].items():
        for k, row in enumerate(trials, 1):
            notes = ["backbone cache hit" if row["hit"] else "backbone loaded", "tokenised" if row["tokenised"] else "tokenisation cache",
                     "compiled" if row["compiled"] else "not compiled"]
            lines.append(f"{model:<16}{k:>6}" + "".join(f"{row[p]:>12.3f}" for p in (*PHASES, "total")) + "  " + ", ".join(notes))
    return "\n".join(lines)


def main(models: str | None, device: str, data_dir: str | None, as_json: bool, out: str | None) -> dict:
    result = run(tuple(models.split(",")) if models else MODELS, device, data_dir)
    print(json.dumps(result, indent=2) if as_json else table(result))
    if out:
        Path(out).write_text(json.dumps(result, indent=2) + "\n")
    return result
