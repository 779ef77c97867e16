"""Whole inputs: fit an example's formatted input to the length limit without losing what is asked.

A plain tail cut of the formatted text (``"boolq passage: ... question: ..."``) drops whatever
comes last: BoolQ's question, MultiRC's paragraph end, an NLI pair's second sentence. The
SuperPos paper states no cap. Here an input longer than ``max_len`` tokens keeps every field
whole except the task's long context field (``Task.context``: BoolQ's passage, MultiRC's
paragraph, a premise, ...), whose words are cut from its end until the formatted input fits
(the longest prefix that fits; found by bisection over words, tokenising the whole formatted
text each time, so the result is what the model reads). Only when the rest alone is longer
than the limit, or the task has no context field, is the text cut at the end (counted as
``cut``: the one case where a question could be lost).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass
class FittedInputs:
    input_ids: list[list[int]]
    #: examples whose context field was shortened (every other field kept whole)
    shortened: int = 0
    #: examples cut at the end of the text (no context field, or the rest alone too long)
    cut: int = 0


def fit_inputs(tokenizer, task, examples, template: str, max_len: int) -> FittedInputs:
    """Token ids of every example's formatted input, each at most ``max_len`` long."""
    texts = [task.format_input(ex, template) for ex in examples]
    ids = tokenizer(texts, verbose=False)["input_ids"]
    out = FittedInputs(list(ids))
    for i, (ex, row) in enumerate(zip(examples, ids)):
        if len(row) <= max_len:
            continue
        fitted = _shorten_context(tokenizer, task, ex, template, max_len) if task.context else None
        if fitted is not None:
            out.input_ids[i], out.shortened = fitted, out.shortened + 1
        else:
            out.input_ids[i] = tokenizer(texts[i], truncation=True, max_length=max_len)["input_ids"]
            out.cut += 1
    return out


def _shorten_context(tokenizer, task, ex, template: str, max_len: int) -> list[int] | None:
    """The input with the longest word prefix of the context field that fits, or None when
    even an empty context does not fit."""
    words = ex.fields[task.context].split()

    def encode(k: int) -> list[int]:
        kept = dataclasses.replace(ex, fields={**ex.fields, task.context: " ".join(words[:k])})
        return tokenizer(task.format_input(kept, template), verbose=False)["input_ids"]

    lo, hi = 0, len(words)  # invariant: encode(lo) fits (checked), encode(hi) does not (the caller's case)
    best = encode(0)
    if len(best) > max_len:
        return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        ids = encode(mid)
        if len(ids) <= max_len:
            lo, best = mid, ids
        else:
            hi = mid
    return best
