"""Sweeps that feed sweeps: a spec takes artifacts of another sweep's runs, and
``superpos sweep A.yaml B.yaml`` runs such a chain in order.

A spec names a source sweep instead of files for a method's ``source_prompts``::

    method_options:
      attempt:
        source_prompts: {sweep: attempt_sources, tasks: [mnli, sst2, qnli, qqp]}

When the sweep starts, before any trial is validated or run, the reference is resolved from
the MLflow tracking store (docs/mlflow-layout.md): the newest FINISHED parent run tagged
``superpos.sweep = <sweep>``; under it, for each source task and each model the spec's trials
of that method use, the child run with status ``finished`` and the highest ``best_score``
(ties: the smaller run id). Its ``prompt.safetensors`` is downloaded to
``<storage>/<this sweep>/sources/<source sweep>/<model>/<task>-<run id>.safetensors`` and
those paths are the trials' ``source_prompts`` (under a gs:// or s3:// storage, the node that
trains copies them to its local cache first: ``sources.localize``), in the order of ``tasks`` (ATTEMPT,
SuperPos paper section 3.4: attention over frozen task-pretrained source prompts). A source
sweep that is absent, unfinished, or lacks a finished run of some (task, model) stops the
sweep with a ConfigError naming what is missing, before any work.

Every child run of a trial with source prompts is tagged (``sources.source_tags``): ``superpos.sources``
(``sweep``, ``files`` or ``none``), and for a source sweep ``superpos.source_sweep`` and
``superpos.source_runs`` (``task=run id`` pairs, comma-separated); the file names in the
``source_prompts`` param name the runs too.

A chain: stages run in order, each with its sources prepared here, then ``runner.run_sweep``; a stage that did not end stops the
chain. ``--resume`` skips a stage whose parent run is FINISHED, resumes a stage that has
state, and starts the rest. Without ``--resume`` a stage that already has state refuses the
whole chain before any work.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from superpos.config import TrainConfig
from superpos.errors import ConfigError

from trainables.preflight import check_ray_address, check_tracking_uri, short_mlflow_retries
from trainables.runner import run_sweep
from trainables.sources import SOURCES_DIR
from trainables.spec import SweepSpec
from trainables.sweep_state import RunOptions, absolute_tracking_uri, read_state, sweep_root
from trainables.tracking import PARENT, client_for


# -- resolution from the tracking store --------------------------------------------------
def _models(spec: SweepSpec, method: str) -> list[str]:
    models = set()
    for point in spec.points():
        flat = spec.merged(point)
        if flat.get("method", TrainConfig.method) == method:
            models.add(flat.get("model", TrainConfig.model))
    return sorted(models)


def _slug(model: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", model)


def _parent(client, sweep: str, where: str, uri: str):
    experiments = [e.experiment_id for e in client.search_experiments()]
    parents = client.search_runs(
        experiments, filter_string=f"tags.`superpos.role` = 'sweep' and tags.`superpos.sweep` = '{sweep}'",
        order_by=["attributes.start_time DESC"], max_results=1000,
    ) if experiments else []
    if not parents:
        raise ConfigError(
            f"{where}: source sweep {sweep!r} not found in the MLflow store {uri}: run it first, "
            f"e.g. `superpos sweep sweeps/{sweep}.yaml <this spec>` (a chain runs them in order)"
        )
    finished = [p for p in parents if p.info.status == "FINISHED"]
    if not finished:
        raise ConfigError(
            f"{where}: source sweep {sweep!r} has not finished (parent run {parents[0].info.run_id} is {parents[0].info.status}); "
            "finish it first (`superpos sweep SPEC --resume`)"
        )
    return finished[0]


def resolve_sources(spec: SweepSpec, root: str, tracking_uri: str) -> None:
    """Fill each source sweep's ``resolved`` (the best finished run per task and model); no
    download yet. ConfigError naming the sweep and the missing (task, model) pairs."""
    if not spec.source_sweeps:
        return
    client = client_for(tracking_uri)
    for method, ref in spec.source_sweeps.items():
        parent = _parent(client, ref.sweep, ref.where, tracking_uri)
        children = client.search_runs(
            [parent.info.experiment_id], filter_string=f"tags.`{PARENT}` = '{parent.info.run_id}' and tags.status = 'finished'", max_results=50000,
        )
        best: dict[tuple[str, str], tuple[float, str]] = {}
        for run in children:
            key = (run.data.tags.get("task", ""), run.data.tags.get("model", ""))
            score = run.data.metrics.get("best_score", float("-inf"))
            candidate = (-score, run.info.run_id)
            if key not in best or candidate < best[key]:
                best[key] = candidate
        models = _models(spec, method)
        missing = [f"{t} x {m}" for m in models for t in ref.tasks if (t, m) not in best]
        if missing:
            raise ConfigError(
                f"{ref.where}: source sweep {ref.sweep!r} (parent run {parent.info.run_id}) has no finished run of "
                f"{', '.join(missing)} (task x model); allowed source tasks there: {', '.join(sorted({t for t, _ in best})) or 'none'}"
            )
        base = f"{root.rstrip('/')}/{SOURCES_DIR}/{ref.sweep}"
        ref.resolved = {m: [(t, best[t, m][1], f"{base}/{_slug(m)}/{t}-{best[t, m][1]}.safetensors") for t in ref.tasks] for m in models}


def fetch_sources(spec: SweepSpec, tracking_uri: str) -> None:
    """Download each resolved run's ``prompt.safetensors`` to its path under the sweep's storage
    (a local directory or a gs:// / s3:// URI; a file already there is kept)."""
    import tempfile

    import pyarrow.fs

    client = client_for(tracking_uri)
    for ref in spec.source_sweeps.values():
        for entries in ref.resolved.values():
            for _, run_id, path in entries:
                fs, p = pyarrow.fs.FileSystem.from_uri(path if "://" in path else str(Path(path).resolve()))
                if fs.get_file_info(p).type == pyarrow.fs.FileType.File:
                    continue
                with tempfile.TemporaryDirectory(prefix="superpos-source-") as tmp:
                    try:
                        got = client.download_artifacts(run_id, "prompt.safetensors", tmp)
                    except Exception as e:  # noqa: BLE001 - MLflow raises several kinds for a missing artifact
                        raise ConfigError(f"{ref.where}: run {run_id} of source sweep {ref.sweep!r} has no prompt.safetensors ({e})") from None
                    fs.create_dir(p.rsplit("/", 1)[0], recursive=True)
                    with fs.open_output_stream(f"{p}.part") as f:
                        f.write(Path(got).read_bytes())
                    fs.move(f"{p}.part", p)


def prepare_sources(spec: SweepSpec, opts: RunOptions) -> None:
    """Before ``run_sweep``: resolve the spec's source sweeps, validate every trial with the
    resolved paths, then fetch the files (nothing fetched when a trial is invalid)."""
    if not spec.source_sweeps:
        return
    uri = absolute_tracking_uri(opts.tracking_uri or spec.tracking_uri)
    resolve_sources(spec, sweep_root(spec, opts), uri)
    if spec.search == "grid":
        spec.groups(opts.data_dir)
    else:
        spec.studies(opts.data_dir)
    fetch_sources(spec, uri)


# -- chains ------------------------------------------------------------------------------
def _stage_finished(state: dict) -> bool:
    return client_for(state["tracking_uri"]).get_run(state["parent_run_id"]).info.status == "FINISHED"


def run_chain(specs: list[SweepSpec], opts: RunOptions) -> int:
    """Run sweep specs in order (see the module docstring); returns the failing stage's count
    of trials that did not end (0: every stage ended). First, before anything is written: every
    stage's tracking server and the Ray address answer (preflight.py)."""
    for spec in specs:
        where = "--tracking-uri" if opts.tracking_uri else f"{spec.source}: key 'tracking_uri'"
        check_tracking_uri(absolute_tracking_uri(opts.tracking_uri or spec.tracking_uri), where)
    check_ray_address(opts.address)
    short_mlflow_retries()
    if len(specs) == 1:
        return _stage(specs[0], opts)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"a chain runs each sweep once; sweep names repeat: {', '.join(names)}")
    for i, spec in enumerate(specs):
        for ref in spec.source_sweeps.values():
            if ref.sweep in names[i + 1 :]:
                raise ConfigError(f"{ref.where}: source sweep {ref.sweep!r} comes after {spec.name!r} in the chain; put it first")
    states = [read_state(sweep_root(s, opts)) for s in specs]
    if not opts.resume:
        taken = [f"{s.name} ({sweep_root(s, opts)})" for s, st in zip(specs, states) if st is not None]
        if taken:
            raise ConfigError(f"sweep(s) {', '.join(taken)} already have state: pass --resume to continue the chain, or another --storage-path")
    for spec, state in zip(specs, states):
        if state is not None and _stage_finished(state):
            print(f"chain: sweep {spec.name} has finished; skipped")
            continue
        errors = _stage(spec, dataclasses.replace(opts, resume=state is not None))
        if errors:
            print(f"chain stopped at sweep {spec.name}; continue it with --resume")
            return errors
    return 0


def _stage(spec: SweepSpec, opts: RunOptions) -> int:
    prepare_sources(spec, opts)
    return run_sweep(spec, opts)
