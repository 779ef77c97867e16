"""Tokenised splits (cached on disk) and dynamically padded batches.

Tokenising a large split is the slow part of start-up (SST-2 train: 67,349 rows), so
``encode_split`` caches its result under ``superpos.settings.cache_dir()/tokenized``. The key
is a SHA-256 of everything the result depends on:

* the content of the split: every formatted input text, gold label and group (this covers
  the source file's content, the task, the split protocol and any cap, and works
  the same for local files and hub rows);
* the tokenizer's identity: its full serialised definition (vocabulary, normaliser,
  post-processor), not just its name, since e.g. ``tiny-t5`` re-wires MiniLM's tokenizer;
* the settings: the template, ``max_input_len`` (an input over it keeps every field whole but
  the task's context field: superpos.inputs) and the backbone's ``encoding_key`` (its kind, and
  for a causal LM whether the split is for training: the label is then in the input).

A cache file is written to a temporary name and renamed into place, so a killed run never
leaves a half-written entry and parallel runs never read one.
"""

from __future__ import annotations

import hashlib
import json
import os
import weakref
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path

import torch

from superpos.backbones.seq2seq import IGNORE
from superpos.inputs import fit_inputs
from superpos.settings import cache_dir

CACHE_VERSION = 3  # 3: whole inputs (superpos.inputs), shortened/cut counts


@dataclass
class EncodedSplit:
    """A tokenised split: input ids, target ids (seq2seq) or ``[label]`` (encoder), golds."""

    input_ids: list[list[int]]
    targets: list[list]
    golds: list
    groups: list
    #: True when this split was read from the tokenisation cache
    from_cache: bool = False
    #: examples over max_input_len whose context field was shortened (superpos.inputs)
    shortened: int = 0
    #: examples cut at the end of the text (no context field, or the rest alone too long)
    cut: int = 0

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    targets: torch.Tensor
    indices: list[int]

    def __len__(self) -> int:
        return len(self.indices)


#: digests by tokenizer object: serialising a 30k-token vocabulary is most of a small trial's data start-up,
#: paid again by every trial of a worker that shares its backbone (superpos/backbones/cache.py)
_identities: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def tokenizer_identity(tokenizer) -> str:
    """A digest of the tokenizer's definition (fast tokenizers serialise completely), computed
    once per tokenizer object and size (adding tokens changes the size, so the digest too).

    The backend's truncation and padding state is left out: every call sets it anew.
    """
    known = _identities.get(tokenizer)
    if known is None or known[0] != len(tokenizer):
        known = _identities[tokenizer] = (len(tokenizer), _digest(tokenizer))
    return known[1]


def _digest(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        spec = [type(tokenizer).__name__, tokenizer.name_or_path, len(tokenizer)]
    else:
        spec = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def cache_path(backbone, template: str, texts: list[str], golds: list, groups: list, max_input_len: int, training: bool = False) -> Path:
    content = json.dumps([CACHE_VERSION, backbone.encoding_key(training), template, max_input_len, texts, golds, groups])
    key = hashlib.sha256(tokenizer_identity(backbone.tokenizer).encode() + content.encode()).hexdigest()
    return cache_dir() / "tokenized" / f"{key}.pt"


def _flatten(rows: list[list]) -> tuple[torch.Tensor, torch.Tensor]:
    """Ragged rows as one flat tensor and their lengths (tensors load fast and safely)."""
    flat = [v for r in rows for v in r]
    dtype = torch.float64 if any(isinstance(v, float) for v in flat) else torch.int64
    return torch.tensor(flat, dtype=dtype), torch.tensor([len(r) for r in rows], dtype=torch.int64)


def _unflatten(flat: torch.Tensor, lengths: torch.Tensor) -> list[list]:
    values, lengths = flat.tolist(), lengths.tolist()
    return [values[end - n : end] for n, end in zip(lengths, accumulate(lengths))]


def _save(path: Path, split: EncodedSplit) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ids, id_lens = _flatten(split.input_ids)
    targets, target_lens = _flatten(split.targets)
    payload = {"input_ids": ids, "input_lens": id_lens, "targets": targets, "target_lens": target_lens,
               "fitted": torch.tensor([split.shortened, split.cut])}
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _load(path: Path, golds: list, groups: list) -> EncodedSplit:
    payload = torch.load(path, weights_only=True)
    shortened, cut = payload["fitted"].tolist()
    return EncodedSplit(
        _unflatten(payload["input_ids"], payload["input_lens"]),
        _unflatten(payload["targets"], payload["target_lens"]),
        golds,
        groups,
        from_cache=True,
        shortened=shortened,
        cut=cut,
    )


def encode_split(backbone, task, examples, template: str, max_input_len: int, *, cache: bool = True, training: bool = False) -> EncodedSplit:
    """Tokenise ``examples`` (inputs and targets, as ``backbone.arrange`` lays them out for
    training or evaluation), from the cache when it holds this exact split."""
    texts = [task.format_input(ex, template) for ex in examples]
    golds, groups = [ex.label for ex in examples], [ex.group for ex in examples]
    path = cache_path(backbone, template, texts, golds, groups, max_input_len, training) if cache else None
    if path is not None and path.is_file():
        return _load(path, golds, groups)
    inputs = fit_inputs(backbone.tokenizer, task, examples, template, max_input_len)
    target_cache: dict = {}  # one tokenisation per distinct label
    targets = []
    for ex in examples:
        if ex.label not in target_cache:
            target_cache[ex.label] = backbone.encode_target(task, ex, template)
        targets.append(target_cache[ex.label])
    pairs = [backbone.arrange(i, t, training) for i, t in zip(inputs.input_ids, targets)]
    split = EncodedSplit([p[0] for p in pairs], [p[1] for p in pairs], golds, groups, shortened=inputs.shortened, cut=inputs.cut)
    if path is not None:
        _save(path, split)
    return split


def collate(split: EncodedSplit, indices: list[int], pad_id: int, device) -> Batch:
    rows = [split.input_ids[i] for i in indices]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for j, r in enumerate(rows):
        ids[j, : len(r)] = torch.tensor(r)
        mask[j, : len(r)] = 1
    tgt_rows = [split.targets[i] for i in indices]
    tgt_width = max(len(t) for t in tgt_rows)
    dtype = torch.float32 if isinstance(tgt_rows[0][0], float) else torch.long
    targets = torch.full((len(rows), tgt_width), IGNORE, dtype=dtype)
    for j, t in enumerate(tgt_rows):
        targets[j, : len(t)] = torch.tensor(t, dtype=dtype)
    return Batch(ids.to(device), mask.to(device), targets.to(device), list(indices))
