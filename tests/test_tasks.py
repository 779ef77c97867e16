"""Task registry: formats of real and fixture rows, label parsing, targets, every task end to end."""

from collections import Counter

import pytest
import torch

from glue_fixtures import TASK_NAMES, hub_records
from superpos.cli import main
from superpos.tasks import TASKS, get_task
from superpos.tasks.sources import load_examples

#: template key order per task (methods.md section 3: sorted unless T5 lists them)
KEY_ORDER = {
    "qqp": ["question1", "question2"],
    "qnli": ["question", "sentence"],
    "mnli": ["hypothesis", "premise"],
    "sst2": ["sentence"],
    "stsb": ["sentence1", "sentence2"],
    "mrpc": ["sentence1", "sentence2"],
    "cola": ["sentence"],
    "multirc": ["question", "answer", "paragraph"],
    "rte": ["sentence1", "sentence2"],
    "cb": ["hypothesis", "premise"],
    "copa": ["choice1", "choice2", "premise", "question"],
    "wic": ["sentence1", "sentence2", "word"],
    "boolq": ["passage", "question"],
    "superglue_rte": ["hypothesis", "premise"],
}
TABLE1_METRICS = {
    "qqp": ("f1", "accuracy"), "qnli": ("accuracy",), "mnli": ("accuracy",), "sst2": ("accuracy",),
    "stsb": ("pearson", "spearman"), "mrpc": ("f1", "accuracy"), "cola": ("mcc",), "multirc": ("f1a", "em"),
    "rte": ("accuracy",), "cb": ("macro_f1", "accuracy"), "copa": ("accuracy",), "wic": ("accuracy",),
    "boolq": ("accuracy",), "superglue_rte": ("accuracy",),
}
#: tasks with real files in ../shared/data: (split, row 1 formatted, its target, label counts by target)
REAL = {
    "rte": ("validation", "rte sentence1: Yet, we now are discovering that antibiotics", "entailment", {"entailment": 146, "not_entailment": 131}),
    "mrpc": ("train", "mrpc sentence1: Yucaipa owned Dominick 's before selling", "not_equivalent", {"equivalent": 2474, "not_equivalent": 1194}),
    "sst2": ("validation", "sst2 sentence: unflinchingly bleak and desperate ", "negative", {"positive": 444, "negative": 428}),
    "qnli": ("validation", "qnli question: What is the first major city in the stream of the Rhine? sentence: The most", "not_entailment", {"entailment": 2702, "not_entailment": 2761}),
    "cb": ("validation", "cb hypothesis: there is a shipment premise: ``Who knows?", "neutral", {"entailment": 23, "contradiction": 28, "neutral": 5}),
    "boolq": ("validation", "boolq passage: Property tax -- Property tax or 'house tax'", "True", {"True": 2033, "False": 1237}),
}


def test_registry_holds_the_fourteen_tasks():
    assert set(TASKS) == set(TASK_NAMES) == set(KEY_ORDER)
    assert {name: t.metrics for name, t in TASKS.items()} == TABLE1_METRICS


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_rows_format_and_labels(data_dir, name):
    split, start, target, counts = REAL[name]
    task = get_task(name)
    examples = load_examples(task, split, data_dir)
    assert task.format_input(examples[1]).startswith(start)
    assert task.target_text(examples[1].label) == target
    assert Counter(task.target_text(e.label) for e in examples) == counts
    # the attempt family: same input, label index as target
    assert task.format_input(examples[1], "attempt") == task.format_input(examples[1])
    assert task.target_text(examples[1].label, "attempt") == str(examples[1].label)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_fixture_rows_format(fixture_data_dir, name):
    task = get_task(name)
    record = hub_records(name, task.splits["validation"])[1]
    expected = " ".join([task.prefix, *(f"{k}: {record[k]}" for k in KEY_ORDER[name])])
    example = load_examples(task, "validation", fixture_data_dir)[1]
    assert task.format_input(example) == expected
    assert task.prefix == ("rte" if name == "superglue_rte" else name)


