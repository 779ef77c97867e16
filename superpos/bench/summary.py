"""The headline ratios, the table1.yaml projection and the one-line summary of a bench run.

On CUDA, the projected H100-hours of the full table1.yaml grid from each size's best training
throughput:

    hours = sum over sizes of 80 epochs x (7 x S13 + 2 x S9) / (examples/s) / 3600

with S13 the 13 tasks' training examples, S9 those of the 9 tasks ATTEMPT runs on; 7 configs
a task and size (simple, residual, superpos x dropout on/off, full fine-tuning) and ATTEMPT x 2.
It counts training steps only (no evaluation) and full fine-tuning at prompt-tuning speed.
"""

from __future__ import annotations

from superpos.bench import workload

#: training examples of the 13 table1.yaml tasks; ATTEMPT skips its 4 source tasks (sweeps/table1.yaml)
TRAIN_SIZES = {
    "qqp": 363_846, "qnli": 104_743, "mnli": 392_702, "sst2": 67_349, "stsb": 5_749, "mrpc": 3_668, "cola": 8_551,
    "multirc": 27_243, "rte": 2_490, "cb": 250, "copa": 400, "wic": 5_428, "boolq": 9_427,
}
ATTEMPT_SKIPS = ("qqp", "qnli", "mnli", "sst2")
EPOCHS, CONFIGS_PER_TASK, ATTEMPT_CONFIGS = 80, 7, 2


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
        if size in workload.DECODER_SHAPES:
            r = {f"superpos{k}_vs_peft": speedup(find(rows, size, "hf", k), peft) for k in workload.DECODER_K}
            parts.append(f"{size}: superpos / PEFT " + ", ".join(f"K={k} {x(r[f'superpos{k}_vs_peft'])}" for k in workload.DECODER_K))
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
        hours = {s: table1_examples() / ratios[s]["examples_per_s"] / 3600 for s in sizes if s in ratios and s not in workload.DECODER_SHAPES}
        if hours:
            ratios["table1_h100_hours"] = {"per_size": hours, "total": sum(hours.values()), "examples_per_size": table1_examples()}
            parts.append(f"table1 projection {sum(hours.values()):.1f} H100-h")
    return ratios, "SUMMARY " + "; ".join(parts)
