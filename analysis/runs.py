"""Query helper: an MLflow experiment of a sweep as tidy pandas DataFrames.

Reads the layout of docs/mlflow-layout.md (one parent run per sweep, one child run per trial,
tags ``task``/``method``/``model``/``dropout``/``softmax``/``m``/``seed``/``sweep``/``status``,
metrics logged at every evaluation with ``step`` = optimizer step). Works on any MLflow 3
tracking URI (``sqlite:///mlflow.db`` or a tracking server) and on sweeps still running.
Histories are read in bulk and ended runs' histories cached (analysis/history.py).

Example::

    from analysis.runs import load_experiment
    exp = load_experiment("sqlite:///mlflow.db", "table1")
    exp.runs      # one row per trial run: run_id, task, method, model, dropout, m, seed, status, ...
    exp.history   # one row per (run_id, step): score, epoch, invalid_rate, accuracy, f1, ...
    exp.problems  # runs that were left out, and why
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.environments import environment_key
from superpos.environment import from_tags
from analysis.history import load_histories
from superpos.errors import ConfigError

#: tags without which a trial cannot be placed in a table (docs/mlflow-layout.md, child run)
REQUIRED_TAGS = ("task", "method", "model", "dropout", "seed")
#: the tag of a benchmark's runs (trainables.tracking.BENCH; not imported: that module imports
#: Ray): sleeps, not training, so never results
BENCH_TAG = "superpos.bench"

#: columns of ``Experiment.runs``, in order
RUN_COLUMNS = (
    "run_id", "run_name", "trial_id", "sweep", "task", "method", "model", "dropout", "softmax", "m",
    "seed", "status", "run_status", "start_time", "environment", "sources",
)

_BOOL_TAGS = {"true": True, "false": False}


@dataclass
class Experiment:
    """The trial runs of one MLflow experiment."""

    tracking_uri: str
    name: str
    experiment_id: str
    runs: pd.DataFrame
    history: pd.DataFrame
    #: one line per run that was left out, naming the run and what it lacks
    problems: list[str] = field(default_factory=list)

    def select_models(self, models) -> "Experiment":
        """Only the runs of ``models`` (ConfigError naming the models there are if one is absent)."""
        have = set(self.runs["model"])
        missing = [m for m in models if m not in have]
        if missing:
            raise ConfigError(
                f"model(s) {', '.join(missing)} not in experiment {self.name!r}; models there: {', '.join(sorted(have)) or 'none'}"
            )
        runs = self.runs[self.runs["model"].isin(models)].reset_index(drop=True)
        history = self.history[self.history["run_id"].isin(runs["run_id"])].reset_index(drop=True)
        return Experiment(self.tracking_uri, self.name, self.experiment_id, runs, history, list(self.problems))


def client(tracking_uri: str):
    """An MlflowClient; refuses a sqlite URI whose file does not exist (MLflow would create an empty one)."""
    from mlflow import MlflowClient

    if tracking_uri.startswith("sqlite:///"):
        path = Path(tracking_uri[len("sqlite:///"):])
        if not path.is_file():
            raise ConfigError(f"no MLflow database at {path} (tracking URI {tracking_uri!r})")
    return MlflowClient(tracking_uri=tracking_uri)


def load_experiment(tracking_uri: str, experiment: str) -> Experiment:
    """All trial runs of ``experiment`` and their metric histories.

    Raises ConfigError when the experiment does not exist, holds no trial runs or is a
    benchmark's (tag ``superpos.bench``: its runs sleep instead of training); runs that lack a
    required tag are left out and listed in ``problems``, a benchmark's runs silently.
    """
    mlflow_client = client(tracking_uri)
    exp = mlflow_client.get_experiment_by_name(experiment)
    if exp is None:
        names = sorted(e.name for e in mlflow_client.search_experiments())
        raise ConfigError(f"unknown experiment {experiment!r} at {tracking_uri}; experiments there: {', '.join(names) or 'none'}")
    if BENCH_TAG in exp.tags:
        raise ConfigError(f"experiment {experiment!r} holds benchmark runs (tag {BENCH_TAG} = {exp.tags[BENCH_TAG]}), not results; refusing to report them")
    runs_of = [r for r in _all_runs(mlflow_client, exp.experiment_id) if r.data.tags.get("superpos.role") != "sweep"]
    # a benchmark's runs logged into a real experiment are left out, never averaged into results
    trials = [r for r in runs_of if BENCH_TAG not in r.data.tags]
    if len(trials) < len(runs_of) and not trials:
        raise ConfigError(f"experiment {experiment!r} holds only benchmark runs (tag {BENCH_TAG}), not results; refusing to report them")
    if not trials:
        raise ConfigError(f"experiment {experiment!r} has no trial runs (child runs with tag superpos.role = trial)")
    rows, problems = [], []
    for run in trials:
        row, problem = _run_row(run)
        if problem:
            problems.append(problem)
        else:
            rows.append(row)
    runs = pd.DataFrame(rows, columns=list(RUN_COLUMNS))
    if runs.empty:
        raise ConfigError(f"no run of experiment {experiment!r} has the tags {', '.join(REQUIRED_TAGS)}:\n" + "\n".join(problems))
    runs["m"] = runs["m"].astype("Int64")
    runs = runs.sort_values(["model", "task", "method", "dropout", "m", "seed", "start_time"], na_position="first", ignore_index=True)
    kept = set(runs["run_id"])
    history = metric_histories(load_histories(mlflow_client, tracking_uri, exp.experiment_id, [r for r in trials if r.info.run_id in kept]))
    return Experiment(tracking_uri, experiment, exp.experiment_id, runs, history, problems)


def _all_runs(mlflow_client, experiment_id: str) -> list:
    runs, token = [], None
    while True:
        page = mlflow_client.search_runs([experiment_id], max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _run_row(run) -> tuple[dict, str | None]:
    """The run's tags as typed values, or a message naming the tags it lacks or garbles."""
    tags, run_id = run.data.tags, run.info.run_id
    name = f"run {run_id}" + (f" ({run.info.run_name})" if run.info.run_name else "")
    missing = [t for t in REQUIRED_TAGS if not tags.get(t)]
    if missing:
        return {}, f"{name} lacks tag(s) {', '.join(missing)}; left out"
    evaluation = run.data.params.get("evaluation", "generate")  # runs logged before the key existed generated
    if evaluation != "generate":
        return {}, f"{name} was evaluated by {evaluation!r} (param evaluation), not the paper's greedy generation; left out of the paper's tables"
    bools = {}
    for key, default in (("dropout", None), ("softmax", "false")):
        value = tags.get(key, default).lower()
        if value not in _BOOL_TAGS:
            return {}, f"{name} has tag {key} = {value!r}; expected 'true' or 'false'; left out"
        bools[key] = _BOOL_TAGS[value]
    m = tags.get("m", "")
    if m and not m.isdigit():
        return {}, f"{name} has tag m = {m!r}; expected an integer or ''; left out"
    row = {
        "run_id": run_id, "run_name": run.info.run_name, "trial_id": tags.get("superpos.trial_id", ""),
        "sweep": tags.get("sweep", ""), "task": tags["task"], "method": tags["method"], "model": tags["model"],
        "dropout": bools["dropout"], "softmax": bools["softmax"], "m": int(m) if m else None, "seed": tags["seed"],
        "status": tags.get("status", ""), "run_status": run.info.status, "start_time": run.info.start_time,
        "environment": environment_key(from_tags(tags)),
        "sources": _sources(tags, run.data.params),
    }
    return row, None


