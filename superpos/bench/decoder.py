"""Decoder-only rows (sizes ``llama-tiny`` and ``llama-1b``, superpos.bench.workload).

``peft`` is PEFT's CAUSAL_LM prompt tuning (fp32, its own batch of one trial), ``hf`` SuperPos
at K = 1, 4, 8 through the Trainer's step (bf16 frozen weights on CUDA), evaluation = greedy
generation of 4 tokens (superpos/backbones/causal.py). The GPU rows alone:

    set -o pipefail; HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 python3 -m superpos.bench --device cuda --sizes llama-1b --out $OUT/bench_decoder.json 2>&1 | tee $OUT/bench_decoder.log
"""

from __future__ import annotations

import torch

from superpos.backbones import CausalLMBackbone
from superpos.bench import timing, workload

def bench_decoder(size: str, device, warmup: int, steps: int, peak: float, notes: list) -> tuple[list, dict]:
    """Decoder rows: PEFT CAUSAL_LM prompt tuning (fp32, dropout as configured) and SuperPos at K = 1, 4, 8."""
    rows = []
    try:
        import peft  # noqa: F401
    except ImportError:
        notes.append("peft is not installed: no PEFT baseline row")
    else:
        step = workload.peft_step(size, device, causal=True)
        timing.measure(rows, [(dict(size=size, variant="peft", K=1), lambda: (step, None))], timing.count_flops(step) / workload.DECODER_BATCH, warmup, steps, device, peak, workload.DECODER_BATCH)
        del step  # frees its fp32 model before the next rows
    model, tok = workload.decoder_model(size, device)
    if timing.on_cuda(device):
        model.to(torch.bfloat16)
    loop = workload.training_loop(CausalLMBackbone(model, tok, f"{size}-random", dropout=False).train(), device)
    flops = timing.count_flops(workload.superpos_steps(loop, 1, make_batches=workload.decoder_batches)[0]) / workload.DECODER_BATCH
    specs = [(dict(size=size, variant="hf", K=k), lambda k=k: workload.superpos_steps(loop, k, make_batches=workload.decoder_batches)) for k in workload.DECODER_K]
    if timing.on_cuda(device):  # one row at a time: a K that does not fit ends only its row
        for spec in specs:
            timing.measure(rows, [spec], flops, warmup, steps, device, peak, workload.DECODER_BATCH)
    else:
        timing.measure(rows, specs, flops, warmup, steps, device, peak, workload.DECODER_BATCH)
    return rows, {}
