"""``python -m trainables.slurm resume-flag``: what a requeued SLURM job adds to its sweep command.
A job Slurm requeued before its first run wrote the sweep's state (preemption, node failure in
the first seconds) must start the sweep, not stop on "nothing to resume"; one whose sweep has
state continues it. (The requeue itself runs for real in tests/test_slurm_launch.py.)"""

import json

import pytest

from trainables import slurm
from trainables.spec import load_spec
from trainables.sweep_state import STATE_FILE, RunOptions, sweep_root

from launch_helpers import REPO

SMOKE = str(REPO / "sweeps" / "smoke.yaml")


def flag(capsys, *args) -> str:
    assert slurm.main(["resume-flag", *map(str, args)]) == 0
    return capsys.readouterr().out


def started(storage) -> None:
    root = sweep_root(load_spec(SMOKE), RunOptions(storage_path=str(storage)))
    (storage / "smoke").mkdir(parents=True)
    (storage / "smoke" / STATE_FILE).write_text(json.dumps({"parent_run_id": "x", "root": root}))


@pytest.mark.parametrize("form", ["separate", "equals", "abbreviated"])
def test_a_sweep_with_state_is_resumed_and_one_without_is_started(capsys, tmp_path, form):
    storage = tmp_path / "ray"
    opt = {"separate": ["--storage-path", storage], "equals": [f"--storage-path={storage}"], "abbreviated": ["--storage", storage]}[form]
    assert flag(capsys, SMOKE, *opt, "--data-dir", tmp_path) == ""  # requeued before any state: start it
    started(storage)
    assert flag(capsys, SMOKE, *opt, "--data-dir", tmp_path) == "--resume\n"


def test_a_command_that_has_resume_keeps_it_once(capsys, tmp_path):
    started(tmp_path / "ray")
    assert flag(capsys, SMOKE, "--storage-path", tmp_path / "ray", "--resume") == ""


def test_state_under_another_storage_path_is_not_this_sweeps(capsys, tmp_path):
    started(tmp_path / "other")
    assert flag(capsys, SMOKE, "--storage-path", tmp_path / "ray") == ""


def test_a_spec_that_does_not_load_is_named(capsys, tmp_path):
    assert slurm.main(["resume-flag", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err
