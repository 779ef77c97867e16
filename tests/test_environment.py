"""superpos/environment.py: what every run records, ``superpos env``, and the lock file."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from superpos import environment
from superpos.cli import main

REPO = Path(__file__).resolve().parent.parent
#: installed by venv/pip themselves, not by the lock
NOT_LOCKED = {"pip", "superpos"}


def pip_list() -> dict[str, str]:
    out = subprocess.run([sys.executable, "-m", "pip", "list", "--format=json"], capture_output=True, text=True, check=True).stdout
    return {environment.normalise(p["name"]): p["version"] for p in json.loads(out)}


def test_superpos_env_matches_pip_list(capsys):
    assert main(["env", "--json"]) == 0
    env = json.loads(capsys.readouterr().out)
    installed = pip_list()
    for name in environment.PACKAGES:
        assert env[name] == installed.get(name), name  # None where pip lists no such package
    assert env["python"] == ".".join(map(str, sys.version_info[:3]))
    assert env["device"] == "cpu" and env["cuda"] is None  # the CPU build of torch here
    assert env["lock_sha256"] == environment.lock_hash(REPO / "requirements.lock")


def test_run_directory_holds_the_environment(fixture_data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--model", "tiny-t5", "--task", "cb", "--method", "simple", "--epochs", "1", "--batch-size", "4",
                 "--max-train-examples", "4", "--max-eval-examples", "4", "--data-dir", str(fixture_data_dir), "--out", str(out), "--no-progress"])
    assert code == 0
    recorded = json.loads((out / "environment.json").read_text())
    assert recorded == json.loads(json.dumps(environment.collect()))
    assert recorded["torch"] == pip_list()["torch"]


def test_tags_round_trip():
    env = {"torch": "2.13.0", "cuda": "12.8", "cudnn": 91002, "git_dirty": False, "cpu": "Intel(R) Xeon(R)", "cpu_threads": 16,
           "onednn_max_cpu_isa": None}
    tags = environment.as_tags(env)
    assert tags["env.onednn_max_cpu_isa"] == "null" and tags["env.git_dirty"] == "false" and tags["env.torch"] == "2.13.0"
    assert tags["env.cpu_threads"] == "16" and tags["env.cuda"] == "12.8"
    assert environment.from_tags({**tags, "task": "rte"}) == env


def test_git_absent_gives_nulls(monkeypatch):
    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", no_git)
    assert environment.git_state() == (None, None)


def test_lock_from_a_pip_report():
    report = {
        "environment": {"python_full_version": "3.11.7", "platform_machine": "x86_64", "sys_platform": "linux"},
        "install": [{"metadata": {"name": n, "version": v}} for n, v in (("Torch", "2.13.0+cpu"), ("superpos", "0.1.0"), ("PyYAML", "6.0"), ("typing_extensions", "4.1"))],
    }
    text = environment.lock_from_report(report)
    assert [line for line in text.splitlines() if not line.startswith("#")] == ["pyyaml==6.0", "torch==2.13.0+cpu", "typing-extensions==4.1"]
    assert "Python 3.11.7 on x86_64 linux" in text


def test_lock_pins_every_dependency_of_pyproject():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lock = environment.read_lock()
    for requirement in project["dependencies"] + project["optional-dependencies"]["dev"]:
        name = environment.normalise(requirement.split("[")[0].split(">")[0].split("<")[0].split("=")[0].strip())
        assert name in lock, f"{name} (pyproject.toml) is not in requirements.lock: run make lock"


@pytest.mark.skipif(not (Path(sys.prefix) / "requirements.lock").is_file(), reason="not a venv installed from the lock by `make install`")
def test_installed_venv_equals_the_lock():
    lock = environment.read_lock()
    installed = {k: v for k, v in pip_list().items() if k not in NOT_LOCKED}
    assert installed == lock, "the venv differs from requirements.lock: run make install"
