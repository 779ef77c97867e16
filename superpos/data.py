"""Tokenised splits and dynamically padded batches."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from superpos.backbones.seq2seq import IGNORE


@dataclass
class EncodedSplit:
    """A tokenised split: input ids, target ids (seq2seq) or ``[label]`` (encoder), golds."""

    input_ids: list[list[int]]
    targets: list[list]
    golds: list
    groups: list

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


def encode_split(backbone, task, examples, template: str, max_input_len: int) -> EncodedSplit:
    texts = [task.format_input(ex, template) for ex in examples]
    input_ids = backbone.tokenizer(texts, truncation=True, max_length=max_input_len)["input_ids"]
    target_cache: dict = {}
    targets = []
    for ex in examples:
        key = ex.label
        if key not in target_cache:
            target_cache[key] = backbone.encode_target(task, ex, template)
        targets.append(target_cache[key])
    return EncodedSplit(list(input_ids), targets, [ex.label for ex in examples], [ex.group for ex in examples])


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
