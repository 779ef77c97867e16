"""What a run ran on: package versions, hardware, the superpos checkout and the lock file.

A run is determined by its config, its seed and this environment (floating-point results
move with the versions of torch and transformers and with the CPU's or GPU's kernels), so
every run directory holds ``environment.json`` (``collect()``), each MLflow child run carries
it as ``env.<key>`` tags, ``superpos report`` lists the environments behind each table and
``superpos env`` prints the current one.

Package versions come from ``importlib.metadata`` (installed distributions, no imports: ray or
mlflow are never loaded here; a package that is not installed is ``None``). Keys (flat, so that
they map one to one onto tags): ``python``, one per ``PACKAGES`` entry, ``cuda`` / ``cudnn``
(torch's build and the loaded cuDNN; ``None`` on a CPU build), ``device`` (the GPU's name, or
``cpu``), ``cpu`` (the CPU model, /proc/cpuinfo or ``platform``), ``platform``, ``superpos``
(package version), ``git_commit`` / ``git_dirty`` (of the checkout superpos is imported from;
``None`` without git or outside a checkout), ``lock_sha256`` (of ``requirements.lock`` beside the
package; ``None`` where there is none), and the CPU kernels' settings (``superpos.portable_cpu``):
``cpu_portable`` (the portable CPU mode was on), ``cpu_capability`` (PyTorch's kernels: AVX2,
AVX512, DEFAULT, ...), ``cpu_threads`` (intra-op threads), ``mkl_cbwr`` (MKL's reproducibility
branch: OFF, AUTO, COMPATIBLE; ``None`` where not visible) and ``onednn_max_cpu_isa``.

``python -m superpos.environment lock REPORT`` turns a ``pip install --dry-run --report`` into
the lock file (``make lock``); it uses only the standard library, so any python3 can run it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from superpos import portable_cpu

#: distributions whose versions every run records
PACKAGES = ("torch", "transformers", "tokenizers", "peft", "ray", "mlflow", "numpy", "datasets")
LOCK_FILE = "requirements.lock"
#: prefix of the MLflow tags that hold a run's environment (docs/mlflow-layout.md)
TAG_PREFIX = "env."

_REPO_ROOT = Path(__file__).resolve().parent.parent


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def git_state(root: Path = _REPO_ROOT) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout at ``root``; (None, None) without git or outside a checkout."""
    def git(*args):
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30, check=True).stdout.strip()

    try:
        return git("rev-parse", "HEAD"), bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None, None


def lock_hash(path: Path = _REPO_ROOT / LOCK_FILE) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def accelerator() -> dict:
    """torch's CUDA build, the loaded cuDNN and the device name ("cpu" without a GPU)."""
    import torch

    cuda = torch.cuda.is_available()
    return {
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda and torch.backends.cudnn.is_available() else None,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
    }


@functools.cache
def collect() -> dict:
    """The environment of this process (see the module docstring); computed once."""
    from superpos import __version__

    commit, dirty = git_state()
    return {
        "python": platform.python_version(),
        **{name: package_version(name) for name in PACKAGES},
        **accelerator(),
        "cpu": cpu_model(),
        **portable_cpu.state(),
        "platform": platform.platform(),
        "superpos": __version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "lock_sha256": lock_hash(),
    }


def write(path: Path) -> None:
    path.write_text(json.dumps(collect(), indent=2) + "\n")


def as_tags(env: dict) -> dict[str, str]:
    """``env.<key>`` tags: strings as they are, every other value JSON-encoded (``null``, ``true``)."""
    return {TAG_PREFIX + k: v if isinstance(v, str) else json.dumps(v) for k, v in env.items()}


_JSON_SCALAR = re.compile(r"null|true|false|-?[1-9][0-9]*|0")


def from_tags(tags: dict[str, str]) -> dict:
    """The environment held in a run's ``env.*`` tags (the inverse of ``as_tags``); {} if none.
    Every non-string value of ``collect`` is null, a boolean or an integer (``cpu_threads``,
    ``cudnn``), and no string value reads as one, so those three are decoded and the rest kept."""
    return {tag[len(TAG_PREFIX):]: json.loads(value) if _JSON_SCALAR.fullmatch(value) else value
            for tag, value in tags.items() if tag.startswith(TAG_PREFIX)}



def format_env(env: dict) -> str:
    return "\n".join(f"{k:12} {'-' if v is None else v}" for k, v in env.items())


# -- the lock -----------------------------------------------------------------------------
def read_lock(path: Path = _REPO_ROOT / LOCK_FILE) -> dict[str, str]:
    """name -> version of every ``name==version`` line (names normalised as pip does)."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[normalise(name)] = version
    return pins


def normalise(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def lock_from_report(report: dict, project: str = "superpos") -> str:
    """The lock file's text from a pip installation report: every resolved distribution but the project itself."""
    pins = sorted((normalise(i["metadata"]["name"]), i["metadata"]["version"]) for i in report["install"])
    lines = [f"{name}=={version}" for name, version in pins if name != project]
    markers = report.get("environment", {})
    header = (
        "# The tested environment: every package version `make install` (demo, test, CI) installs.\n"
        "# Written by `make lock` from pyproject.toml (torch 2.13.0 CPU build, the dev extra) for\n"
        f"# Python {markers.get('python_full_version', '?')} on {markers.get('platform_machine', '?')} {markers.get('sys_platform', '?')}; do not edit by hand.\n"
    )
    return header + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] != "lock":
        print("usage: python -m superpos.environment lock PIP_REPORT.json", file=sys.stderr)
        return 2
    sys.stdout.write(lock_from_report(json.loads(Path(argv[1]).read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