def _sources(tags: dict, params: dict) -> str:
    """Where a trial's source prompts came from (tag superpos.sources: sweep, files, none); runs
    logged before the tag existed: "none" when the param lists no file, "" without the param."""
    if tags.get("superpos.sources"):
        return tags["superpos.sources"]
    value = params.get("source_prompts")
    return "" if value is None else ("none" if value in ("[]", "none") else "files")


def metric_histories(long: pd.DataFrame) -> pd.DataFrame:
    """One row per (run_id, step), one column per metric, from the long records of
    ``analysis.history.load_histories``; where a resumed trial logged a step twice, the later value wins."""
    long = long.sort_values("timestamp", kind="stable").drop_duplicates(["run_id", "key", "step"], keep="last")
    wide = long.pivot(index=["run_id", "step"], columns="key", values="value").reset_index()
    wide.columns.name = None
    for column in ("score", "epoch", "invalid_rate"):
        if column not in wide:
            wide[column] = np.nan
    return wide.sort_values(["run_id", "step"], ignore_index=True)


def load_prompt(tracking_uri: str, run_id: str, artifact: str = "prompt.safetensors") -> dict[str, np.ndarray]:
    """The tensors of a run's prompt artifact (SuperPos: ``p_prime`` (n, m), ``token_ids`` (m), ...)."""
    import tempfile

    from safetensors import safe_open

    with tempfile.TemporaryDirectory() as tmp:
        path = client(tracking_uri).download_artifacts(run_id, artifact, tmp)
        with safe_open(path, framework="np") as f:
            return {key: f.get_tensor(key) for key in f.keys()}
