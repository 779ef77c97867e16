"""Whole inputs (superpos/inputs.py): an input over the limit loses words of its context field
only; the question, hypothesis, answer or word asked about survives."""

import pytest

from superpos.data import encode_split
from superpos.inputs import fit_inputs
from superpos.tasks import get_task
from superpos.tasks.base import Example


def words(n, stem="w"):
    return " ".join(f"{stem}{i}" for i in range(n))


def normalized(tokenizer, text):
    return tokenizer.decode(tokenizer(text)["input_ids"], skip_special_tokens=True).strip()


def ends_with(tokenizer, ids, text):
    return tokenizer.decode(ids, skip_special_tokens=True).strip().endswith(normalized(tokenizer, text))


@pytest.mark.parametrize("task_name, fields, asked", [
    ("boolq", {"passage": words(2000), "question": "is the sky blue on a clear day"}, ["question"]),
    ("multirc", {"question": "who wrote it", "answer": "the author alone", "paragraph": words(1500)}, ["question", "answer"]),
    ("cb", {"hypothesis": "the man left", "premise": words(900)}, ["hypothesis"]),
])
def test_a_long_context_is_shortened_and_the_rest_kept_whole(tiny_t5, task_name, fields, asked):
    task = get_task(task_name)
    long = Example(fields, 0)
    short = Example({**fields, task.context: "short text"}, 1)
    fitted = fit_inputs(tiny_t5.tokenizer, task, [long, short], "t5", 64)
    assert (fitted.shortened, fitted.cut) == (1, 0)
    ids = fitted.input_ids[0]
    assert 56 <= len(ids) <= 64  # as much context as fits (word granularity), never more than the limit
    text = tiny_t5.tokenizer.decode(ids, skip_special_tokens=True)
    for key in asked:
        assert normalized(tiny_t5.tokenizer, f"{key}: {fields[key]}") in text
    assert normalized(tiny_t5.tokenizer, f"{task.context}: w0 w1 w2") in text  # the context's beginning is kept
    assert fitted.input_ids[1] == tiny_t5.tokenizer(task.format_input(short))["input_ids"]  # short inputs untouched


def test_without_a_context_field_or_room_the_text_is_cut_and_counted(tiny_t5):
    mrpc = get_task("mrpc")
    assert mrpc.context is None
    fitted = fit_inputs(tiny_t5.tokenizer, mrpc, [Example({"sentence1": words(200), "sentence2": "b"}, 0)], "t5", 32)
    assert (fitted.shortened, fitted.cut, len(fitted.input_ids[0])) == (0, 1, 32)
    boolq = get_task("boolq")  # a question longer than the limit by itself: nothing to shorten
    fitted = fit_inputs(tiny_t5.tokenizer, boolq, [Example({"passage": "p", "question": words(100)}, 0)], "t5", 32)
    assert (fitted.shortened, fitted.cut) == (0, 1)


def test_counts_survive_the_tokenisation_cache(tiny_t5, tokenized_cache):
    boolq = get_task("boolq")
    examples = [Example({"passage": words(300), "question": "q"}, 0), Example({"passage": "p", "question": "q"}, 1)]
    first = encode_split(tiny_t5, boolq, examples, "t5", 64)
    again = encode_split(tiny_t5, boolq, examples, "t5", 64)
    assert again.from_cache and (first.shortened, again.shortened, again.cut) == (1, 1, 0)
    assert again.input_ids == first.input_ids


@pytest.mark.slow
def test_boolq_validation_questions_under_the_old_and_the_new_limit(data_dir, tiny_t5):
    """The real BoolQ validation file, tiny-t5's tokenizer: how many examples lose (part of)
    their question under the old default (256 tokens, text cut at its end; BoolQ's question
    comes last) and under the new one (512, context shortened). Printed for the README."""
    from superpos.tasks.sources import load_examples

    boolq = get_task("boolq")
    examples = load_examples(boolq, "validation", data_dir)
    tok = tiny_t5.tokenizer
    old = tok([boolq.format_input(ex) for ex in examples], truncation=True, max_length=256)["input_ids"]
    lost_old = sum(not ends_with(tok, ids, ex.fields["question"]) for ids, ex in zip(old, examples))
    new = fit_inputs(tok, boolq, examples, "t5", 512)
    lost_new = sum(not ends_with(tok, ids, ex.fields["question"]) for ids, ex in zip(new.input_ids, examples))
    print(f"\nBoolQ validation ({len(examples)} examples, tiny-t5 tokenizer): question lost under the old default "
          f"(256, tail cut): {lost_old}; under the new (512, passage shortened): {lost_new} "
          f"({new.shortened} passages shortened, {new.cut} cut)")
    assert lost_old > 0 and lost_new == 0 and new.cut == 0
