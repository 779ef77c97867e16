"""What the SLURM job script (deploy/slurm/superpos.sbatch) asks before it starts the sweep.

``python -m trainables.slurm check-gpus SPEC... [superpos sweep options]``: exit 2 with a
message naming ``--gpus-per-node`` when a spec asks for GPUs (``resources.gpu``) and the job
has none (``SLURM_GPUS_ON_NODE`` unset or 0). Elsewhere such a sweep only warns (the autoscaler
may add GPU nodes); a SLURM job's nodes are fixed, so its trials would wait for ever.

``python -m trainables.slurm resume-flag SPEC... [superpos sweep options]``: prints ``--resume``
when a requeued job's sweep has state to continue (a spec's ``superpos_sweep.json`` under the
storage path) and the options lack it; nothing otherwise. Slurm requeues a job on preemption or
node failure too, possibly before its first run wrote that state, and ``--resume`` of a sweep
without state stops ("nothing to resume"): that run starts the sweep instead.
"""

from __future__ import annotations

import argparse
import os
import sys

from superpos.errors import ConfigError


def _sweep_options(args: list[str]) -> argparse.Namespace:
    """``args`` as ``superpos sweep`` reads them (its own parser: the same spec list, options and
    abbreviations); a bad option stops here as it would there."""
    from trainables.cli import register

    parser = argparse.ArgumentParser(prog="superpos")
    register(parser.add_subparsers())
    return parser.parse_args(["sweep", *args])


def resume_flag(args: list[str]) -> list[str]:
    from trainables.spec import load_spec
    from trainables.sweep_state import RunOptions, read_state, sweep_root

    ns = _sweep_options(args)
    if ns.resume:
        return []
    opts = RunOptions(storage_path=ns.storage_path)
    started = any(read_state(sweep_root(load_spec(path), opts)) is not None for path in ns.spec)
    return ["--resume"] if started else []


def check_gpus(args: list[str]) -> None:
    from trainables.spec import load_spec

    gpus = os.environ.get("SLURM_GPUS_ON_NODE", "0") or "0"
    for path in _sweep_options(args).spec:
        spec = load_spec(path)
        if spec.resources.gpu > 0 and int(gpus) == 0:
            raise ConfigError(
                f"{path}: key 'resources.gpu' asks for {spec.resources.gpu} GPU per trial, but SLURM job {os.environ.get('SLURM_JOB_ID', '?')} "
                "has no GPUs: submit it with --gpus-per-node=N (e.g. `sbatch --gpus-per-node=1 deploy/slurm/superpos.sbatch ...`), "
                "or set resources.gpu: 0"
            )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("check-gpus", "resume-flag"):
        print("usage: python -m trainables.slurm {check-gpus,resume-flag} SPEC... [superpos sweep options]", file=sys.stderr)
        return 2
    try:
        if argv[0] == "check-gpus":
            check_gpus(argv[1:])
        elif flag := resume_flag(argv[1:]):
            print(*flag)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
