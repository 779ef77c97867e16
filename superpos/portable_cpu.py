"""Portable CPU mode: the same float results on any x86-64 CPU with AVX2, Intel or AMD.

Without it, a CPU run is bit-for-bit repeatable on one CPU model only: PyTorch, MKL and the
dropout sampler pick their code by what the CPU offers, and each path rounds differently.
The mode pins each choice to one that every AVX2 machine has:

* ``ATEN_CPU_CAPABILITY=avx2``: PyTorch's own vectorised kernels (element-wise maths such as
  GELU's erf and softmax's exp, layer norm, reductions, ``randn``'s Box-Muller) run their AVX2
  build, also where AVX-512 is present (PyTorch would pick it). The prompt initialisation's
  ``randn`` has an AVX2-only fast path, so even the initial prompts differ between AVX2 and
  AVX-512 kernels.
* ``MKL_CBWR=COMPATIBLE``: MKL, which does PyTorch's float32 matrix products on CPU (linear
  layers, attention's batched products), runs its single SSE2 code path without the
  approximate ``rcpps``/``rsqrtps`` instructions, with fixed cache-size blocking and
  deterministic reductions: MKL's documented setting for the same results on Intel and
  non-Intel CPUs. Its AVX2 branch would not do: MKL honours it on Intel CPUs only and falls
  back to its automatic choice elsewhere (seen here: ``MKL_VERBOSE`` says ``CNR:AUTO`` on AMD).
* ``ONEDNN_MAX_CPU_ISA=AVX2``: oneDNN JITs no AVX-512 code. PyTorch runs GELU (forward and
  backward, float32) through oneDNN's element-wise kernel: ``ONEDNN_VERBOSE=1`` shows
  ``jit:avx512_core_bf16`` on an AVX-512 CPU without the cap and ``jit:avx2`` with it.
  Element-wise kernels do not depend on blocking; oneDNN's matmuls and convolutions (not
  called by float32 prompt tuning) block by the cache sizes, which this cannot pin.
* A fixed number of intra-op threads, ``SUPERPOS_CPU_THREADS`` (default 1): reductions split
  their work by thread count. ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``, ``MKL_DYNAMIC=FALSE``
  and ``torch.set_num_threads``.
* Dropout masks: PyTorch's CPU ``bernoulli_`` (behind every dropout) draws with MKL's VSL
  generator on Intel CPUs and with its own generator elsewhere, so one seed gives different
  masks on Intel and AMD. The mode routes ``aten::bernoulli_.float`` on CPU through the
  non-Intel draw on every CPU: one uniform double per element from the same torch generator,
  kept where below p. On a non-Intel CPU this is bit for bit PyTorch's own mask, and the
  generator advances the same (tests/test_portable_cpu.py).

The libraries read these variables once, when they load: ``prepare`` sets them and must run
before torch is imported (the ``superpos`` console script does it for ``train
--deterministic`` and whenever ``SUPERPOS_PORTABLE_CPU=1``; a sweep passes them to its Ray
workers); ``activate`` (the Trainer, on CPU) then pins the threads, installs the dropout
sampler and checks that the capability and MKL branch took effect, refusing to run otherwise.

``SUPERPOS_PORTABLE_CPU``: ``1`` on, ``0`` off; unset: on for ``deterministic`` runs on CPU
(``make demo`` sets 1). Not pinned: a CPU without AVX2 (PyTorch falls back to its scalar
kernels; ``activate`` refuses), glibc's libm in scalar code outside these libraries (the same
on one OS image), oneDNN's cache-dependent blocking (above), and GPUs (superpos.determinism). What a run used is in ``environment.json``
(``cpu_portable``, ``cpu_capability``, ``cpu_threads``, ``mkl_cbwr``, ``onednn_max_cpu_isa``).
"""

from __future__ import annotations

import ctypes
import os
import sys
import warnings
from pathlib import Path

from superpos.errors import ConfigError, choose

SWITCH = "SUPERPOS_PORTABLE_CPU"
THREADS = "SUPERPOS_CPU_THREADS"
DEFAULT_THREADS = 1
CAPABILITY = "AVX2"
#: MKL's conditional numerical reproducibility branches (mkl_cbwr_get's values)
MKL_BRANCHES = {0: "OFF", 1: "OFF", 2: "AUTO", 3: "COMPATIBLE"}
MKL_BRANCH = "COMPATIBLE"

_active = False
_library = None  # the torch.library override of aten::bernoulli_.float, kept alive


