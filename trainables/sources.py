"""Source prompts from another sweep, the part that needs no tracking store: the spec's
``source_prompts: {sweep, tasks}`` reference (``SourceSweep``), the MLflow tags of a trial with
source prompts, and, on the node that trains, the local copy of source files under a cloud
storage path (``localize``). Resolving a reference from MLflow and fetching its files happen in
``trainables/chain.py``, before a sweep starts.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

from superpos.config import TrainConfig
from superpos.errors import ConfigError
from superpos.methods.attempt import NO_SOURCES

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
