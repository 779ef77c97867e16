"""Same config, same seed, same environment: the same bits (superpos/determinism.py)."""

import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from superpos.determinism import CUBLAS_WORKSPACE, make_deterministic


def train_minilm(data_dir, out, *extra) -> subprocess.Popen:
    """`superpos train` on the real MiniLM and SST-2, in a process of its own."""
    args = ["--model", "minilm", "--task", "sst2", "--method", "superpos", "--no-dropout", "--m", "16", "--batch-size", "8",
            "--max-train-examples", "48", "--max-eval-examples", "16", "--epochs", "1", "--data-dir", str(data_dir),
            "--out", str(out), "--no-progress", *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "superpos.cli", "train", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_two_processes_train_bit_identical_prompts(data_dir, tmp_path):
    """Two fresh processes, the same config and seed: every prompt tensor equal bit for bit on CPU.
    (``--deterministic`` on CPU runs the portable CPU mode, other kernels on purpose:
    tests/test_portable_cpu.py.)"""
    outs = [tmp_path / name for name in ("a", "b")]
    procs = [train_minilm(data_dir, outs[0]), train_minilm(data_dir, outs[1])]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
    first = load_file(outs[0] / "prompt.safetensors")
    assert set(first) >= {"prompt", "E", "p_prime"}
    for other in outs[1:]:
        tensors = load_file(other / "prompt.safetensors")
        assert set(tensors) == set(first)
        for key in first:
            assert torch.equal(tensors[key], first[key]), f"{other.name}: {key} differs"
    assert (outs[0] / "metrics.jsonl").read_text() == (outs[1] / "metrics.jsonl").read_text()


def test_deterministic_option_sets_the_flags(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    flags = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        make_deterministic()
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE
    finally:
        torch.use_deterministic_algorithms(flags[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags[1:]


def test_deterministic_must_be_a_bool():
    from superpos.config import TrainConfig
    from superpos.errors import ConfigError

    with pytest.raises(ConfigError, match=r"deterministic must be true or false, got 'yes' \(spec.yaml: base\)"):
        TrainConfig(deterministic="yes").validate("spec.yaml: base")


def test_deterministic_flag_reaches_the_config():
    from superpos.cli import build_parser, config_from_args

    required = ["train", "--task", "cb", "--model", "tiny-t5"]
    assert config_from_args(build_parser().parse_args([*required, "--deterministic"])).deterministic is True
    assert config_from_args(build_parser().parse_args(required)).deterministic is False
