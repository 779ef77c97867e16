"""MLflow logging from the Ray driver only (docs/mlflow-layout.md): one writer, so a sqlite
store is never written by many processes at once.

``SweepLogger`` is a ``tune.Callback``: it creates one child run per member trial (also for
members fused in one Ray trial), logs every evaluation record with ``step = optimizer step``,
and closes the child when its Ray trial ends, with the artifacts taken from the trial's last
persisted checkpoint (which works the same for local and cloud storage). A trial the scheduler
(ASHA) stopped has no result.json of its own: the logger writes one (status ``stopped``, its
best score so far) beside the prompt of its last evaluation that the checkpoint holds.

Idempotent, so ``--resume``, trial retries and a re-run of an ended trial neither duplicate nor
lose anything: a child run is looked up by its ``superpos.trial_id`` tag under the parent
before one is created; a step is logged only if MLflow does not hold it yet; on close
the history is completed from the checkpoint's metrics.jsonl (records reported while the
driver was down).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path

from ray import tune

from superpos.environment import as_tags
from superpos.run_dir import BEST_PROMPT_FILE, CONFIG_FILE, ENVIRONMENT_FILE, METRICS_FILE, PROMPT_FILE, RESULT_FILE

from trainables.sources import source_tags
from trainables.spec import Member
from trainables.spec.trial_config import MEMBERS_KEY, members_of

ROLE, TRIAL_ID, SWEEP, SPEC, GROUP = "superpos.role", "superpos.trial_id", "superpos.sweep", "superpos.spec", "superpos.group"
PARENT = "mlflow.parentRunId"
#: where a trial ran: the Ray node address of its latest report, and every one in order
NODE, NODES = "superpos.node", "superpos.nodes"
#: the key whose history tells which steps are already logged (every record has it)
STEP_KEY = "score"
#: evaluation-record keys that are no metric (``step`` is the step itself)
NOT_METRICS = {"step", "status"}


#: a benchmark's runs (trainables/bench_sweep.py) carry this tag, so they are never read as
#: results (analysis/runs.py refuses them)
BENCH = "superpos.bench"
#: parent-run tags that its child runs carry too
INHERITED_TAGS = (BENCH,)


#: MLflow's experiment-kind tag and the value that opens its UI on the training-runs table
EXPERIMENT_KIND_TAG, CUSTOM_MODEL_DEVELOPMENT = "mlflow.experimentKind", "custom_model_development"


def client_for(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def experiment_id(client, name: str, tracking_uri: str) -> str:
    """Get or create the experiment; with a sqlite store artifacts go beside the database."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if tracking_uri.startswith("sqlite:///"):
        location = (Path(tracking_uri[len("sqlite:///"):]).resolve().parent / "mlartifacts").as_uri()
    # MLflow 3's UI opens an untagged experiment on its GenAI overview; this kind opens the runs table
    return client.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: CUSTOM_MODEL_DEVELOPMENT})


def start_parent(tracking_uri: str, experiment: str, sweep: str, spec_file: str, tags: dict | None = None) -> str:
    """The sweep's parent run (created once; --resume reuses its id from the sweep state)."""
    client = client_for(tracking_uri)
    exp = experiment_id(client, experiment, tracking_uri)
    run = client.create_run(exp, run_name=sweep, tags={ROLE: "sweep", SWEEP: sweep, SPEC: spec_file, **(tags or {})})
    return run.info.run_id


def trial_tags(member: Member, sweep: str) -> dict:
    flat = member.config.flat()
    return {
        ROLE: "trial",
        TRIAL_ID: member.id,
        "task": flat["task"],
        "method": flat["method"],
        "model": flat["model"],
        "dropout": str(bool(flat["dropout"])).lower(),
        "softmax": str(bool(flat.get("softmax", False))).lower(),
        "m": str(flat["m"]) if "m" in flat else "",
        "seed": str(flat["seed"]),
        "sweep": sweep,
        **source_tags(flat),
    }


