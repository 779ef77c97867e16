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
trains copies them to its local cache first: ``localize``), in the order of ``tasks`` (ATTEMPT,
SuperPos paper section 3.4: attention over frozen task-pretrained source prompts). A source
sweep that is absent, unfinished, or lacks a finished run of some (task, model) stops the
sweep with a ConfigError naming what is missing, before any work.

Every child run of a trial with source prompts is tagged (``source_tags``): ``superpos.sources``
(``sweep``, ``files`` or ``none``), and for a source sweep ``superpos.source_sweep`` and
``superpos.source_runs`` (``task=run id`` pairs, comma-separated); the file names in the
``source_prompts`` param name the runs too.

A chain: stages run in order, each with ``run_sweep``; a stage that did not end stops the
chain. ``--resume`` skips a stage whose parent run is FINISHED, resumes a stage that has
state, and starts the rest. Without ``--resume`` a stage that already has state refuses the
whole chain before any work.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from superpos.config import TrainConfig
from superpos.errors import ConfigError
from superpos.methods.attempt import NO_SOURCES

if TYPE_CHECKING:
    from trainables.runner import RunOptions
    from trainables.spec import SweepSpec

SOURCE_KEY = "source_prompts"
SOURCES_TAG, SOURCE_SWEEP_TAG, SOURCE_RUNS_TAG = "superpos.sources", "superpos.source_sweep", "superpos.source_runs"
SOURCES_DIR = "sources"
_FILE = re.compile(r"(?P<task>[a-z0-9_]+)-(?P<run>[0-9a-f]{32})\.safetensors")


@dataclass
class SourceSweep:
    """``source_prompts: {sweep: NAME, tasks: [...]}`` of one method in a spec."""

    sweep: str
    tasks: list[str]
    #: where the spec says it (file and key), for messages
    where: str = ""
    #: model -> [(task, run id, local path)], in the order of ``tasks``; set by ``resolve_sources``
    resolved: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)

    def value(self, model: str):
        """The trials' ``source_prompts`` for ``model``: local paths once resolved, else this reference."""
        if model in self.resolved:
            return [path for _, _, path in self.resolved[model]]
        return self

    def unresolved(self, model: str) -> ConfigError:
        return ConfigError(
            f"{self.where}: the source prompts of model {model} come from sweep {self.sweep!r} (tasks {', '.join(self.tasks)}); "
            "they are resolved from the MLflow store when `superpos sweep` starts this spec"
        )


def parse_source_sweeps(method_options: dict, source: str) -> dict[str, SourceSweep]:
    """Take every ``{sweep, tasks}`` value of ``source_prompts`` out of ``method_options``
    (mutated) and return them by method; other values stay (files or ``none``)."""
    from superpos.tasks import get_task

    out = {}
    for method, options in method_options.items():
        raw = options.get(SOURCE_KEY)
        if not isinstance(raw, dict):
            continue
        where = f"{source}: key 'method_options.{method}.{SOURCE_KEY}'"
        if set(raw) != {"sweep", "tasks"} or not isinstance(raw["sweep"], str) or not raw["sweep"]:
            raise ConfigError(f"{where} must be {{sweep: NAME, tasks: [task, ...]}}, a list of .safetensors files or {NO_SOURCES!r}; got {raw!r}")
        tasks = raw["tasks"]
        if not isinstance(tasks, list) or not tasks or len(set(tasks)) != len(tasks):
            raise ConfigError(f"{where}: tasks must be a non-empty list of distinct task names, got {tasks!r}")
        for task in tasks:
            get_task(task, where)
        out[method] = SourceSweep(raw["sweep"], list(tasks), where)
        del options[SOURCE_KEY]
    return out


def check_resolved(flat: dict, where: str) -> None:
    """Before a trial's config is built: its source sweep must have been resolved."""
    value = flat.get(SOURCE_KEY)
    if isinstance(value, SourceSweep):
        raise ConfigError(f"{where}: {value.unresolved(flat.get('model', TrainConfig.model))}")


