"""Issue 19's findings by trying it as a new user would (round 2), each a failing-then-passing
test: export --overwrite keeps a folder's other files; a full disk while a checkpoint is written;
a text file named .safetensors; an output path through a file; a checkpoint that loads but is not
this run's; train --overwrite on a folder whose lone config.json is not superpos's; an adapter
whose token_dim contradicts its tensor; prompt files with the mode of the other run files."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch

from superpos.cli import main
from superpos.config import TrainConfig
from superpos.errors import ConfigError
from superpos.adapter import ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE
from superpos.export import export_run_dir
from superpos.files import umask_mode
from superpos.train import Callback, run

BASE = dict(task="cb", model="tiny-t5", epochs=3, batch_size=4, eval_batch_size=3, dropout=False, device="cpu", max_train_examples=8, max_eval_examples=3)


def config(fixture_data_dir, method="simple", **kw) -> TrainConfig:
    options = {"m": 8} if method == "superpos" else {}
    return TrainConfig(method=method, data_dir=str(fixture_data_dir), method_options=options, **{**BASE, **kw})


def train_args(fixture_data_dir, out, *extra) -> list[str]:
    return ["train", "--task", "cb", "--model", "tiny-t5", "--method", "simple", "--epochs", "3", "--batch-size", "4", "--eval-batch-size", "3",
            "--no-dropout", "--device", "cpu", "--max-train-examples", "8", "--max-eval-examples", "3", "--data-dir", str(fixture_data_dir),
            "--out", str(out), "--no-progress", *extra]


@pytest.fixture(scope="module")
def finished(fixture_data_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "simple"
    run(config(fixture_data_dir), out, progress=False)
    return out


class Stop(Callback):
    """Interrupts a run after ``after`` evaluations (their checkpoints are written)."""

    def __init__(self, after: int):
        self.after, self.seen = after, 0

    def on_evaluation(self, trial, record):
        self.seen += 1
        if self.seen == self.after:
            raise KeyboardInterrupt


def interrupted(cfg: TrainConfig, out: Path, after: int) -> None:
    with pytest.raises(KeyboardInterrupt):
        run(cfg, out, progress=False, callbacks=[Stop(after)])


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


# -- (1) export --overwrite ------------------------------------------------------------------
def test_export_overwrite_replaces_only_what_export_wrote(finished, tmp_path):
    out = export_run_dir(finished, tmp_path / "adapter")
    (out / "thesis.tex").write_text("\\chapter{mine}")
    (out / "checkpoint-500").mkdir()
    (out / "checkpoint-500" / "optimizer.pt").write_bytes(b"mine")
    (out / ADAPTER_WEIGHTS_FILE).write_bytes(b"stale")
    assert main(["export", str(finished), "--out", str(out), "--overwrite"]) == 0
    assert (out / "thesis.tex").read_text() == "\\chapter{mine}" and (out / "checkpoint-500" / "optimizer.pt").read_bytes() == b"mine"
    assert (out / ADAPTER_WEIGHTS_FILE).read_bytes() != b"stale" and json.loads((out / ADAPTER_CONFIG_FILE).read_text())["peft_type"] == "PROMPT_TUNING"


# -- (4) a full disk while a checkpoint is written --------------------------------------------
def test_full_disk_during_a_checkpoint_write(fixture_data_dir, tmp_path, monkeypatch, capsys):
    from superpos import run_dir

    real_save, calls = torch.save, []

    def disk_fills_up(payload, path, *a, **k):
        calls.append(path)
        if len(calls) == 2:  # the second checkpoint: a partial file, then the stream fails as torch reports ENOSPC
            Path(path).write_bytes(b"PK\x03\x04partial")
            raise RuntimeError("[enforce fail at inline_container.cc:859] . PytorchStreamWriter failed writing file data/0: file write failed")
        return real_save(payload, path, *a, **k)

    monkeypatch.setattr(run_dir.torch, "save", disk_fills_up)
    out = tmp_path / "run"
    assert main(train_args(fixture_data_dir, out)) == 1
    err = capsys.readouterr().err
    assert "cannot write the checkpoint" in err and "bytes free" in err and "Traceback" not in err
    assert not (out / "checkpoint" / "state.tmp").exists()  # the partial file is gone
    assert run_dir.read_checkpoint(out / "checkpoint" / "state.pt")["state"]["step"] == 2  # the first checkpoint is intact

    monkeypatch.setattr(run_dir.torch, "save", real_save)  # space freed: the same command resumes
    assert main(train_args(fixture_data_dir, out)) == 0
    reference = tmp_path / "uninterrupted"
    assert main(train_args(fixture_data_dir, reference)) == 0
    assert metrics(out) == metrics(reference)  # nothing lost


def test_no_space_left_is_a_message(fixture_data_dir, tmp_path, monkeypatch, capsys):
    import errno

    from superpos.train import trial

    def full(tensors, path, metadata=None):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(trial, "write_tensors", full)
    assert main(train_args(fixture_data_dir, tmp_path / "run")) == 1
    err = capsys.readouterr().err
    assert "no space left" in err and "prompt.safetensors" in err and "Traceback" not in err


# -- (4) a text file named .safetensors --------------------------------------------------------
def text_adapter(tmp_path) -> Path:
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / ADAPTER_CONFIG_FILE).write_text(json.dumps({"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 4, "token_dim": 32}))
    (folder / ADAPTER_WEIGHTS_FILE).write_text("these are my notes, not tensors\n")
    return folder


def test_text_file_named_safetensors_is_refused_with_a_message(finished, fixture_data_dir, tmp_path, capsys):
    from trainables.spec import parse_spec

    adapter = text_adapter(tmp_path)
    assert main([*train_args(fixture_data_dir, tmp_path / "a"), "--init-from", str(adapter)]) == 2
    assert f"adapter weights {adapter / ADAPTER_WEIGHTS_FILE} is not a readable safetensors file" in capsys.readouterr().err

    assert main(["evaluate", str(adapter), "--task", "cb", "--model", "tiny-t5", "--data-dir", str(fixture_data_dir)]) == 2
    assert "is not a readable safetensors file" in capsys.readouterr().err

    run_copy = tmp_path / "run"
    shutil.copytree(finished, run_copy)
    (run_copy / "best_prompt.safetensors").write_text("not tensors")
    assert main(["evaluate", str(run_copy), "--data-dir", str(fixture_data_dir)]) == 2
    assert f"saved prompt {run_copy / 'best_prompt.safetensors'} is not a readable safetensors file" in capsys.readouterr().err

    notes = tmp_path / "notes.safetensors"
    notes.write_text("a text file")
    args = train_args(fixture_data_dir, tmp_path / "b")
    args[args.index("simple")] = "attempt"
    assert main([*args, "--source-prompts", str(notes)]) == 2
    assert f"source prompt file {notes} is not a readable safetensors file" in capsys.readouterr().err

    spec = {"name": "s", "experiment": "s", "base": {"task": "cb", "model": "tiny-t5", "method": "simple", "init_from": str(adapter)}}
    with pytest.raises(ConfigError, match="is not a readable safetensors file"):
        parse_spec(spec, "s.yaml").members()


# -- (4) output paths through a file -------------------------------------------------------------
def test_output_paths_through_a_file_are_refused(finished, fixture_data_dir, tmp_path, capsys):
    a_file = tmp_path / "report.pdf"
    a_file.write_text("%PDF")
    assert main(["export", str(finished), "--out", str(a_file / "sub")]) == 2
    assert f"{a_file} is a file, not a directory; choose another --out" in capsys.readouterr().err
    test_file = fixture_data_dir / "cb" / "validation.jsonl"
    assert main(["evaluate", str(finished), "--data-dir", str(fixture_data_dir), "--file", str(test_file), "--submission", str(a_file)]) == 2
    assert "is a file, not a directory; choose another --submission" in capsys.readouterr().err
    assert a_file.read_text() == "%PDF"


# -- (4) a checkpoint that loads but is not this run's --------------------------------------------
def test_a_checkpoint_of_another_run_falls_back_to_the_previous(fixture_data_dir, tmp_path, capsys):
    cfg = config(fixture_data_dir)
    out = tmp_path / "run"
    interrupted(cfg, out, after=2)  # state.pt (step 4) and state.prev.pt (step 2)
    other = tmp_path / "other"
    interrupted(config(fixture_data_dir, "superpos"), other, after=1)
    shutil.copy(other / "checkpoint" / "state.pt", out / "checkpoint" / "state.pt")  # another method's state_dict
    run(cfg, out, progress=False)
    assert "not a checkpoint of this run" in capsys.readouterr().err
    reference = tmp_path / "reference"
    run(cfg, reference, progress=False)
    assert metrics(out) == metrics(reference)


def test_no_checkpoint_of_this_run_left_is_refused(fixture_data_dir, tmp_path, capsys):
    cfg = config(fixture_data_dir)
    out = tmp_path / "run"
    interrupted(cfg, out, after=2)
    for name in ("state.pt", "state.prev.pt"):
        torch.save({"model": {"w": torch.zeros(1)}}, out / "checkpoint" / name)  # loads, but no 'trainable'
    with pytest.raises(ConfigError, match="no usable checkpoint .*not a checkpoint of this run .*KeyError"):
        run(cfg, out, progress=False)


# -- (5) minor ------------------------------------------------------------------------------------
def test_train_overwrite_keeps_a_folders_lone_foreign_config_json(fixture_data_dir, tmp_path, capsys):
    out = tmp_path / "hf-model"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "hidden_size": 384}))
    assert main([*train_args(fixture_data_dir, out), "--overwrite"]) == 2
    assert "is not a superpos run" in capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["hidden_size"] == 384


def test_adapter_whose_token_dim_contradicts_its_tensor_is_refused(finished, tmp_path):
    from superpos.adapter import read_adapter

    folder = export_run_dir(finished, tmp_path / "adapter")
    config_file = folder / ADAPTER_CONFIG_FILE
    cfg = json.loads(config_file.read_text())
    cfg["token_dim"] += 1
    config_file.write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="token_dim is"):
        read_adapter(folder)


def test_prompt_files_have_the_mode_of_the_other_run_files(finished, tmp_path):
    def mode(p: Path) -> int:
        return stat.S_IMODE(os.stat(p).st_mode)

    assert mode(finished / "prompt.safetensors") == mode(finished / "best_prompt.safetensors") == mode(finished / "config.json")
    folder = export_run_dir(finished, tmp_path / "adapter")
    assert mode(folder / ADAPTER_WEIGHTS_FILE) == mode(folder / ADAPTER_CONFIG_FILE) and mode(folder) == umask_mode(0o777)