def search_all(client, experiment_id: str, filter_string: str) -> list:
    """Every run of the experiment that the filter matches, page by page (a search answers at most 1,000 a page)."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, max_results=1000, page_token=token)
        runs += page
        token = page.token
        if not token:
            return runs


def params_of(member: Member) -> list:
    from mlflow.entities import Param

    return [Param(k, v if isinstance(v, str) else json.dumps(v)) for k, v in sorted(member.config.flat().items())]


def metrics_of(record: dict, timestamp: int):
    from mlflow.entities import Metric

    step = int(record["step"])
    return [
        Metric(k, float(v), timestamp, step)
        for k, v in record.items()
        if k not in NOT_METRICS and isinstance(v, (int, float)) and not isinstance(v, bool)
    ]


class SweepLogger(tune.Callback):
    """Driver-side MLflow writer for one sweep (pickled into the Tune state: keep it small)."""

    def __init__(self, tracking_uri: str, parent_run_id: str, sweep: str):
        self.tracking_uri, self.parent_run_id, self.sweep = tracking_uri, parent_run_id, sweep
        self._reset()

    def _reset(self) -> None:
        self._client = None
        self._parent = None  # (experiment id, tags) of the parent run
        self._found: dict[str, object] | None = None  # member id -> its child run as MLflow held it when first needed
        self._runs: dict[str, str] = {}  # member id -> child run id
        self._logged: dict[str, set[int]] = {}  # member id -> the steps MLflow holds
        self._status: dict[str, str] = {}  # child run id -> its status tag as this logger knows it
        self._trial_members: dict[str, list[Member]] = {}  # Ray trial id -> its members
        self._nodes: dict[str, list[str]] = {}  # child run id -> the nodes it reported from
        self._params: dict[str, list] = {}  # child run id -> its params, not logged yet

    def __getstate__(self):
        return {"tracking_uri": self.tracking_uri, "parent_run_id": self.parent_run_id, "sweep": self.sweep}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._reset()

    @property
    def client(self):
        if self._client is None:
            self._client = client_for(self.tracking_uri)
        return self._client

    # -- child runs ----------------------------------------------------------------------
    def _parent_run(self) -> tuple[str, dict]:
        if self._parent is None:
            parent = self.client.get_run(self.parent_run_id)
            self._parent = (parent.info.experiment_id, parent.data.tags)
        return self._parent

    def _found_runs(self) -> dict:
        """The child runs MLflow holds, read once (paged): a new trial's run is then created
        without a search of its own, and a resumed one found without one."""
        if self._found is None:
            exp, _ = self._parent_run()
            self._found = {r.data.tags.get(TRIAL_ID): r for r in search_all(self.client, exp, f"tags.`{PARENT}` = '{self.parent_run_id}'")}
        return self._found

    def child(self, member: Member, group: str) -> str:
        """Find the member's child run under the parent, or create it (tags, params)."""
        if member.id in self._runs:
            return self._runs[member.id]
        found = self._found_runs().get(member.id)
        if found is not None:
            run_id = found.info.run_id
            self._logged[member.id] = {m.step for m in self.client.get_metric_history(run_id, STEP_KEY)}
            self._status[run_id] = found.data.tags.get("status", "")
            self._nodes[run_id] = [n for n in found.data.tags.get(NODES, "").split(",") if n]
            if not found.data.params:  # created by a driver that died before its next request
                self._params[run_id] = params_of(member)
        else:
            exp, parent_tags = self._parent_run()
            inherited = {k: v for k, v in parent_tags.items() if k in INHERITED_TAGS}
            tags = {**trial_tags(member, self.sweep), **inherited, PARENT: self.parent_run_id, GROUP: group, "status": "running"}
            run_id = self.client.create_run(exp, run_name=member.label(), tags=tags).info.run_id
            # sent with the run's next request (its first evaluation, or its end)
            self._params[run_id] = params_of(member)
            self._logged[member.id], self._status[run_id], self._nodes[run_id] = set(), "running", []
        self._runs[member.id] = run_id
        return run_id

    def log_record(self, member_id: str, record: dict, tags: list | None = None) -> None:
        """Log one evaluation unless its step is already in MLflow (retries, resume), with
        ``tags`` in the same request. Any step MLflow lacks is logged, also one below the last
        logged: a resumed trial may report a later step first, and its checkpoint's history at
        close fills in the earlier one."""
        step = int(record["step"])
        metrics = [] if step in self._logged[member_id] else metrics_of(record, int(time.time() * 1000))
        if metrics or tags:
            self.batch(self._runs[member_id], metrics=metrics, tags=tags or [])
        self._logged[member_id].add(step)

    def batch(self, run_id: str, metrics=(), tags=()) -> None:
        """One ``log_batch``, with the run's params if they are not logged yet."""
        params = self._params.get(run_id, [])
        self.client.log_batch(run_id, metrics=list(metrics), params=params, tags=list(tags))
        self._params.pop(run_id, None)

    def node_tags(self, run_id: str, node: str | None) -> list:
        """Tags ``superpos.node`` (where the trial reported last) and ``superpos.nodes`` (every
        node it reported from, in order: a trial moved by a node failure shows both), when the
        node is new to the run."""
        nodes = self._nodes[run_id]
        if not node or nodes[-1:] == [node]:
            return []
        from mlflow.entities import RunTag

        nodes.append(node)
        return [RunTag(NODE, node), RunTag(NODES, ",".join(nodes))]

    def _members(self, trial) -> list[Member]:
        if trial.trial_id not in self._trial_members:
            self._trial_members[trial.trial_id] = members_of(trial.config, trial.trial_id)
        return self._trial_members[trial.trial_id]

    # -- Tune hooks ----------------------------------------------------------------------
    def on_trial_start(self, iteration, trials, trial, **info):
        for m in self._members(trial):
            run_id = self.child(m, trial.trial_id)
            if self._status[run_id] in ("failed", "stopped"):  # re-run by --resume
                self.client.set_tag(run_id, "status", "running")
                self.client.update_run(run_id, status="RUNNING")
                self._status[run_id] = "running"

    def on_trial_result(self, iteration, trials, trial, result, **info):
        from mlflow.entities import RunTag

        members = {m.id: m for m in self._members(trial)}
        for mid, entry in result.get(MEMBERS_KEY, {}).items():
            run_id = self.child(members[mid], trial.trial_id)
            tags = self.node_tags(run_id, entry.get("node"))
            if entry.get("status") not in (None, "running"):
                tags.append(RunTag("status", entry["status"]))
            if "step" in entry:
                self.log_record(mid, entry, tags)
            elif tags:
                self.batch(run_id, tags=tags)
            if entry.get("status") not in (None, "running"):
                self._status[run_id] = entry["status"]

    def on_trial_complete(self, iteration, trials, trial, **info):
        # a trial that ended by itself has result.json in its checkpoint; one without was
        # stopped by the scheduler (ASHA) after some evaluation
        self.close(trial, default_status="stopped", run_status="FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.close(trial, default_status="failed", run_status="FAILED")

    def close(self, trial, default_status: str, run_status: str) -> None:
        """End the trial's child runs: complete the history, log artifacts, then the tags (the
        status last but for the run's own status) in one request."""
        from mlflow.entities import RunTag

        members = self._members(trial)
        checkpoint = trial.checkpoint
        with tempfile.TemporaryDirectory(prefix="superpos-artifacts-") as tmp:
            root = Path(checkpoint.to_directory(tmp)) if checkpoint is not None else None
            for m in members:
                run_id = self.child(m, trial.trial_id)
                d = root / m.id if root is not None else None
                status, tags = default_status, []
                if d is not None and d.is_dir():
                    records = [json.loads(line) for line in (d / METRICS_FILE).read_text().splitlines()] if (d / METRICS_FILE).exists() else []
                    for record in records:
                        self.log_record(m.id, record)
                    if (d / RESULT_FILE).exists():
                        result = json.loads((d / RESULT_FILE).read_text())
                        status = result["status"]
                        if status == "failed":  # bad input found inside the trial (trainable.py)
                            tags.append(RunTag("superpos.error", result.get("message", "")[:5000]))
                    elif default_status == "stopped":
                        (d / RESULT_FILE).write_text(json.dumps(stopped_result(records, d / PROMPT_FILE), indent=2) + "\n")
                    for name in (PROMPT_FILE, BEST_PROMPT_FILE, CONFIG_FILE, RESULT_FILE, ENVIRONMENT_FILE):
                        if (d / name).exists():
                            self.client.log_artifact(run_id, str(d / name))
                    if (d / ENVIRONMENT_FILE).exists():  # where the trial ran, not the driver's
                        tags += env_tags(d / ENVIRONMENT_FILE)
                self.batch(run_id, tags=[*tags, RunTag("status", status)])
                self.client.set_terminated(run_id, "FINISHED" if status in ("finished", "diverged", "stopped") else "FAILED" if status == "failed" else run_status)
                self._status[run_id] = status


def env_tags(path: Path) -> list:
    from mlflow.entities import RunTag

    return [RunTag(k, v) for k, v in as_tags(json.loads(path.read_text())).items()]


def stopped_result(records: list[dict], prompt: Path) -> dict:
    """result.json of a trial stopped early by the scheduler, in the Trainer's format
    (``superpos.train``): the best score so far, from its evaluation records; the trainable
    parameter count from its prompt's metadata (None without a prompt)."""
    best = None
    for r in records:
        if math.isfinite(r["score"]) and (best is None or r["score"] > best["score"]):
            best = r  # the first evaluation with the best score, as the Trainer counts it
    last = records[-1] if records else {}
    n = None
    if prompt.exists():
        from safetensors import safe_open

        with safe_open(str(prompt), framework="pt") as f:
            n = (f.metadata() or {}).get("trainable_parameters")
    return {
        "status": "stopped",
        "message": f"stopped early by the trial scheduler (ASHA) after {len(records)} evaluation(s), at step {last.get('step', 0)}",
        "best_score": best["score"] if best else None,
        "best_test_score": last.get("best_test_score"),
        "best_step": best["step"] if best else -1,
        "best_epoch": best["epoch"] if best else -1.0,
        "steps": last.get("step", 0),
        "examples": last.get("examples", 0),
        "trainable_parameters": int(n) if n is not None else None,
    }


def drop_lost_runs(tracking_uri: str, parent_run_id: str, task: str, kept: set[str]) -> list[str]:
    """On ``--resume`` of a search: the child runs of ``task`` that are still running but whose
    Ray trial is not in the restored Tune snapshot (``kept``). Their Ray trials were created
    after the snapshot that a killed driver left and will never run again (Optuna re-queues
    their trials for new Ray trials, trainables/searcher.py), so each is ended (tag status
    ``lost``, run status KILLED) and deleted (MLflow's soft delete: hidden from searches and the
    UI, restorable), leaving one child run per trial. Returns their trial ids."""
    client = client_for(tracking_uri)
    exp = client.get_run(parent_run_id).info.experiment_id
    runs = search_all(client, exp, f"tags.`{PARENT}` = '{parent_run_id}' and tags.task = '{task}'")
    lost = [r for r in runs if r.data.tags.get("status") == "running" and r.data.tags.get(TRIAL_ID) not in kept]
    for r in lost:
        client.set_tag(r.info.run_id, "status", "lost")
        client.set_terminated(r.info.run_id, "KILLED")
        client.delete_run(r.info.run_id)
    return [r.data.tags.get(TRIAL_ID, "") for r in lost]


def child_statuses(tracking_uri: str, parent_run_id: str) -> list[tuple[str, str]]:
    """(task, status tag) of every child run of a sweep: what has ended is what MLflow holds."""
    client = client_for(tracking_uri)
    exp = client.get_run(parent_run_id).info.experiment_id
    runs = search_all(client, exp, f"tags.`{PARENT}` = '{parent_run_id}'")
    return [(r.data.tags.get("task", ""), r.data.tags.get("status", "")) for r in runs]


def finish_parent(tracking_uri: str, parent_run_id: str, tags: dict | None = None, status: str = "FINISHED") -> None:
    client = client_for(tracking_uri)
    for k, v in (tags or {}).items():
        client.set_tag(parent_run_id, k, str(v))
    client.set_terminated(parent_run_id, status)

