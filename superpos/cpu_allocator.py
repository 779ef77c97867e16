"""Keep glibc's malloc from returning large blocks to the OS between training steps (CPU runs).

glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh
``mmap`` and gives it back with ``munmap`` when freed, so a tensor of that size costs page
faults and zeroing of every page, on every step. A fused group's activations cross that line
first: at tiny-t5 size, 4 trials x 32 examples make a 39 MiB attention mask and 62 MiB of
logits a step through Hugging Face's T5, and `superpos bench --device cpu` measured fused
training at 0.75-0.79x of 4 sequential trials with glibc's defaults and 1.06-1.22x with this
setting (README, Benchmarks).
PyTorch's CPU performance guide recommends jemalloc or TCMalloc for the same reason; this is
the same effect without a preloaded library: ``M_MMAP_MAX = 0`` (no mmap: the heap serves
all sizes) and a trim threshold that never shrinks the heap, so freed blocks are reused.
The price: the process keeps its peak heap until it exits, which a training process reaches
on its first steps anyway.

``SUPERPOS_CPU_ALLOCATOR`` chooses: ``retain`` (default) or ``system`` (leave malloc alone).
Applied by the Trainer and the benchmark when they run on CPU; a no-op where the C library is
not glibc. Settings apply to the whole process, once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

from superpos.errors import choose

ENV = "SUPERPOS_CPU_ALLOCATOR"
CHOICES = ("retain", "system")
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's <malloc.h>
_NEVER_TRIM = 2**31 - 1  # mallopt takes an int

_applied: bool | None = None


def retain_freed_memory() -> bool:
    """Apply the setting chosen by ``SUPERPOS_CPU_ALLOCATOR``; True if glibc's malloc was changed."""
    global _applied
    choice = os.environ.get(ENV, "retain")
    choose("allocator setting", choice, CHOICES, f"environment variable {ENV}")
    if choice == "system" or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if _applied is None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _applied = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, _NEVER_TRIM))
    return _applied
