"""``superpos bench``: prompt-tuning throughput, training and evaluation (benchmarks, not tests).

The workload is ../shared/bench/ANCHORS.md's: random-weight T5 v1.1-shaped models, batch 32
per trial, 128 input tokens + 10 prompt tokens, 4 target tokens, AdamW. Inputs are right-padded
(lengths 96..128) so that the padding masks are real. Rows:

* ``peft``: Hugging Face PEFT ``PromptTuning``, fp32, the model's dropout on: the baseline a
  user gets (skipped, with a note, where peft is not installed);
* ``hf``: SuperPos prompts of K trials fused through one frozen backbone by the training loop
  itself (``Trainer.train_step`` + each trial's own ``optimizer_step``), Hugging Face's forward;
  frozen weights bf16 under autocast on CUDA (as the Trainer does), dropout off;
* ``fast``: the same through ``superpos.backbones.fast_t5.FastT5`` (blocks compiled on CUDA);
* ``hf-seq``, ``fast-seq``: (CPU) the same K trials stepped (and evaluated) one after another:
  the denominators of the fused ratios. On CPU all rows of a size are timed round-robin, so
  the ratios are measured side by side.

Each row gives ms/step (median of the timed steps, ``time.perf_counter``, CUDA synchronised),
training examples/s, TFLOP/s (FLOPs of one step counted once per variant and size with
``torch.utils.flop_counter.FlopCounterMode`` on the eager HF path; a step is linear in K), the
share of the measured matmul peak (bf16 8192^3 on CUDA, fp32 2048^3 on CPU), peak GiB (CUDA),
and evaluation throughput: batched greedy generation of 4 tokens over the same (fused) batches.
On CUDA, K = 1, 8, 16, then doubling until out of memory (fast rows), and the projected
H100-hours of the full table1.yaml grid from each size's best training throughput:

    hours = sum over sizes of 80 epochs x (7 x S13 + 2 x S9) / (examples/s) / 3600

with S13 the 13 tasks' training examples, S9 those of the 9 tasks ATTEMPT runs on; 7 configs
a task and size (simple, residual, superpos x dropout on/off, full fine-tuning) and ATTEMPT x 2.
It counts training steps only (no evaluation) and full fine-tuning at prompt-tuning speed.

Decoder-only rows (issue 14; sizes ``llama-tiny``: the tiny-llama preset, and ``llama-1b``: a
random Llama-3.2-1B-shaped model): batch 8 a trial, 256 input + 4 label tokens (3 label
tokens and EOS; inputs right-padded, lengths 224..256), the loss over the label tokens only;
``peft`` is PEFT's CAUSAL_LM prompt tuning (fp32, its own batch of one trial), ``hf`` SuperPos
at K = 1, 4, 8 through the Trainer's step (bf16 frozen weights on CUDA), evaluation = greedy
generation of 4 tokens (causal.py). The GPU rows, prepared for the device tool:

    set -o pipefail; HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 python3 -m superpos.bench --device cuda --sizes llama-1b --out $OUT/bench_decoder.json 2>&1 | tee $OUT/bench_decoder.log

On CPU the run applies ``superpos.cpu_allocator`` as the Trainer does (its first line says
which allocator ran; ``SUPERPOS_CPU_ALLOCATOR=system`` measures glibc's defaults).

The last printed line is a one-line summary of the headline ratios; ``--out`` writes all
numbers as JSON (rewritten after each size, so a run cut short keeps what it measured). On a
lent GPU, run it as part of ``superpos bench --gpu-check`` (superpos/gpu_check.py, README),
which verifies the CUDA path first and gives the bench the rest of its time budget.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import platform
import statistics
import time
import traceback
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from superpos.cpu_allocator import retain_freed_memory

BATCH, INPUT_TOKENS, PROMPT_TOKENS, TARGET_TOKENS = 32, 128, 10, 4

#: T5 v1.1 shapes (ANCHORS.md, gpu_anchor.py); "tiny" is the tiny-t5 preset
SHAPES = {
    "small": dict(d_model=512, d_kv=64, d_ff=1024, num_layers=8, num_decoder_layers=8, num_heads=6),
    "base": dict(d_model=768, d_kv=64, d_ff=2048, num_layers=12, num_decoder_layers=12, num_heads=12),
}

#: training examples of the 13 table1.yaml tasks; ATTEMPT skips its 4 source tasks (sweeps/table1.yaml)
TRAIN_SIZES = {
    "qqp": 363_846, "qnli": 104_743, "mnli": 392_702, "sst2": 67_349, "stsb": 5_749, "mrpc": 3_668, "cola": 8_551,
    "multirc": 27_243, "rte": 2_490, "cb": 250, "copa": 400, "wic": 5_428, "boolq": 9_427,
}
ATTEMPT_SKIPS = ("qqp", "qnli", "mnli", "sst2")
EPOCHS, CONFIGS_PER_TASK, ATTEMPT_CONFIGS = 80, 7, 2

#: decoder-only sizes: Llama-3.2-1B's shape (hub config), and the tiny-llama preset's
DECODER_SHAPES = {
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                     head_dim=64, vocab_size=128256, tie_word_embeddings=True, rope_theta=500000.0, max_position_embeddings=2048),
    "llama-tiny": None,
}
DECODER_BATCH, DECODER_INPUT, LABEL_TOKENS, DECODER_K = 8, 256, 4, (1, 4, 8)

DEFAULTS = {"cpu": dict(sizes="tiny", warmup=2, steps=5), "cuda": dict(sizes="small,base", warmup=3, steps=10)}

GIB = 2**30
#: the largest K the CUDA rows double up to
MAX_K = 256


@dataclass
class Vocabulary:
    """A stand-in tokenizer for random-weight models: the Backbone only needs its size and ids."""

    size: int = 32100
    pad_token_id: int = 0
    eos_token_id: int = 1

    def __len__(self) -> int:
        return self.size

    @property
    def all_special_ids(self) -> list[int]:  # what prompt sampling leaves out (superpos.methods.base)
        return [self.pad_token_id, self.eos_token_id]

    def get_added_vocab(self) -> dict[str, int]:
        return {}


def make_model(size: str, device):
    """An fp32 T5ForConditionalGeneration (dropout 0.1 as in the v1.1 configs) and its tokenizer."""
    from transformers import T5Config, T5ForConditionalGeneration

    from superpos.backbones import build_tiny_t5

    if size == "tiny":
        model, tok = build_tiny_t5()
        return model.to(device), tok
    config = T5Config(vocab_size=32128, feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.1,
                      decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, **SHAPES[size])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = T5ForConditionalGeneration(config)
    return model.to(device), Vocabulary()


def synthetic_batches(k: int, vocab: int, device):
    """K trials' batches like real ones: ids of real tokens, right padding, 4 target tokens."""
    from superpos.data import Batch

    g = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(k):
        ids = torch.randint(5, vocab, (BATCH, INPUT_TOKENS), generator=g)
        lengths = torch.randint(INPUT_TOKENS - 32, INPUT_TOKENS + 1, (BATCH,), generator=g)
        lengths[0] = INPUT_TOKENS
        mask = (torch.arange(INPUT_TOKENS)[None, :] < lengths[:, None]).long()
        targets = torch.randint(5, vocab, (BATCH, TARGET_TOKENS), generator=g)
        batches.append(Batch((ids * mask).to(device), mask.to(device), targets.to(device), list(range(BATCH))))
    return batches


