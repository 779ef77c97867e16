"""``deterministic: true``: the same config, seed and environment give the same bits.

What is deterministic without the option:

* on CPU, everything: data order (``train.epoch_order``), prompt initialisation, dropout
  masks (seeded generators) and the kernels, which use no atomics. Two runs of the same
  config in fresh processes give bit-identical prompts (tests/test_determinism.py), on the
  same CPU model and with the same package versions (``environment.json``). Another CPU
  (PyTorch's AVX-512 vs AVX2 kernels, MKL's code paths, Intel's vs others' dropout sampler)
  or other torch/transformers versions change the last bits, and over many steps the scores.
  On CPU, ``deterministic: true`` also runs the portable CPU mode (superpos/portable_cpu.py):
  the same bits on any x86-64 CPU with AVX2.

What is not, on CUDA, without the option: cuBLAS may pick split-K reductions whose order
depends on its workspace, cuDNN benchmarks and picks algorithms per run, and the backward of
index operations (the embedding lookup of the token ids, ``index_add``/``scatter_add``) and of
SDPA's memory-efficient attention accumulate with atomics, so the order of float additions,
and with it the last bits of gradients, varies from run to run; the differences grow over
training. ``torch.compile`` (``forward: fast``) generates Triton kernels by autotuning, which
may pick other kernels on another card or Triton version.

What ``deterministic: true`` does (before any CUDA work): ``torch.use_deterministic_algorithms(True)``
(deterministic kernels where torch has them; an operation without one raises an error rather
than run non-deterministically), ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (a fixed cuBLAS workspace,
required for deterministic cuBLAS on CUDA >= 10.2), ``torch.backends.cudnn.deterministic = True``
and ``torch.backends.cudnn.benchmark = False``. Then repeated runs on the same card, driver,
CUDA/cuDNN and package versions give the same bits (slower: deterministic index backward and
attention). Other GPU models, other CUDA or cuDNN versions and bf16 vs fp32 still change results;
``environment.json`` records all of them. Not verified on a GPU yet (the GPU check, superpos/bench/gpu_check.py,
compares two deterministic CUDA training runs bit for bit).
"""

from __future__ import annotations

import os

import torch

#: cuBLAS's documented setting for reproducible results (the other one is ":16:8")
CUBLAS_WORKSPACE = ":4096:8"


def make_deterministic() -> None:
    """Deterministic kernels for the rest of the process (see the module docstring)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
