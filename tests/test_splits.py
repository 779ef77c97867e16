"""Split protocols (methods.md section 5): paper, and the reproducible heldout protocol."""

import json

import pytest
import torch

from glue_fixtures import hub_records, write_original_split
from superpos.config import TrainConfig
from superpos.errors import ConfigError, DataError
from superpos.tasks import get_task
from superpos.tasks.sources import load_examples
from superpos.tasks.splits import load_splits
from superpos.train import run


def test_paper_protocol_is_train_and_whole_validation(fixture_data_dir):
    rte = get_task("rte")
    splits = load_splits(rte, "paper", fixture_data_dir)
    assert splits.train == load_examples(rte, "train", fixture_data_dir)
    assert splits.validation == load_examples(rte, "validation", fixture_data_dir)
    assert splits.test is None


def test_heldout_halves_are_reproducible(data_dir):
    rte = get_task("rte")
    validation = load_examples(rte, "validation", data_dir)
    first, again = load_splits(rte, "heldout", data_dir), load_splits(rte, "heldout", data_dir)
    assert (first.validation, first.test) == (again.validation, again.test)
    assert (len(first.validation), len(first.test)) == (138, 139)  # 277 // 2 and the rest
    # ATTEMPT's order: torch.randperm with a generator seeded 42; first half validation
    perm = torch.randperm(277, generator=torch.Generator().manual_seed(42)).tolist()
    assert first.validation == [validation[i] for i in perm[:138]]
    assert first.test == [validation[i] for i in perm[138:]]
    assert first.train == load_examples(rte, "train", data_dir)


def test_heldout_large_task_holds_out_1000_training_examples(tmp_path):
    train = hub_records("qqp", "train", 1010)
    write_original_split(tmp_path / "qqp", "qqp", "train", train)
    write_original_split(tmp_path / "qqp", "qqp", "validation", hub_records("qqp", "validation"))
    qqp = get_task("qqp")
    splits = load_splits(qqp, "heldout", tmp_path)
    assert (len(splits.train), len(splits.validation)) == (10, 1000)
    assert sorted(e.fields["question1"] for e in splits.train + splits.validation) == sorted(r["question1"] for r in train)
    assert splits.test == load_examples(qqp, "validation", tmp_path)
    assert load_splits(qqp, "heldout", tmp_path) == splits


def test_heldout_mnli_mismatched_validation_matched_test(fixture_data_dir):
    mnli = get_task("mnli")
    splits = load_splits(mnli, "heldout", fixture_data_dir)
    assert splits.validation == load_examples(mnli, "validation_mismatched", fixture_data_dir)
    assert splits.test == load_examples(mnli, "validation_matched", fixture_data_dir)


def test_heldout_keeps_multirc_questions_whole(fixture_data_dir):
    splits = load_splits(get_task("multirc"), "heldout", fixture_data_dir)
    validation, test = {e.group for e in splits.validation}, {e.group for e in splits.test}
    assert len(validation) == len(test) == 2 and not validation & test
    assert len(splits.validation) + len(splits.test) == 8


def test_heldout_too_small_validation(tmp_path):
    write_original_split(tmp_path / "cb", "cb", "train", hub_records("cb", "train"))
    write_original_split(tmp_path / "cb", "cb", "validation", hub_records("cb", "validation", 1))
    with pytest.raises(DataError, match="heldout protocol leaves no validation examples"):
        load_splits(get_task("cb"), "heldout", tmp_path)


def test_unknown_protocol_is_refused():
    with pytest.raises(ConfigError, match="unknown split 'dev'.*allowed: paper, heldout"):
        TrainConfig(split="dev").validate()


def test_heldout_run_reports_test_score_at_best_validation_step(fixture_data_dir, tmp_path, tokenized_cache):
    config = TrainConfig(task="copa", model="tiny-t5", data_dir=str(fixture_data_dir), epochs=3, batch_size=4,
                         eval_batch_size=8, split="heldout", device="cpu")
    run(config, tmp_path / "run", progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 3
    for k, r in enumerate(records):
        assert {"test_accuracy", "test_score", "test_invalid_rate", "best_test_score"} <= set(r)
        best = max(records[: k + 1], key=lambda x: x["score"])  # the first of equal scores
        assert r["best_test_score"] == best["test_score"] and r["best_score"] == best["score"]
