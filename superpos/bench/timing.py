"""Timing rows: seconds per step, FLOPs, the matmul peak, memory, and the printed table row.

Each row gives ms/step (median of the timed steps, ``time.perf_counter``, CUDA synchronised),
training examples/s, TFLOP/s (FLOPs of one step counted once per variant and size with
``torch.utils.flop_counter.FlopCounterMode`` on the eager HF path; a step is linear in K), the
share of the measured matmul peak (bf16 8192^3 on CUDA, fp32 2048^3 on CPU), peak GiB (CUDA),
and evaluation throughput: batched greedy generation over the same (fused) batches.
"""

from __future__ import annotations

import gc
import statistics
import time
import traceback

import torch
from torch.utils.flop_counter import FlopCounterMode

from superpos.bench import workload

GIB = 2**30


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


def measure(rows: list, specs: list, flops_per_example, warmup: int, steps: int, device, peak: float, batch: int = workload.BATCH) -> None:
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


def past(deadline: float | None, margin: float = 0.0) -> bool:
    """Whether ``time.monotonic()`` plus ``margin`` seconds is past ``deadline`` (None: never)."""
    return deadline is not None and time.monotonic() + margin > deadline


HEADER = f"{'size':6} {'variant':8} {'K':>4} " + " ".join(f"{c:>9}" for c in ("ms/step", "ex/s", "TFLOP/s", "%peak", "peak GiB", "eval ex/s"))


def format_row(r: dict) -> str:
    if "error" in r:
        return f"{r['size']:6} {r['variant']:8} {r['K']:4}  {r['error']}"
    cells = (r["ms_per_step"], r["examples_per_s"], r.get("tflops"), r.get("pct_of_peak"), r.get("peak_gib"), r.get("eval_examples_per_s"))
    return f"{r['size']:6} {r['variant']:8} {r['K']:4} " + " ".join(f"{c:9.4g}" if c is not None else f"{'-':>9}" for c in cells)