def decoder_model(size: str, device):
    """An fp32 random Llama of ``size`` with tiny-llama's offline tokenizer (ids fit every size)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from superpos.backbones import build_tiny_llama, seeded

    model, tok = build_tiny_llama()
    if DECODER_SHAPES[size] is not None:
        model = seeded(LlamaForCausalLM, LlamaConfig(attn_implementation="sdpa", **DECODER_SHAPES[size]), 0)
    return model.to(device), tok


def decoder_batches(k: int, vocab: int, device):
    """K trials' training batches as ``arrange`` lays them out: input, then the label and EOS as targets."""
    from superpos.backbones.seq2seq import IGNORE
    from superpos.data import Batch

    g = torch.Generator().manual_seed(1)
    width = DECODER_INPUT + LABEL_TOKENS
    batches = []
    for _ in range(k):
        lengths = torch.randint(DECODER_INPUT - 32, DECODER_INPUT + 1, (DECODER_BATCH,), generator=g) + LABEL_TOKENS
        lengths[0] = width
        pos = torch.arange(width)[None, :]
        mask = (pos < lengths[:, None]).long()
        ids = torch.randint(5, vocab, (DECODER_BATCH, width), generator=g) * mask
        label = (pos >= lengths[:, None] - LABEL_TOKENS) & mask.bool()
        batches.append(Batch(ids.to(device), mask.to(device), torch.where(label, ids, IGNORE).to(device), list(range(DECODER_BATCH))))
    return batches