def test_multirc_answers_are_grouped_by_question(fixture_data_dir):
    examples = load_examples(get_task("multirc"), "validation", fixture_data_dir)
    assert [e.group for e in examples] == ["0-0", "0-0", "0-1", "0-1", "1-2", "1-2", "1-3", "1-3"]
    assert [e.label for e in examples] == [1, 0, 0, 1, 0, 0, 1, 0]


def test_mnli_validation_is_matched(fixture_data_dir):
    mnli = get_task("mnli")
    matched = load_examples(mnli, "validation_matched", fixture_data_dir)
    assert load_examples(mnli, "validation", fixture_data_dir) == matched
    assert matched != load_examples(mnli, "validation_mismatched", fixture_data_dir)


@pytest.mark.parametrize(
    "name, text, label",
    [
        ("rte", "not_entailment", 1), ("rte", " Entailment\n", 0), ("rte", "not _ entailment", 1),
        ("rte", "entail", None), ("rte", "", None), ("mnli", "NEUTRAL", 1), ("boolq", "true", 1),
        ("boolq", "False", 0), ("boolq", "yes", None), ("copa", "choice2", 1), ("copa", "2", None),
        ("qqp", "duplicate", 1), ("qqp", "not_duplicate", 0), ("cola", "acceptable", 1),
        ("stsb", "3.4", 3.4), ("stsb", " 5.0 ", 5.0), ("stsb", "three", None), ("stsb", "nan", None),
        ("stsb", "3.4.", None),
    ],
)
def test_parse_t5_labels(name, text, label):
    assert get_task(name).parse(text) == label


def test_parse_attempt_labels():
    cb = get_task("cb")
    assert cb.label_texts("attempt") == ["0", "1", "2"]
    assert [cb.parse(t, "attempt") for t in ("0", " 2", "3", "neutral")] == [0, 2, None, None]


@pytest.mark.parametrize("value, target", [(3.35, "3.4"), (0.09, "0.0"), (4.91, "5.0"), (1.0, "1.0"), (2.7, "2.8")])
def test_stsb_targets_on_the_point_two_grid(value, target):
    stsb = get_task("stsb")
    assert stsb.target_text(value) == target == stsb.target_text(value, "attempt")


def test_encoder_stsb_regression(minilm, fixture_data_dir):
    """STS-B on the encoder: float predictions in [0, 5], a finite loss, gradients only to the input."""
    from superpos.data import collate, encode_split

    stsb = get_task("stsb")
    minilm.prepare(stsb, "t5")
    split = encode_split(minilm, stsb, load_examples(stsb, "train", fixture_data_dir), "t5", 64, cache=False)
    batch = collate(split, list(range(4)), minilm.tokenizer.pad_token_id, "cpu")
    embeds = minilm.embed(batch.input_ids).requires_grad_(True)
    losses, counts = minilm.example_losses(embeds, batch.attention_mask, batch.targets)
    assert losses.shape == (4,) and torch.isfinite(losses).all() and counts.tolist() == [1, 1, 1, 1]
    losses.sum().backward()
    assert embeds.grad.abs().sum() > 0
    preds = minilm.predict(embeds.detach(), batch.attention_mask, stsb, "t5")
    assert all(isinstance(p, float) and 0.0 <= p <= 5.0 for p in preds)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_train_every_task(name, request, fixture_data_dir, tmp_path, tokenized_cache, capsys):
    """``superpos train --model tiny-t5 --task T --epochs 1`` on real data where it exists, else fixtures."""
    source = request.getfixturevalue("data_dir") if name in ("rte", "mrpc", "sst2", "cb") else fixture_data_dir
    argv = ["train", "--model", "tiny-t5", "--task", name, "--epochs", "1", "--max-train-examples", "8",
            "--max-eval-examples", "8", "--batch-size", "8", "--eval-batch-size", "8", "--data-dir", str(source),
            "--out", str(tmp_path / "run"), "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 1 and all(f'"{m}"' in metrics[0] for m in get_task(name).metrics)
