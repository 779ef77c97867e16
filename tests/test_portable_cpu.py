"""superpos/portable_cpu.py: the same bits whichever kernels the CPU would pick by itself."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from superpos import portable_cpu
from superpos.cli import deterministic_cpu_training
from superpos.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
#: what another machine's libraries would pick by themselves, each set against the mode
NATIVE = {"ATEN_CPU_CAPABILITY": "", "MKL_CBWR": "", "ONEDNN_MAX_CPU_ISA": "", "OMP_NUM_THREADS": "2"}
OTHER = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "AUTO", "ONEDNN_MAX_CPU_ISA": "SSE41", "OMP_NUM_THREADS": "1"}


def train(data_dir, out, kernels: dict) -> subprocess.Popen:
    """`superpos train --deterministic` (so the portable CPU mode) on MiniLM and SST-2 with dropout on."""
    args = ["--model", "minilm", "--task", "sst2", "--method", "superpos", "--m", "16", "--batch-size", "8",
            "--max-train-examples", "48", "--max-eval-examples", "16", "--epochs", "1", "--data-dir", str(data_dir),
            "--out", str(out), "--no-progress", "--deterministic"]
    env = {k: v for k, v in os.environ.items() if k not in NATIVE and not k.startswith("SUPERPOS_PORTABLE")}
    env.update({k: v for k, v in kernels.items() if v}, HF_HUB_OFFLINE="1")
    return subprocess.Popen([sys.executable, "-m", "superpos.cli", "train", *args], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_prompts_bit_identical_whatever_kernels_the_machine_would_pick(data_dir, tmp_path):
    """Two processes whose environments would run different kernels (the CPU's best PyTorch
    capability vs its scalar default; MKL's own choice vs AUTO; 2 vs 1 threads): under the mode
    both run the pinned ones, with dropout on, and end with the same bits."""
    outs = [tmp_path / "native", tmp_path / "other"]
    procs = [train(data_dir, outs[0], NATIVE), train(data_dir, outs[1], OTHER)]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
    first, second = (load_file(out / "prompt.safetensors") for out in outs)
    assert set(first) == set(second) >= {"prompt", "E", "p_prime"}
    for key in first:
        assert torch.equal(first[key], second[key]), f"{key} differs"
    assert (outs[0] / "metrics.jsonl").read_text() == (outs[1] / "metrics.jsonl").read_text()
    for out in outs:
        env = json.loads((out / "environment.json").read_text())
        assert (env["cpu_portable"], env["cpu_capability"], env["cpu_threads"], env["onednn_max_cpu_isa"]) == (True, "AVX2", 1, "AVX2")
        assert env["mkl_cbwr"] in ("COMPATIBLE", None)
        assert json.loads((out / "result.json").read_text())["frozen_model_has_dropout"]


@pytest.mark.skipif("GenuineIntel" in Path("/proc/cpuinfo").read_text(errors="ignore") if Path("/proc/cpuinfo").exists() else True,
                    reason="PyTorch's own masks come from MKL's generator on Intel CPUs")
@pytest.mark.parametrize("p", [0.1, 0.5])
def test_portable_masks_are_pytorchs_own_on_non_intel_cpus(p):
    x = torch.randn(6, 40, 24).transpose(0, 1)  # not contiguous: masks follow memory order
    torch.manual_seed(3)
    native = F.dropout(x, p, training=True)
    after_native = torch.get_rng_state()
    torch.manual_seed(3)
    mask = portable_cpu.portable_bernoulli_(torch.empty_like(x), 1 - p)
    assert torch.equal(native, x * mask.div_(1 - p))
    assert torch.equal(torch.get_rng_state(), after_native)


def test_portable_masks_follow_the_generator():
    g = torch.Generator().manual_seed(0)
    a = portable_cpu.portable_bernoulli_(torch.empty(1000), 0.3, generator=g)
    b = portable_cpu.portable_bernoulli_(torch.empty(1000), 0.3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and set(a.unique().tolist()) == {0.0, 1.0} and 200 < a.sum() < 400


def test_switch_and_threads_are_checked():
    with pytest.raises(ConfigError, match=r"unknown portable CPU mode 'yes' \(environment variable SUPERPOS_PORTABLE_CPU\); allowed: 0, 1"):
        portable_cpu.requested(environ={"SUPERPOS_PORTABLE_CPU": "yes"})
    with pytest.raises(ConfigError, match=r"SUPERPOS_CPU_THREADS = '0'; allowed: a positive integer"):
        portable_cpu.settings({"SUPERPOS_CPU_THREADS": "0"})


def test_prepare_sets_the_settings_only_when_asked():
    on = {"ATEN_CPU_CAPABILITY": "default", "SUPERPOS_CPU_THREADS": "3"}
    assert portable_cpu.prepare(deterministic=True, environ=on)
    assert on["ATEN_CPU_CAPABILITY"] == "avx2" and on["MKL_CBWR"] == "COMPATIBLE" and on["OMP_NUM_THREADS"] == on["MKL_NUM_THREADS"] == "3"
    assert on["SUPERPOS_PORTABLE_CPU"] == "1"
    off = {"SUPERPOS_PORTABLE_CPU": "0"}
    assert not portable_cpu.prepare(deterministic=True, environ=off) and off == {"SUPERPOS_PORTABLE_CPU": "0"}
    assert not portable_cpu.prepare(deterministic=False, environ={})
    assert portable_cpu.prepare(deterministic=False, environ={"SUPERPOS_PORTABLE_CPU": "1"})
    # this process imported torch long ago: setting them now would be too late, and would leak into subprocesses
    assert not portable_cpu.prepare(deterministic=True)


@pytest.mark.parametrize("argv, expected", [
    (["train", "--task", "cb", "--deterministic"], True),
    (["train", "--task", "cb"], False),
    (["train", "--deterministic", "--device", "cuda"], False),
    (["train", "--deterministic", "--device=cpu"], True),
    (["sweep", "spec.yaml", "--deterministic"], False),
])
def test_cli_turns_the_mode_on_for_deterministic_cpu_training(argv, expected):
    assert deterministic_cpu_training(argv) is expected


def test_activate_refuses_a_process_that_loaded_torch_without_the_settings():
    with pytest.raises(ConfigError, match=r"portable CPU mode \(SUPERPOS_PORTABLE_CPU=1\): PyTorch runs \w+ kernels .*before importing torch"):
        portable_cpu.activate()
    assert not portable_cpu.state()["cpu_portable"]


def test_sweep_workers_get_the_settings_of_a_deterministic_cpu_spec(monkeypatch):
    from trainables.runner import worker_env
    from trainables.spec import load_spec

    monkeypatch.delenv("SUPERPOS_PORTABLE_CPU", raising=False)
    assert worker_env(load_spec(REPO / "sweeps" / "demo_minilm.yaml"))["ATEN_CPU_CAPABILITY"] == "avx2"
    assert worker_env(load_spec(REPO / "sweeps" / "smoke.yaml")) is None
    monkeypatch.setenv("SUPERPOS_PORTABLE_CPU", "0")
    assert worker_env(load_spec(REPO / "sweeps" / "demo_minilm.yaml")) is None