def superpos_trials(backbone, k: int, device):
    """K SuperPos trials with the paper's defaults (m = 128, lr 0.01), as Trainer._build_trial makes them."""
    from superpos.config import TrainConfig
    from superpos.methods import build_method
    from superpos.train import Trial, TrialState

    trials = []
    for seed in range(k):
        config = TrainConfig(method="superpos", seed=seed)
        method = build_method("superpos", config.method_config(), backbone, torch.Generator().manual_seed(seed)).to(device)
        optimizer = torch.optim.AdamW(method.param_groups(), lr=config.method_config().lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        trials.append(Trial(config, None, method, None, optimizer, scheduler, TrialState()))
    return trials


def training_loop(backbone, device):
    """The Trainer's step functions over synthetic batches.

    ``train_step`` and ``optimizer_step`` use only the backbone and the device, so the loop is
    built without ``Trainer.__init__`` (which would load a task's data).
    """
    from superpos.train import Trainer

    loop = Trainer.__new__(Trainer)
    loop.backbone, loop.device = backbone, torch.device(device)
    loop.fused_width, loop.halve_on_oom = 2**30, False  # every trial of a row in one forward; OOM ends the row
    return loop


# -- measuring ----------------------------------------------------------------------------
def on_cuda(device) -> bool:
    return torch.device(device).type == "cuda"


def sync(device) -> None:
    if on_cuda(device):
        torch.cuda.synchronize()


def seconds_per_step(steps: list, warmup: int, rounds: int, device) -> list[float]:
    """Median wall-clock seconds of each step function, timed round-robin after ``warmup`` untimed calls.

    Taking turns within each round puts slow drifts of the machine (other tenants, clocks)
    on every step alike, so the ratios between steps measured in one call are stable.
    """
    for step in steps:
        for _ in range(warmup):
            step()
    sync(device)
    times = [[] for _ in steps]
    for _ in range(rounds):
        for step, kept in zip(steps, times):
            start = time.perf_counter()
            step()
            sync(device)
            kept.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def count_flops(step) -> int:
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def matmul_peak(device) -> tuple[float, str]:
    """Measured matmul TFLOP/s: bf16 8192^3 on CUDA (the card's practical peak), fp32 2048^3 on CPU."""
    n, dtype = (8192, torch.bfloat16) if on_cuda(device) else (2048, torch.float32)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    (seconds,) = seconds_per_step([lambda: a @ b], 2, 5, device)
    return 2 * n**3 / seconds / 1e12, f"{str(dtype).removeprefix('torch.')} {n}^3"


def reset_memory(device) -> None:
    gc.collect()
    if on_cuda(device):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device) -> float | None:
    return torch.cuda.max_memory_allocated() / GIB if on_cuda(device) else None


def out_of_memory(error: Exception) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error)


# -- variants -----------------------------------------------------------------------------
def peft_step(size: str, device, causal: bool = False):
    """One PEFT PromptTuning training step, fp32, dropout on: what a user gets (ANCHORS.md);
    ``causal``: CAUSAL_LM prompt tuning of a decoder size."""
    from peft import PromptTuningConfig, TaskType, get_peft_model

    model, tok = (decoder_model if causal else make_model)(size, device)
    task_type = TaskType.CAUSAL_LM if causal else TaskType.SEQ_2_SEQ_LM
    model = get_peft_model(model, PromptTuningConfig(task_type=task_type, num_virtual_tokens=PROMPT_TOKENS))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.3)
    (batch,) = (decoder_batches if causal else synthetic_batches)(1, len(tok), device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.targets).loss.backward()
        optimizer.step()

    return step