def threads(environ=os.environ) -> int:
    value = environ.get(THREADS, str(DEFAULT_THREADS))
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"environment variable {THREADS} = {value!r}; allowed: a positive integer (default {DEFAULT_THREADS})")
    return int(value)


def settings(environ=os.environ) -> dict[str, str]:
    """The variables the mode sets (see the module docstring)."""
    n = str(threads(environ))
    return {SWITCH: "1", "ATEN_CPU_CAPABILITY": CAPABILITY.lower(), "MKL_CBWR": MKL_BRANCH, "ONEDNN_MAX_CPU_ISA": CAPABILITY,
            "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "MKL_DYNAMIC": "FALSE"}


def requested(deterministic: bool = False, environ=os.environ) -> bool:
    """``SUPERPOS_PORTABLE_CPU`` if set, else ``deterministic``."""
    value = environ.get(SWITCH, "")
    if value == "":
        return deterministic
    choose("portable CPU mode", value, ("0", "1"), f"environment variable {SWITCH}")
    return value == "1"


def prepare(deterministic: bool = False, environ=os.environ) -> bool:
    """Set the mode's variables in ``environ`` if it is requested; True if set. Must run before
    torch is imported: in a process that already imported torch it sets nothing (the settings
    would come too late, and would leak into every subprocess) and ``activate`` will refuse."""
    if not requested(deterministic, environ) or (environ is os.environ and "torch" in sys.modules):
        return False
    environ.update(settings(environ))
    return True


def worker_env(deterministic: bool = False) -> dict[str, str] | None:
    """The variables for a sweep's Ray workers (``runtime_env``), or None when the mode is off."""
    return settings() if requested(deterministic) else None


def mkl_branch() -> str | None:
    """MKL's reproducibility branch in this process (None where MKL's service layer is not visible)."""
    import torch

    try:
        get = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so")).mkl_serv_cbwr_get
    except (OSError, AttributeError):
        return None
    return MKL_BRANCHES.get(get(1), str(get(1)))


def activate() -> None:
    """The mode in this process (the Trainer calls it on CPU when ``SUPERPOS_PORTABLE_CPU=1``):
    check that the settings took effect, then pin the threads and install the dropout sampler."""
    global _active, _library
    import torch

    pinned = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA")
    missing = [f"{k}={v}" for k, v in settings().items() if k in pinned and os.environ.get(k) != v]
    capability, branch = torch.backends.cpu.get_cpu_capability(), mkl_branch()
    if missing or capability != CAPABILITY or branch not in (MKL_BRANCH, None):
        raise ConfigError(
            f"portable CPU mode ({SWITCH}=1): PyTorch runs {capability} kernels (wanted {CAPABILITY}), MKL's branch is {branch} "
            f"(wanted {MKL_BRANCH}), not set: {', '.join(missing) or 'none'}. The settings must be in the environment before "
            f"torch is imported: start the process with the superpos command, or call superpos.portable_cpu.prepare() before "
            f"importing torch; on a CPU without AVX2 the mode cannot hold: set {SWITCH}=0"
        )
    torch.set_num_threads(threads())
    if _library is None:
        _library = torch.library.Library("aten", "IMPL")
        with warnings.catch_warnings():  # "Overriding a previously registered kernel": the point
            warnings.simplefilter("ignore")
            _library.impl("bernoulli_.float", portable_bernoulli_, "CPU")
    _active = True


def portable_bernoulli_(self, p: float = 0.5, *, generator=None):
    """``Tensor.bernoulli_(p)`` as PyTorch's CPU kernel draws it on non-Intel CPUs: per element
    in memory order, a uniform double from ``generator`` (or the default one), 1 where < p."""
    import torch

    return self.copy_(torch.empty_like(self, dtype=torch.float64).uniform_(0, 1, generator=generator) < p)


def use(deterministic: bool) -> None:
    """The Trainer's hook on CPU: ``activate`` in a process started in the mode; a warning for a
    deterministic run without it (repeatable on this CPU model only)."""
    if os.environ.get(SWITCH) == "1":
        activate()
    elif deterministic and os.environ.get(SWITCH, "") == "":
        warnings.warn(f"deterministic on CPU without the portable CPU mode: the bits repeat on this CPU model only; start the "
                      f"process with the superpos command (train --deterministic) or {SWITCH}=1 (superpos/portable_cpu.py)", stacklevel=2)


def state() -> dict:
    """What ``environment.json`` records about the mode."""
    import torch

    return {
        "cpu_portable": _active,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_threads": torch.get_num_threads(),
        "mkl_cbwr": mkl_branch(),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
    }
