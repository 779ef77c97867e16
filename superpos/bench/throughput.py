"""``superpos bench``: prompt-tuning throughput, training and evaluation (benchmarks, not tests).

For each size asked (``--sizes``): the encoder-decoder rows (superpos.bench.seq2seq) or the
decoder-only rows (superpos.bench.decoder) over the workload of superpos.bench.workload, each
row timed as superpos.bench.timing says, then the headline ratios and, on CUDA, the projected
H100-hours of table1.yaml (superpos.bench.summary).

On CPU the run applies ``superpos.cpu_allocator`` as the Trainer does (its first line says
which allocator ran; ``SUPERPOS_CPU_ALLOCATOR=system`` measures glibc's defaults).

The last printed line is a one-line summary of the headline ratios; ``--out`` writes all
numbers as JSON (rewritten after each size, so a run cut short keeps what it measured). On a
GPU machine, run it as part of ``superpos bench --gpu-check`` (superpos.bench.gpu_check),
which verifies the CUDA path first and gives the bench the rest of its time budget.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform

import torch

from superpos.bench import decoder, options, seq2seq, summary, timing, workload
from superpos.cpu_allocator import retain_freed_memory

DEFAULTS = {"cpu": dict(sizes="tiny", warmup=2, steps=5), "cuda": dict(sizes="small,base", warmup=3, steps=10)}


def run(device: str = "cpu", sizes: str | None = None, steps: int | None = None, warmup: int | None = None, out: str | None = None,
        deadline: float | None = None) -> dict:
    """Measure every row for ``sizes`` on ``device``, print the table and the summary, write ``out``;
    with a ``deadline`` (``time.monotonic()``), no row starts after it (superpos.bench.gpu_check)."""
    import transformers

    kind = "cuda" if timing.on_cuda(device) else "cpu"
    allocator = "cuda caching allocator" if kind == "cuda" else "glibc, freed memory retained" if retain_freed_memory() else "system default"
    sizes_list = (sizes or DEFAULTS[kind]["sizes"]).split(",")
    steps = steps or DEFAULTS[kind]["steps"]
    warmup = DEFAULTS[kind]["warmup"] if warmup is None else warmup
    env = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"), "device": torch.cuda.get_device_name() if kind == "cuda" else platform.processor() or "cpu",
        "cpu_threads": torch.get_num_threads(), "allocator": allocator, "torch": torch.__version__, "transformers": transformers.__version__,
    }
    print(json.dumps(env), flush=True)
    peak, peak_kind = timing.matmul_peak(device)
    print(f"measured matmul peak: {peak:.4g} TFLOP/s ({peak_kind})", flush=True)
    print(timing.HEADER, flush=True)
    rows, notes, checks = [], [], {}
    result = dict(env=env, workload=dict(batch_per_trial=workload.BATCH, input_tokens=workload.INPUT_TOKENS, prompt_tokens=workload.PROMPT_TOKENS, target_tokens=workload.TARGET_TOKENS,
                                         warmup=warmup, steps=steps), matmul_peak_tflops=peak, matmul_peak_kind=peak_kind, rows=rows,
                  checks=checks, notes=notes)
    for size in sizes_list:
        if timing.past(deadline):
            notes.append(f"{size}: not measured, past the deadline")
            continue
        if size in workload.DECODER_SHAPES:
            size_rows, checks[size] = decoder.bench_decoder(size, device, warmup, steps, peak, notes)
        else:
            size_rows, checks[size] = seq2seq.bench_size(size, device, warmup, steps, peak, notes, deadline)
        rows += size_rows
        save(result, out)  # what is measured so far survives a run cut short
    ratios, line = summary.headline(rows, sizes_list, kind == "cuda")
    print("\n" + timing.HEADER)
    for r in rows:
        print(timing.format_row(r))
    for note in notes:
        print(f"note: {note}")
    if "table1_h100_hours" in ratios:
        t = ratios["table1_h100_hours"]
        print(f"table1 examples per size = {summary.EPOCHS} epochs x ({summary.CONFIGS_PER_TASK} x {sum(summary.TRAIN_SIZES.values()):,} + {summary.ATTEMPT_CONFIGS} x "
              f"{sum(n for k, n in summary.TRAIN_SIZES.items() if k not in summary.ATTEMPT_SKIPS):,}) = {t['examples_per_size']:,}; hours = that / best ex/s / 3600: "
              + ", ".join(f"{s} {h:.1f}" for s, h in t["per_size"].items()))
    result.update(ratios=ratios, summary=line)
    save(result, out)
    print(line, flush=True)
    return result


def save(result: dict, out: str | None) -> None:
    if out:
        with open(out, "w") as f:
            json.dump(result, f, indent=2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m superpos.bench", description=__doc__.splitlines()[0])
    options.add_arguments(parser)
    args = parser.parse_args(argv)
    run(args.device, args.sizes, args.steps, args.warmup, args.out)
    return 0