def superpos_steps(loop, k: int, sequential: bool = False, make_batches=synthetic_batches):
    """A training step of K fused trials (or of K trials one after another) and an evaluation step."""
    backbone, device = loop.backbone, loop.device
    trials = superpos_trials(backbone, k, device)
    batches = make_batches(k, backbone.vocab_size(), device)

    groups = [([t], [b]) for t, b in zip(trials, batches)] if sequential else [(trials, batches)]

    def train():
        for group, group_batches in groups:
            loop.train_step(group, group_batches)
            for t in group:
                loop.optimizer_step(t)

    @torch.no_grad()
    def evaluate():
        for group, group_batches in groups:
            with loop._autocast():
                embeds, masks, _ = loop._fuse(group, group_batches)
                if backbone.kind == "causal":
                    backbone.generate_ids(embeds, masks, LABEL_TOKENS)
                elif backbone.fast_forward is not None:
                    backbone.fast_forward.generate(embeds, masks, TARGET_TOKENS)
                else:
                    backbone.model.generate(inputs_embeds=embeds, attention_mask=masks, max_new_tokens=TARGET_TOKENS, do_sample=False, num_beams=1)

    return train, evaluate


def measure(rows: list, specs: list, flops_per_example, warmup: int, steps: int, device, peak: float, batch: int = BATCH) -> None:
    """Time rows together (round-robin: training, then evaluation), append them to ``rows`` and print them.

    ``specs`` holds (row, make_steps) pairs; ``make_steps()`` returns (train, evaluate or None).
    A failure, out of memory included, is recorded as the rows' result and ends nothing else.
    """
    reset_memory(device)
    made = []
    try:
        made = [make() for _, make in specs]
        train_s = seconds_per_step([train for train, _ in made], warmup, steps, device)
        evals = [(row, evaluate) for (row, _), (_, evaluate) in zip(specs, made) if evaluate is not None]
        eval_s = seconds_per_step([evaluate for _, evaluate in evals], 1, max(1, steps // 2), device)
        for (row, _), seconds in zip(specs, train_s):
            examples = row["K"] * batch
            row.update(ms_per_step=seconds * 1e3, examples_per_s=examples / seconds, peak_gib=peak_gib(device))
            if flops_per_example is not None:
                row["tflops"] = flops_per_example * examples / seconds / 1e12
                row["pct_of_peak"] = 100 * row["tflops"] / peak
        for (row, _), seconds in zip(evals, eval_s):
            row["eval_examples_per_s"] = row["K"] * batch / seconds
    except Exception as error:  # one failure must not cost the whole run (and its device time)
        for row, _ in specs:
            row["error"] = "out of memory" if out_of_memory(error) else repr(error)[:300]
        if not out_of_memory(error):
            traceback.print_exc()
    finally:
        made = None
        reset_memory(device)
    for row, _ in specs:
        rows.append(row)
        print(format_row(row), flush=True)


def bf16_check(loop, device) -> float:
    """Largest relative difference of per-example losses, fast forward vs HF's, as the loop runs them."""
    backbone = loop.backbone
    trials = superpos_trials(backbone, 2, device)
    batches = synthetic_batches(2, backbone.vocab_size(), device)
    fast, sums = backbone.fast_forward, []
    with torch.no_grad(), loop._autocast():
        embeds, masks, _ = loop._fuse(trials, batches)
        targets = torch.cat([b.targets for b in batches])
        for forward in (None, fast):
            backbone.fast_forward = forward
            sums.append(backbone.example_losses(embeds, masks, targets)[0].float())
    backbone.fast_forward = fast
    return ((sums[1] - sums[0]).abs() / sums[0].abs()).max().item()


# -- the run ------------------------------------------------------------------------------
def past(deadline: float | None, margin: float = 0.0) -> bool:
    """Whether ``time.monotonic()`` plus ``margin`` seconds is past ``deadline`` (None: never)."""
    return deadline is not None and time.monotonic() + margin > deadline


def bench_decoder(size: str, device, warmup: int, steps: int, peak: float, notes: list) -> tuple[list, dict]:
    """Decoder rows: PEFT CAUSAL_LM prompt tuning (fp32, dropout as configured) and SuperPos at K = 1, 4, 8."""
    from superpos.backbones import CausalLMBackbone

    rows = []
    try:
        import peft  # noqa: F401
    except ImportError:
        notes.append("peft is not installed: no PEFT baseline row")
    else:
        step = peft_step(size, device, causal=True)
        measure(rows, [(dict(size=size, variant="peft", K=1), lambda: (step, None))], count_flops(step) / DECODER_BATCH, warmup, steps, device, peak, DECODER_BATCH)
        del step  # frees its fp32 model before the next rows
    model, tok = decoder_model(size, device)
    if on_cuda(device):
        model.to(torch.bfloat16)
    loop = training_loop(CausalLMBackbone(model, tok, f"{size}-random", dropout=False).train(), device)
    flops = count_flops(superpos_steps(loop, 1, make_batches=decoder_batches)[0]) / DECODER_BATCH
    specs = [(dict(size=size, variant="hf", K=k), lambda k=k: superpos_steps(loop, k, make_batches=decoder_batches)) for k in DECODER_K]
    if on_cuda(device):  # one row at a time: a K that does not fit ends only its row
        for spec in specs:
            measure(rows, [spec], flops, warmup, steps, device, peak, DECODER_BATCH)
    else:
        measure(rows, specs, flops, warmup, steps, device, peak, DECODER_BATCH)
    return rows, {}


def bench_size(size: str, device, warmup: int, steps: int, peak: float, notes: list, deadline: float | None = None) -> tuple[list, dict]:
    from superpos.backbones.fast_t5 import FastT5
    from superpos.backbones.seq2seq import Seq2SeqBackbone

    cuda = on_cuda(device)
    rows, extra = [], {}
    try:
        import peft  # noqa: F401
    except ImportError:
        notes.append("peft is not installed: no PEFT baseline row")
    else:
        step = peft_step(size, device)
        flops = count_flops(step) / BATCH
        measure(rows, [(dict(size=size, variant="peft", K=1), lambda: (step, None))], flops, warmup, steps, device, peak)
        del step  # frees its fp32 model before the next rows

    model, tok = make_model(size, device)
    if cuda:
        model.to(torch.bfloat16)  # frozen weights in bf16, as the Trainer does on CUDA
    backbone = Seq2SeqBackbone(model, tok, f"{size}-random", dropout=False).train()
    loop = training_loop(backbone, device)
    flops = count_flops(superpos_steps(loop, 1)[0]) / BATCH
    fast = FastT5(model, compile=cuda)
    if cuda:
        backbone.fast_forward = fast
        extra["bf16_max_rel_loss_diff_fast_vs_hf"] = bf16_check(loop, device)
        print(f"{size}: bf16 per-example losses, fast vs HF: max relative difference {extra['bf16_max_rel_loss_diff_fast_vs_hf']:.2e}", flush=True)

    def spec(variant, k):
        def make():
            forward = fast if variant.startswith("fast") else None
            train, evaluate = superpos_steps(loop, k, sequential=variant.endswith("-seq"))

            def with_forward(step):
                def run():
                    backbone.fast_forward = forward
                    step()

                return run

            return with_forward(train), with_forward(evaluate)

        return dict(size=size, variant=variant, K=k), make

    if not cuda:  # every row in one round-robin: the fused / sequential ratios are measured side by side
        measure(rows, [spec(v, k) for v in ("hf", "fast") for k in (1, 4)] + [spec("hf-seq", 4), spec("fast-seq", 4)], flops, warmup, steps, device, peak)
        return rows, extra
    for variant in ("hf", "fast"):
        for k in (1, 8, 16):
            if not past(deadline):
                measure(rows, [spec(variant, k)], flops, warmup, steps, device, peak)
    k, seconds = 32, 0.0
    # the largest K that fits, by doubling; under a deadline, only while a row twice the last one's time fits
    while rows and "error" not in rows[-1] and k <= MAX_K and not past(deadline, 2 * seconds):
        start = time.monotonic()
        measure(rows, [spec("fast", k)], flops, warmup, steps, device, peak)
        k, seconds = 2 * k, time.monotonic() - start
    if past(deadline):
        notes.append(f"{size}: rows cut at the deadline (K up to {max((r['K'] for r in rows), default=0)})")
    return rows, extra


def find(rows: list, size: str, variant: str, k: int | None = None) -> dict | None:
    """The row of (size, variant, K) that ran; with K None, the variant's fastest."""
    ran = [r for r in rows if r["size"] == size and r["variant"] == variant and k in (None, r["K"]) and "error" not in r]
    return max(ran, key=lambda r: r["examples_per_s"], default=None)


def speedup(a: dict | None, b: dict | None) -> float | None:
    return a["examples_per_s"] / b["examples_per_s"] if a and b else None


def eval_speedup(a: dict | None, b: dict | None) -> float | None:
    return a["eval_examples_per_s"] / b["eval_examples_per_s"] if a and b else None


def table1_examples() -> int:
    """Training examples of the full table1.yaml grid per model size (see the module docstring)."""
    attempt = sum(n for task, n in TRAIN_SIZES.items() if task not in ATTEMPT_SKIPS)
    return EPOCHS * (CONFIGS_PER_TASK * sum(TRAIN_SIZES.values()) + ATTEMPT_CONFIGS * attempt)


def headline(rows: list, sizes: list[str], cuda: bool) -> tuple[dict, str]:
    """Ratios, the table1 projection (CUDA) and the one-line summary."""
    def x(v):
        return f"{v:.2f}x" if v is not None else "n/a"

    ratios, parts = {}, []
    for size in sizes:
        peft = find(rows, size, "peft")
        if size in DECODER_SHAPES:
            r = {f"superpos{k}_vs_peft": speedup(find(rows, size, "hf", k), peft) for k in DECODER_K}
            parts.append(f"{size}: superpos / PEFT " + ", ".join(f"K={k} {x(r[f'superpos{k}_vs_peft'])}" for k in DECODER_K))
        elif cuda:
            top = find(rows, size, "fast") or find(rows, size, "hf")
            if top is None:
                parts.append(f"{size}: no superpos row ran")
                continue
            r = dict(best=f"{top['variant']} K={top['K']}", examples_per_s=top["examples_per_s"], pct_of_peak=top["pct_of_peak"],
                     eval_examples_per_s=top.get("eval_examples_per_s"), best_vs_peft=speedup(top, peft),
                     fast16_vs_hf16=speedup(find(rows, size, "fast", 16), find(rows, size, "hf", 16)))
            parts.append(f"{size}: {r['best']} {r['examples_per_s']:.0f} ex/s = {x(r['best_vs_peft'])} PEFT, {r['pct_of_peak']:.1f}% of bf16 peak, "
                         f"fast/hf at K=16 {x(r['fast16_vs_hf16'])}")
        else:
            r = dict(fused4_vs_sequential4=speedup(find(rows, size, "hf", 4), find(rows, size, "hf-seq", 4)),
                     fast_fused4_vs_sequential4=speedup(find(rows, size, "fast", 4), find(rows, size, "fast-seq", 4)),
                     eval_fused4_vs_sequential4=eval_speedup(find(rows, size, "hf", 4), find(rows, size, "hf-seq", 4)),
                     fast4_vs_hf4=speedup(find(rows, size, "fast", 4), find(rows, size, "hf", 4)),
                     superpos1_vs_peft=speedup(find(rows, size, "hf", 1), peft))
            parts.append(f"{size}: fused K=4 / 4 sequential {x(r['fused4_vs_sequential4'])} (fast forward {x(r['fast_fused4_vs_sequential4'])}, "
                         f"evaluation {x(r['eval_fused4_vs_sequential4'])}), fast/hf at K=4 {x(r['fast4_vs_hf4'])}, superpos K=1 / PEFT {x(r['superpos1_vs_peft'])}")
        ratios[size] = r
    if cuda:
        hours = {s: table1_examples() / ratios[s]["examples_per_s"] / 3600 for s in sizes if s in ratios and s not in DECODER_SHAPES}
        if hours:
            ratios["table1_h100_hours"] = {"per_size": hours, "total": sum(hours.values()), "examples_per_size": table1_examples()}
            parts.append(f"table1 projection {sum(hours.values()):.1f} H100-h")
    return ratios, "SUMMARY " + "; ".join(parts)


HEADER = f"{'size':6} {'variant':8} {'K':>4} " + " ".join(f"{c:>9}" for c in ("ms/step", "ex/s", "TFLOP/s", "%peak", "peak GiB", "eval ex/s"))


def format_row(r: dict) -> str:
    if "error" in r:
        return f"{r['size']:6} {r['variant']:8} {r['K']:4}  {r['error']}"
    cells = (r["ms_per_step"], r["examples_per_s"], r.get("tflops"), r.get("pct_of_peak"), r.get("peak_gib"), r.get("eval_examples_per_s"))
    return f"{r['size']:6} {r['variant']:8} {r['K']:4} " + " ".join(f"{c:9.4g}" if c is not None else f"{'-':>9}" for c in cells)


def run(device: str = "cpu", sizes: str | None = None, steps: int | None = None, warmup: int | None = None, out: str | None = None,
        deadline: float | None = None) -> dict:
    """Measure every row for ``sizes`` on ``device``, print the table and the summary, write ``out``;
    with a ``deadline`` (``time.monotonic()``), no row starts after it (superpos.gpu_check)."""
    import transformers

    kind = "cuda" if on_cuda(device) else "cpu"
    allocator = "cuda caching allocator" if kind == "cuda" else "glibc, freed memory retained" if retain_freed_memory() else "system default"
    sizes_list = (sizes or DEFAULTS[kind]["sizes"]).split(",")
    steps = steps or DEFAULTS[kind]["steps"]
    warmup = DEFAULTS[kind]["warmup"] if warmup is None else warmup
    env = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"), "device": torch.cuda.get_device_name() if kind == "cuda" else platform.processor() or "cpu",
        "cpu_threads": torch.get_num_threads(), "allocator": allocator, "torch": torch.__version__, "transformers": transformers.__version__,
    }
    print(json.dumps(env), flush=True)
    peak, peak_kind = matmul_peak(device)
    print(f"measured matmul peak: {peak:.4g} TFLOP/s ({peak_kind})", flush=True)
    print(HEADER, flush=True)
    rows, notes, checks = [], [], {}
    result = dict(env=env, workload=dict(batch_per_trial=BATCH, input_tokens=INPUT_TOKENS, prompt_tokens=PROMPT_TOKENS, target_tokens=TARGET_TOKENS,
                                         warmup=warmup, steps=steps), matmul_peak_tflops=peak, matmul_peak_kind=peak_kind, rows=rows,
                  checks=checks, notes=notes)
    for size in sizes_list:
        if past(deadline):
            notes.append(f"{size}: not measured, past the deadline")
            continue
        if size in DECODER_SHAPES:
            size_rows, checks[size] = bench_decoder(size, device, warmup, steps, peak, notes)
        else:
            size_rows, checks[size] = bench_size(size, device, warmup, steps, peak, notes, deadline)
        rows += size_rows
        save(result, out)  # what is measured so far survives a run cut short
    ratios, summary = headline(rows, sizes_list, kind == "cuda")
    print("\n" + HEADER)
    for r in rows:
        print(format_row(r))
    for note in notes:
        print(f"note: {note}")
    if "table1_h100_hours" in ratios:
        t = ratios["table1_h100_hours"]
        print(f"table1 examples per size = {EPOCHS} epochs x ({CONFIGS_PER_TASK} x {sum(TRAIN_SIZES.values()):,} + {ATTEMPT_CONFIGS} x "
              f"{sum(n for k, n in TRAIN_SIZES.items() if k not in ATTEMPT_SKIPS):,}) = {t['examples_per_size']:,}; hours = that / best ex/s / 3600: "
              + ", ".join(f"{s} {h:.1f}" for s, h in t["per_size"].items()))
    result.update(ratios=ratios, summary=summary)
    save(result, out)
    print(summary, flush=True)
    return result


def save(result: dict, out: str | None) -> None:
    if out:
        with open(out, "w") as f:
            json.dump(result, f, indent=2)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--sizes", default=None, help="comma-separated: tiny, small, base, llama-tiny, llama-1b (default: tiny on cpu, small,base on cuda)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per row (default: 5 on cpu, 10 on cuda)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 2 on cpu, 3 on cuda)")
    p.add_argument("--out", default=None, help="write all numbers to this JSON file (--gpu-check: a directory)")
    p.add_argument("--gpu-check", action="store_true", help="the one-shot CUDA check (superpos/gpu_check.py): tests, bench, verdicts into --out")
    p.add_argument("--dry-run", action="store_true", help="with --gpu-check: every item on CPU at tiny sizes (CI)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m superpos.bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    run(args.device, args.sizes, args.steps, args.warmup, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
