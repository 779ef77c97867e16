"""The output directory: --overwrite removes a superpos run's files and nothing else; checkpoints
are written so that a good one exists at every moment, and read with a fallback."""

import pytest
import torch

from superpos.cli import main
from superpos.config import TrainConfig
from superpos.errors import ConfigError
from superpos.run_dir import CHECKPOINT_DIR, RUN_FILES, clear_run, read_checkpoint, write_checkpoint

FAST = ["--model", "tiny-t5", "--task", "cb", "--method", "simple", "--epochs", "1", "--batch-size", "8",
        "--max-train-examples", "8", "--max-eval-examples", "8", "--no-progress"]


def train(data_dir, out, *extra):
    return main(["train", *FAST, "--data-dir", str(data_dir), "--out", str(out), *extra])


def contents(folder):
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def test_overwrite_refuses_a_folder_that_is_not_a_run(data_dir, tmp_path, capsys):
    out = tmp_path / "thesis"
    (out / "figures").mkdir(parents=True)
    (out / "thesis.tex").write_text("\\chapter{One}\n")
    (out / "figures" / "a.pdf").write_bytes(b"%PDF")
    before = contents(out)
    assert train(data_dir, out, "--overwrite") == 2
    err = capsys.readouterr().err
    assert "is not a superpos run (it holds figures/, thesis.tex)" in err and "--overwrite" not in err
    assert contents(out) == before


def test_overwrite_refuses_a_run_with_a_file_of_the_users(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    TrainConfig(task="cb", method="simple").save(out / "config.json")
    (out / "result.json").write_text('{"status": "finished"}')
    (out / "notes.txt").write_text("keep me")
    before = contents(out)
    assert train(data_dir, out, "--overwrite") == 2
    err = capsys.readouterr().err
    assert "is not a superpos run (it holds notes.txt)" in err and "--overwrite" not in err
    assert contents(out) == before


def test_a_damaged_run_is_refused_with_a_message(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text('{"task": "cb", ')  # cut short
    (out / "metrics.jsonl").write_text("")  # with a run's other files: a run, damaged
    assert train(data_dir, out) == 2
    assert f"output directory {out} holds a damaged superpos run" in capsys.readouterr().err
    assert (out / "config.json").read_text() == '{"task": "cb", '


def test_out_naming_a_file_is_refused(data_dir, tmp_path, capsys):
    plain = tmp_path / "results.csv"
    plain.write_text("a,b\n")
    for out in (plain, plain / "run"):
        assert train(data_dir, out, "--overwrite") == 2
        assert f"{plain} is a file, not a directory; choose another --out" in capsys.readouterr().err
    assert plain.read_text() == "a,b\n"


def test_clear_run_removes_only_the_run_files(tmp_path):
    out = tmp_path / "run"
    (out / CHECKPOINT_DIR).mkdir(parents=True)
    for name in RUN_FILES[:-1]:
        (out / name).write_text("x")
    write_checkpoint({"step": torch.tensor(1)}, out / CHECKPOINT_DIR / "state.pt")
    clear_run(out)
    assert out.is_dir() and not any(out.iterdir())


def test_a_checkpoint_that_does_not_read_back_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint" / "state.pt"
    write_checkpoint({"step": torch.tensor(1)}, path)
    real_save = torch.save

    def short_write(obj, f):  # a full disk or a killed writer: half a file
        real_save(obj, f)
        f.write_bytes(f.read_bytes()[:40])

    monkeypatch.setattr(torch, "save", short_write)
    with pytest.raises(Exception):
        write_checkpoint({"step": torch.tensor(2)}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert read_checkpoint(path)["step"] == 1
    write_checkpoint({"step": torch.tensor(3)}, path)
    assert read_checkpoint(path)["step"] == 3 and read_checkpoint(path.with_name("state.prev.pt"))["step"] == 1


def test_a_truncated_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
    path = tmp_path / "checkpoint" / "state.pt"
    write_checkpoint({"step": torch.tensor(1)}, path)
    write_checkpoint({"step": torch.tensor(2)}, path)
    path.write_bytes(path.read_bytes()[:100])
    assert read_checkpoint(path)["step"] == 1
    assert f"resuming from the previous checkpoint {path.with_name('state.prev.pt')}" in capsys.readouterr().err
    path.with_name("state.prev.pt").write_bytes(b"")
    with pytest.raises(ConfigError, match=rf"no usable checkpoint in {path.parent} \({path}: .*state\.prev\.pt: .*delete .* or pass --overwrite"):
        read_checkpoint(path)
    assert read_checkpoint(tmp_path / "elsewhere" / "state.pt") is None
