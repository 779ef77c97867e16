"""Checks the SLURM job script (deploy/slurm/superpos.sbatch) runs before it starts Ray.

``python -m trainables.slurm check-gpus SPEC... [superpos sweep options]``: exit 2 with a
message naming ``--gpus-per-node`` when a spec asks for GPUs (``resources.gpu``) and the job
has none (``SLURM_GPUS_ON_NODE`` unset or 0). Elsewhere such a sweep only warns (the autoscaler
may add GPU nodes); a SLURM job's nodes are fixed, so its trials would wait for ever.
"""

from __future__ import annotations

import os
import sys

from superpos.errors import ConfigError


def check_gpus(args: list[str]) -> None:
    from trainables.spec import load_spec

    specs = [a for a in args[: next((i for i, a in enumerate(args) if a.startswith("-")), len(args))]]
    gpus = os.environ.get("SLURM_GPUS_ON_NODE", "0") or "0"
    for path in specs:
        spec = load_spec(path)
        if spec.resources.gpu > 0 and int(gpus) == 0:
            raise ConfigError(
                f"{path}: key 'resources.gpu' asks for {spec.resources.gpu} GPU per trial, but SLURM job {os.environ.get('SLURM_JOB_ID', '?')} "
                "has no GPUs: submit it with --gpus-per-node=N (e.g. `sbatch --gpus-per-node=1 deploy/slurm/superpos.sbatch ...`), "
                "or set resources.gpu: 0"
            )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "check-gpus":
        print("usage: python -m trainables.slurm check-gpus SPEC... [superpos sweep options]", file=sys.stderr)
        return 2
    try:
        check_gpus(argv[1:])
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
