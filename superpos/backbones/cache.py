"""A per-process cache of frozen backbones, and the persistent compile cache of the fast forward.

A worker that runs trial after trial (Ray Tune's ``reuse_actors``) loads each backbone once:
``shared`` hands back the same ``Backbone`` for the same ``BackboneKey``, which holds everything
that determines it (name, revision, dropout, head, forward, evaluation, gradient checkpointing,
device, and the dtype a trial gets it in). The methods never write the frozen weights (only
``full`` trains them, and the Trainer never asks the cache for it), but a trial leaves other state
behind, so every hit is first put back as it was loaded:

* the train/eval flag of every module (the dropout switch of the next trial's ``fit`` acts on
  these exactly as on a fresh load);
* ``requires_grad`` off and no ``.grad`` on every weight;
* on CUDA, the weights themselves: the Trainer casts them to bf16 only after its prompts are
  initialised from the fp32 vocabulary (trainer.py), so the entry keeps a CPU fp32 copy of the
  weights as loaded and restores it (a host-to-device copy, not a read from disk).

``prepare`` (task-specific state: an encoder's class embeddings) runs again in every Trainer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from superpos.backbones.base import Backbone
from superpos.settings import cache_dir

#: the environment variable TorchInductor reads for its on-disk caches (FX graphs, AOT autograd)
INDUCTOR_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


@dataclass(frozen=True)
class BackboneKey:
    name: str
    #: what a name alone does not pin: a local directory's files (their latest modification)
    revision: str
    dtype: str
    dropout: bool
    head: str
    fast: bool
    evaluation: str
    gradient_checkpointing: bool
    device: str


@dataclass
class _Entry:
    backbone: Backbone
    modes: list[bool]
    #: the weights as loaded (CPU), where a trial changes their dtype in place (CUDA: bf16)
    pristine: dict[str, torch.Tensor] | None


_entries: dict[BackboneKey, _Entry] = {}
#: loads and hits since the process started (the start-up benchmark reads them)
stats = {"loads": 0, "hits": 0}


def revision(name: str) -> str:
    """A local directory's latest file modification (a re-saved model is a new backbone); "" for a name."""
    path = Path(name)
    if not path.is_dir():
        return ""
    return str(max((f.stat().st_mtime_ns for f in path.rglob("*") if f.is_file()), default=0))


def shared(key: BackboneKey, load: Callable[[], Backbone]) -> Backbone:
    """The backbone for ``key``: ``load()`` on the first call, the same object reset to its loaded state after."""
    entry = _entries.get(key)
    if entry is None:
        backbone = load()
        keep = torch.device(key.device).type == "cuda"
        pristine = {k: v.detach().to("cpu", copy=True) for k, v in backbone.model.state_dict().items()} if keep else None
        _entries[key] = _Entry(backbone, [m.training for m in backbone.modules()], pristine)
        stats["loads"] += 1
        return backbone
    stats["hits"] += 1
    backbone = entry.backbone
    if entry.pristine is not None:
        backbone.model.to(torch.float32)
        backbone.model.load_state_dict(entry.pristine)
    for module, mode in zip(backbone.modules(), entry.modes):
        module.training = mode
    for p in backbone.model.parameters():
        p.requires_grad_(False)
        p.grad = None
    return backbone


def clear() -> None:
    """Forget every cached backbone (tests; a process that needs the memory back)."""
    _entries.clear()


def compile_cache() -> Path:
    """Point TorchInductor's persistent caches (FX graph and AOT autograd) at ``SUPERPOS_CACHE/inductor``,
    shared by the trials of a node, so a later process compiles the fast forward from disk. A
    directory the user set already is kept."""
    os.environ.setdefault(INDUCTOR_CACHE_ENV, str(cache_dir() / "inductor"))
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    inductor_config.fx_graph_cache = True
    functorch_config.enable_autograd_cache = True
    return Path(os.environ[INDUCTOR_CACHE_ENV])
