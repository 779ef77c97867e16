"""The options of ``superpos bench`` (and ``python -m superpos.bench``): importing them loads nothing heavy."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--sizes", default=None, help="comma-separated: tiny, small, base, llama-tiny, llama-1b (default: tiny on cpu, small,base on cuda)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per row (default: 5 on cpu, 10 on cuda)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 2 on cpu, 3 on cuda)")
    p.add_argument("--out", default=None, help="write all numbers to this JSON file (--gpu-check: a directory)")
    p.add_argument("--gpu-check", action="store_true", help="the one-shot CUDA check (superpos/bench/gpu_check.py): tests, bench, verdicts into --out")
    p.add_argument("--dry-run", action="store_true", help="with --gpu-check: every item on CPU at tiny sizes (CI)")
    p.add_argument("--startup", action="store_true", help="start-up of a first and a second trial in one process, phase by phase (superpos/bench/startup.py)")
    p.add_argument("--models", default=None, help="with --startup: comma-separated backbone names (default: tiny-t5,minilm,t5-base-random)")
    p.add_argument("--json", action="store_true", help="with --startup: print the JSON document instead of the table")
