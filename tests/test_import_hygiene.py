"""The training core runs where ray, mlflow, optuna and datasets are not installed (the GPU box)."""

import os
import subprocess
import sys
import textwrap

BLOCKED = ("ray", "mlflow", "optuna", "datasets")


def test_core_trains_with_sweep_and_data_hub_libraries_blocked(data_dir, tmp_path):
    script = textwrap.dedent(
        f"""
        import sys

        for name in {BLOCKED!r}:
            sys.modules[name] = None  # as if not installed: import fails, find_spec answers None
        from superpos.cli import main
        code = main(["train", "--model", "tiny-t5", "--task", "cb", "--method", "superpos", "--m", "8",
                     "--epochs", "1", "--batch-size", "8", "--max-train-examples", "8", "--max-eval-examples", "4",
                     "--data-dir", {str(data_dir)!r}, "--out", {str(tmp_path / "out")!r}, "--no-progress"])
        loaded = sorted(m for m, mod in sys.modules.items() if m.split(".")[0] in {BLOCKED!r} and mod is not None)
        print("LOADED", loaded)
        sys.exit(code)
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "LOADED []" in proc.stdout
    assert (tmp_path / "out" / "prompt.safetensors").exists()