def source_tags(flat: dict) -> dict:
    """MLflow tags of a trial with a ``source_prompts`` option (empty for other methods)."""
    value = flat.get(SOURCE_KEY)
    if value is None:
        return {}
    if value == NO_SOURCES:
        return {SOURCES_TAG: "none"}
    found = [(_FILE.fullmatch(Path(p).name), Path(p)) for p in value]
    if value and all(m and p.parents[2].name == SOURCES_DIR for m, p in found):
        return {
            SOURCES_TAG: "sweep",
            SOURCE_SWEEP_TAG: found[0][1].parents[1].name,
            SOURCE_RUNS_TAG: ",".join(f"{m['task']}={m['run']}" for m, _ in found),
        }
    return {SOURCES_TAG: "files"}


# -- resolution from the tracking store --------------------------------------------------
def _models(spec: "SweepSpec", method: str) -> list[str]:
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


def resolve_sources(spec: "SweepSpec", root: str, tracking_uri: str) -> None:
    """Fill each source sweep's ``resolved`` (the best finished run per task and model); no
    download yet. ConfigError naming the sweep and the missing (task, model) pairs."""
    if not spec.source_sweeps:
        return
    from trainables.tracking import PARENT, client_for

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


def fetch_sources(spec: "SweepSpec", tracking_uri: str) -> None:
    """Download each resolved run's ``prompt.safetensors`` to its path under the sweep's storage
    (a local directory or a gs:// / s3:// URI; a file already there is kept)."""
    import tempfile

    import pyarrow.fs

    from trainables.tracking import client_for

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


def localize(config: TrainConfig) -> TrainConfig:
    """On the node that trains: source prompt files under a cloud storage path (gs://, s3://)
    copied to ``<SUPERPOS_CACHE>/sources/<bucket path>``, the same local path on every node (so a
    retried trial resumes with the same config), and the config pointed at them."""
    paths = config.method_options.get(SOURCE_KEY)
    if not isinstance(paths, list) or not any("://" in p for p in paths):
        return config
    return dataclasses.replace(config, method_options={**config.method_options, SOURCE_KEY: [_local_copy(p) if "://" in p else p for p in paths]})


def _local_copy(uri: str) -> str:
    import os

    import pyarrow.fs

    from superpos.settings import cache_dir

    dst = cache_dir() / SOURCES_DIR / uri.split("://", 1)[1].lstrip("/")
    if not dst.is_file():
        fs, p = pyarrow.fs.FileSystem.from_uri(uri)
        dst.parent.mkdir(parents=True, exist_ok=True)
        part = dst.with_name(f"{dst.name}.{os.getpid()}.part")
        with fs.open_input_stream(p) as f:
            part.write_bytes(f.read())
        part.replace(dst)
    return str(dst)


def prepare_sources(spec: "SweepSpec", opts: "RunOptions") -> None:
    """At the start of ``run_sweep``: resolve the spec's source sweeps, validate every trial
    with the resolved paths, then fetch the files (nothing fetched when a trial is invalid)."""
    if not spec.source_sweeps:
        return
    from trainables.runner import absolute_tracking_uri, sweep_root

    uri = absolute_tracking_uri(opts.tracking_uri or spec.tracking_uri)
    resolve_sources(spec, sweep_root(spec, opts), uri)
    if spec.search == "grid":
        spec.groups(opts.data_dir)
    else:
        spec.studies(opts.data_dir)
    fetch_sources(spec, uri)


# -- chains ------------------------------------------------------------------------------
def _stage_finished(state: dict) -> bool:
    from trainables.tracking import client_for

    return client_for(state["tracking_uri"]).get_run(state["parent_run_id"]).info.status == "FINISHED"


def run_chain(specs: list["SweepSpec"], opts: "RunOptions") -> int:
    """Run sweep specs in order (see the module docstring); returns the failing stage's count
    of trials that did not end (0: every stage ended)."""
    from trainables.runner import read_state, run_sweep, sweep_root

    if len(specs) == 1:
        return run_sweep(specs[0], opts)
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
        errors = run_sweep(spec, dataclasses.replace(opts, resume=state is not None))
        if errors:
            print(f"chain stopped at sweep {spec.name}; continue it with --resume")
            return errors
    return 0
