"""Resume after a damaged checkpoint: a truncated ``checkpoint/state.pt`` falls back to the previous
checkpoint, in ``superpos train`` and in a Ray trial's retry, and the run ends bit for bit as the
uninterrupted one."""

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from superpos.train import Trainer, run
from test_train import Interrupt, prompt_of, tiny


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def assert_same_run(a: Path, b: Path) -> None:
    pa, pb = prompt_of(a), prompt_of(b)
    assert pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)
    assert (a / "metrics.jsonl").read_text() == (b / "metrics.jsonl").read_text()


def test_truncated_checkpoint_mid_run_resumes_from_the_previous_one(data_dir, tmp_path, monkeypatch, capsys):
    config = tiny(data_dir, epochs=2, max_train_examples=16, checkpoint_every=1, dropout=True)
    run(config, tmp_path / "full", progress=False)

    original, calls = Trainer.save_checkpoint, {"n": 0}

    def save_truncate_die(self, trial):
        original(self, trial)
        calls["n"] += 1
        if calls["n"] == 3:  # step 3 of 4, mid-epoch: the latest checkpoint is damaged, then the process dies
            truncate(trial.out_dir / "checkpoint" / "state.pt")
            raise Interrupt

    monkeypatch.setattr(Trainer, "save_checkpoint", save_truncate_die)
    with pytest.raises(Interrupt):
        run(config, tmp_path / "resumed", progress=False)
    monkeypatch.setattr(Trainer, "save_checkpoint", original)
    capsys.readouterr()
    run(config, tmp_path / "resumed", progress=False)
    assert "resuming from the previous checkpoint" in capsys.readouterr().err
    assert_same_run(tmp_path / "full", tmp_path / "resumed")


def test_ray_retry_after_a_truncated_checkpoint_falls_back(data_dir, tmp_path, monkeypatch, capsys):
    """``train_group`` (the Ray trainable) with Tune's session faked: the first attempt dies after
    its second report; its retry gets that report's checkpoint with ``state.pt`` truncated."""
    from ray import tune

    from trainables.spec import Member
    from trainables.spec.trial_config import grid_trial_config
    from trainables.trainable import train_group

    config = tiny(data_dir, epochs=2, max_train_examples=16, dropout=True).resolve()
    run(config, tmp_path / "full", progress=False)
    saved, restore_from = [], {"dir": None}

    def report(metrics, checkpoint=None):
        saved.append(Path(shutil.copytree(checkpoint.path, tmp_path / "tune" / f"ckpt{len(saved)}")))
        if len(saved) == 2 and restore_from["dir"] is None:
            raise Interrupt  # the worker dies

    monkeypatch.setattr(tune, "get_context", lambda: SimpleNamespace(get_trial_id=lambda: "t0"))
    monkeypatch.setattr(tune, "get_checkpoint", lambda: restore_from["dir"] and tune.Checkpoint.from_directory(restore_from["dir"]))
    monkeypatch.setattr(tune, "report", report)
    trial_config = {"members": grid_trial_config([Member("m0", config)])}
    for attempt in ("first", "retry"):
        (tmp_path / attempt).mkdir()
        monkeypatch.chdir(tmp_path / attempt)
        if attempt == "first":
            with pytest.raises(Interrupt):
                train_group(trial_config)
            restore_from["dir"] = str(saved[-1])
            truncate(saved[-1] / "m0" / "checkpoint" / "state.pt")
        else:
            train_group(trial_config)
    assert "resuming from the previous checkpoint" in capsys.readouterr().err
    assert_same_run(tmp_path / "full", saved[-1] / "m0")
