"""The layers of docs/architecture.md hold: import-linter's contracts (pyproject.toml) are all kept."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = (ROOT / "pyproject.toml").read_text()


def test_every_import_contract_is_kept():
    """A cycle or an upward import anywhere in superpos, trainables or analysis (inside a
    function too) breaks a contract; the output names the import and its line."""
    lint = Path(sys.executable).parent / "lint-imports"
    proc = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-2000:]
    assert f"Contracts: {CONFIG.count('[[tool.importlinter.contracts]]')} kept, 0 broken." in proc.stdout


def test_no_contract_ignores_an_import():
    """No import is let through: a contract is kept by the code, not by an exception list."""
    assert "ignore_imports" not in CONFIG
    assert {"packages", "superpos-core", "superpos", "trainables"} <= set(re.findall(r'^id = "([\w-]+)"$', CONFIG, re.M))
