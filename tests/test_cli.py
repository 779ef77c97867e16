"""`superpos train` end to end: every method writes its files; bad input fails before any work."""

import json
import shutil

import pytest
from safetensors.torch import load_file

from superpos.cli import main

FAST = ["--model", "tiny-t5", "--task", "cb", "--epochs", "1", "--batch-size", "8",
        "--max-train-examples", "16", "--max-eval-examples", "8", "--no-progress"]


def train(data_dir, out, *extra):
    return main(["train", *FAST, "--data-dir", str(data_dir), "--out", str(out), *extra])


@pytest.fixture(scope="module")
def source_prompt(data_dir, tmp_path_factory):
    """ATTEMPT's source prompt, produced by this same system: a `simple` run on another task."""
    out = tmp_path_factory.mktemp("source") / "rte_simple"
    assert main(["train", *FAST, "--task", "rte", "--method", "simple", "--data-dir", str(data_dir), "--out", str(out)]) == 0
    return out / "prompt.safetensors"


@pytest.mark.parametrize("method", ["simple", "superpos", "residual", "attempt", "lowrank", "full"])
def test_each_method_writes_the_three_files(method, data_dir, tmp_path, source_prompt, capsys):
    extra = ["--source-prompts", str(source_prompt)] if method == "attempt" else []
    extra += ["--m", "16"] if method == "superpos" else []
    assert train(data_dir, tmp_path / method, "--method", method, *extra) == 0
    out = tmp_path / method
    assert json.loads((out / "config.json").read_text())["method"] == method
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 1 and set(records[0]) >= {"epoch", "step", "train_loss", "macro_f1", "accuracy", "score"}
    tensors = load_file(out / "prompt.safetensors")
    assert ("prompt" in tensors) == (method not in ("attempt", "full"))
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["status"] == "finished"


BAD = [
    (["--task", "nope"], "unknown task 'nope'.*allowed: .*cb.*rte"),
    (["--method", "lora"], "unknown method 'lora'.*allowed: simple, superpos, residual, attempt, lowrank, full"),
    (["--model", "gpt9"], "unknown model 'gpt9'.*allowed: tiny-t5, minilm"),
    (["--m", "0"], "m must be >= 1, got 0"),
    (["--m", "40000"], r"m = 40000 exceeds the vocabulary.*allowed: 1\.\.30522"),
    (["--lr", "0"], "lr must be a finite number > 0, got 0.0"),
    (["--lr", "-1"], "lr must be a finite number > 0, got -1.0"),
    (["--lr", "inf"], "lr must be a finite number > 0, got inf"),
    (["--lr", "nan"], "lr must be a finite number > 0, got nan"),
    (["--weight-decay", "inf"], "weight_decay must be a finite number >= 0, got inf"),
    (["--method", "attempt", "--temperature", "nan"], r"temperature must be a finite number > 0, got nan \(or unset for d\*e\)"),
    (["--epochs", "0"], "epochs must be >= 1, got 0"),
    (["--method", "attempt"], r"ATTEMPT needs source prompts.*source_prompts: none"),
    (["--method", "simple", "--m", "8"], r"unknown option\(s\) m .*allowed: init_from, lr, prompt_len, sample_special_tokens, weight_decay"),
]


@pytest.mark.parametrize("args,message", BAD)
def test_bad_input_fails_before_any_work(args, message, data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert train(data_dir, out, "--method", "superpos", *args) == 2
    import re

    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()


def test_data_dir_without_the_expected_files_names_the_path(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    assert train(tmp_path / "data", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert f"expected {tmp_path / 'data' / 'cb' / 'train.jsonl'}" in err
    assert not (tmp_path / "out").exists()


def test_rows_without_labels_are_refused(data_dir, tmp_path, capsys):
    data = tmp_path / "data" / "cb"
    data.mkdir(parents=True)
    shutil.copy(data_dir / "cb" / "validation.jsonl", data / "validation.jsonl")
    rows = (data_dir / "cb" / "train.jsonl").read_text().splitlines()
    broken = json.loads(rows[2])
    del broken["label"]
    rows[2] = json.dumps(broken)
    (data / "train.jsonl").write_text("\n".join(rows) + "\n")
    assert train(tmp_path / "data", tmp_path / "out") == 2
    assert "train.jsonl, line 3: missing label field 'label'" in capsys.readouterr().err


def test_finished_run_is_kept_unless_overwrite(data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert train(data_dir, out, "--method", "simple") == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert train(data_dir, out, "--method", "simple") == 2
    assert "already holds a finished run; pass --overwrite" in capsys.readouterr().err
    assert before == {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert train(data_dir, out, "--method", "simple", "--overwrite") == 0


def test_unfinished_run_with_another_config_is_refused(data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert train(data_dir, out, "--method", "simple") == 0
    (out / "result.json").unlink()  # now it looks unfinished
    assert train(data_dir, out, "--method", "simple", "--seed", "5") == 2
    assert "differs in: seed" in capsys.readouterr().err


def test_bare_train_prints_usage_and_starts_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(["train"])
    assert exit_.value.code == 2
    assert "usage: superpos train" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_the_plan_is_printed_before_training(data_dir, tmp_path, monkeypatch, capsys):
    from superpos.train import Trainer

    def no_training(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "fit", no_training)
    with pytest.raises(KeyboardInterrupt):
        train(data_dir, tmp_path / "out", "--method", "simple", "--epochs", "2")
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == (
        "superpos train: simple on cb with tiny-t5, 16 train / 8 eval examples, 2 epoch(s) x 2 steps = 4 optimizer steps;"
        f" writing to {tmp_path / 'out'}\n"
    )


def test_m_beyond_the_vocabulary_is_refused_before_the_model_loads(data_dir, tmp_path, monkeypatch, capsys):
    import superpos.train.trainer

    def no_load(*args, **kwargs):
        raise AssertionError("loaded before the check")

    monkeypatch.setattr(superpos.train.trainer, "load_backbone", no_load)
    monkeypatch.setattr(superpos.train.trainer, "load_splits", no_load)
    assert train(data_dir, tmp_path / "out", "--m", "30523") == 2
    assert "m = 30523 exceeds the vocabulary of tiny-t5 (30522 real tokens); allowed: 1..30522" in capsys.readouterr().err


def test_attempt_without_source_prompts_only_on_purpose():
    from superpos.cli import build_parser, config_from_args

    args = build_parser().parse_args(["train", "--task", "cb", "--model", "tiny-t5", "--method", "attempt", "--source-prompts", "none"])
    assert config_from_args(args).method_config().source_prompts == "none"
