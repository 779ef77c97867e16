"""Encoder-decoder rows (T5 sizes): PEFT against SuperPos's fused trials, HF and fast forwards.

* ``peft``: Hugging Face PEFT ``PromptTuning``, fp32, the model's dropout on: the baseline a
  user gets (skipped, with a note, where peft is not installed);
* ``hf``: SuperPos prompts of K trials fused through one frozen backbone by the training loop
  itself (``Trainer.train_step`` + each trial's own ``optimizer_step``), Hugging Face's forward;
  frozen weights bf16 under autocast on CUDA (as the Trainer does), dropout off;
* ``fast``: the same through ``superpos.backbones.fast_t5.FastT5`` (blocks compiled on CUDA);
* ``hf-seq``, ``fast-seq``: (CPU) the same K trials stepped (and evaluated) one after another:
  the denominators of the fused ratios. On CPU all rows of a size are timed round-robin, so
  the ratios are measured side by side.

On CUDA: K = 1, 8, 16, then doubling until out of memory (fast rows) or the deadline.
"""

from __future__ import annotations

import time

import torch

from superpos.backbones.fast_t5 import FastT5
from superpos.backbones.seq2seq import Seq2SeqBackbone
from superpos.bench import timing, workload

#: the largest K the CUDA rows double up to
MAX_K = 256


def bf16_check(loop, device) -> float:
    """Largest relative difference of per-example losses, fast forward vs HF's, as the loop runs them."""
    backbone = loop.backbone
    trials = workload.superpos_trials(backbone, 2, device)
    batches = workload.synthetic_batches(2, backbone.vocab_size(), device)
    fast, sums = backbone.fast_forward, []
    with torch.no_grad(), loop._autocast():
        embeds, masks, _ = loop._fuse(trials, batches)
        targets = torch.cat([b.targets for b in batches])
        for forward in (None, fast):
            backbone.fast_forward = forward
            sums.append(backbone.example_losses(embeds, masks, targets)[0].float())
    backbone.fast_forward = fast
    return ((sums[1] - sums[0]).abs() / sums[0].abs()).max().item()


def bench_size(size: str, device, warmup: int, steps: int, peak: float, notes: list, deadline: float | None = None) -> tuple[list, dict]:
    cuda = timing.on_cuda(device)
    rows, extra = [], {}
    try:
        import peft  # noqa: F401
    except ImportError:
        notes.append("peft is not installed: no PEFT baseline row")
    else:
        step = workload.peft_step(size, device)
        flops = timing.count_flops(step) / workload.BATCH
        timing.measure(rows, [(dict(size=size, variant="peft", K=1), lambda: (step, None))], flops, warmup, steps, device, peak)
        del step  # frees its fp32 model before the next rows

    model, tok = workload.make_model(size, device)
    if cuda:
        model.to(torch.bfloat16)  # frozen weights in bf16, as the Trainer does on CUDA
    backbone = Seq2SeqBackbone(model, tok, f"{size}-random", dropout=False).train()
    loop = workload.training_loop(backbone, device)
    flops = timing.count_flops(workload.superpos_steps(loop, 1)[0]) / workload.BATCH
    fast = FastT5(model, compile=cuda)
    if cuda:
        backbone.fast_forward = fast
        extra["bf16_max_rel_loss_diff_fast_vs_hf"] = bf16_check(loop, device)
        print(f"{size}: bf16 per-example losses, fast vs HF: max relative difference {extra['bf16_max_rel_loss_diff_fast_vs_hf']:.2e}", flush=True)

    def spec(variant, k):
        def make():
            forward = fast if variant.startswith("fast") else None
            train, evaluate = workload.superpos_steps(loop, k, sequential=variant.endswith("-seq"))

            def with_forward(step):
                def run():
                    backbone.fast_forward = forward
                    step()

                return run

            return with_forward(train), with_forward(evaluate)

        return dict(size=size, variant=variant, K=k), make

    if not cuda:  # every row in one round-robin: the fused / sequential ratios are measured side by side
        timing.measure(rows, [spec(v, k) for v in ("hf", "fast") for k in (1, 4)] + [spec("hf-seq", 4), spec("fast-seq", 4)], flops, warmup, steps, device, peak)
        return rows, extra
    for variant in ("hf", "fast"):
        for k in (1, 8, 16):
            if not timing.past(deadline):
                timing.measure(rows, [spec(variant, k)], flops, warmup, steps, device, peak)
    k, seconds = 32, 0.0
    # the largest K that fits, by doubling; under a deadline, only while a row twice the last one's time fits
    while rows and "error" not in rows[-1] and k <= MAX_K and not timing.past(deadline, 2 * seconds):
        start = time.monotonic()
        timing.measure(rows, [spec("fast", k)], flops, warmup, steps, device, peak)
        k, seconds = 2 * k, time.monotonic() - start
    if timing.past(deadline):
        notes.append(f"{size}: rows cut at the deadline (K up to {max((r['K'] for r in rows), default=0)})")
    return rows, extra
