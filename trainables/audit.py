"""``superpos audit``: read what a sweep left (MLflow runs, the storage path) and check its
invariants, one line per finding (docs/mlflow-layout.md, "What superpos audit checks").

Sources: the sweep's parent run (tags ``superpos.role = sweep``, ``superpos.sweep``,
``superpos.storage``), its sweep record ``<storage>/<sweep>/superpos_sweep.json``, Tune's newest
experiment snapshot of each Tune experiment under it (``grid/``, ``study-<task>/``: the Ray
trials, each one's final state and members), each Ray trial's newest complete checkpoint (every member's
``metrics.jsonl``: the evaluations the trainable made), and for searches the Optuna study.

Findings (the first word of each line): ``record`` (no readable sweep record, or one naming
another parent run), ``missing`` / ``extra`` / ``duplicate`` (child runs against the trials),
``status`` (a child run's status against Tune's final state), ``orphan`` (a RUNNING child under
an ended parent), ``steps`` (a metric step logged twice, lost, or with another value than the
trial computed), ``artifact`` (a finished run without a loadable prompt, best prompt or
result.json, or a result.json whose best score is not the best logged), ``study`` (an Optuna
study that does not hold exactly ``num_samples`` complete trials, each one child run's),
``outside`` (a path of the sweep outside its storage path).

``--repair`` only ends orphaned RUNNING runs as KILLED, with tag ``superpos.repair`` saying
why; it deletes nothing.
"""

from __future__ import annotations

import fnmatch
import json
import math
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from trainables.manifest import complete
from trainables.tracking import PARENT, ROLE, STEP_KEY, SWEEP, TRIAL_ID, client_for

SNAPSHOT_PATTERN = "experiment_state-*.json"
ENDED = ("FINISHED", "FAILED", "KILLED")
#: what a finished run must hold (full fine-tuning keeps no best prompt: docs/mlflow-layout.md)
REQUIRED_ARTIFACTS = ("prompt.safetensors", "best_prompt.safetensors", "result.json")
REPAIR_TAG = "superpos.repair"


@dataclass
class Finding:
    kind: str
    sweep: str
    run: str  # MLflow run id, or "" for the sweep as a whole
    message: str

    def line(self) -> str:
        return f"{self.kind} {self.sweep}{'/' + self.run if self.run else ''}: {self.message}"


@dataclass
class RayTrial:
    """One Ray trial of a Tune snapshot: its final state and what it trained."""

    id: str
    status: str
    members: list[str]
    dirname: str
    params: dict = field(default_factory=dict)


# -- the storage path ----------------------------------------------------------------------
def _fs(path: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(path if "://" in path else str(Path(path).resolve()))


def _read(path: str) -> bytes | None:
    import pyarrow.fs

    fs, p = _fs(path)
    if fs.get_file_info(p).type != pyarrow.fs.FileType.File:
        return None
    with fs.open_input_stream(p) as f:
        return f.read()


def _list(path: str) -> list:
    import pyarrow.fs

    fs, p = _fs(path)
    return fs.get_file_info(pyarrow.fs.FileSelector(p, allow_not_found=True))


def tune_trials(experiment_path: str) -> dict[str, RayTrial] | None:
    """The Ray trials of the newest Tune snapshot in ``experiment_path`` (None: no snapshot)."""
    names = sorted(i.base_name for i in _list(experiment_path) if fnmatch.fnmatch(i.base_name, SNAPSHOT_PATTERN))
    if not names:
        return None
    state = json.loads(_read(f"{experiment_path}/{names[-1]}"))
    trials = {}
    for trial_json, _ in state["trial_data"]:
        t = json.loads(trial_json)
        config = t.get("config") or {}
        if isinstance(config.get("members"), str):
            members = [m["id"] for m in json.loads(config["members"])]
        else:  # a search trial: the Ray trial id is the member id
            members = [t["trial_id"]]
        params = t.get("evaluated_params") if isinstance(t.get("evaluated_params"), dict) else {}
        trials[t["trial_id"]] = RayTrial(t["trial_id"], t.get("status", ""), members, t.get("relative_logdir", ""), params)
    return trials


def checkpoint_records(trial_path: str) -> dict[str, list[dict]]:
    """member id -> the evaluation records of the Ray trial's newest complete checkpoint (one a
    killed worker uploaded in part is passed over: manifest.py); of its newest, where none has a
    manifest (a sweep of an earlier superpos)."""
    checkpoints = sorted(i.base_name for i in _list(trial_path) if i.base_name.startswith("checkpoint_"))
    if not checkpoints:
        return {}
    fs, path = _fs(trial_path)
    whole = [c for c in checkpoints if complete(fs, f"{path.rstrip('/')}/{c}")]
    newest = f"{trial_path}/{(whole or checkpoints)[-1]}"
    records = {}
    for info in _list(newest):
        data = _read(f"{newest}/{info.base_name}/metrics.jsonl")
        if data is not None:
            records[info.base_name] = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
    return records


def within(path: str, root: str) -> bool:
    norm = lambda p: p.rstrip("/") if "://" in p else str(Path(p).resolve())  # noqa: E731
    return norm(path) == norm(root) or norm(path).startswith(norm(root) + "/")


# -- the audit -----------------------------------------------------------------------------
class Audit:
    def __init__(self, tracking_uri: str, storage_path: str | None = None, repair: bool = False):
        self.client = client_for(tracking_uri)
        self.storage_path, self.repair = storage_path, repair
        self.findings: list[Finding] = []
        self.repaired: list[str] = []

    def find(self, kind: str, sweep: str, run: str, message: str) -> None:
        self.findings.append(Finding(kind, sweep, run, message))

    def parents(self, experiment: str | None, sweep: str | None) -> list:
        from mlflow.entities import ViewType

        if experiment:
            exp = self.client.get_experiment_by_name(experiment)
            if exp is None:
                raise LookupError(f"no MLflow experiment {experiment!r} at {self.client.tracking_uri}")
            ids = [exp.experiment_id]
        else:
            ids = [e.experiment_id for e in self.client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
        where = f"tags.`{ROLE}` = 'sweep'" + (f" and tags.`{SWEEP}` = '{sweep}'" if sweep else "")
        found = self.client.search_runs(ids, where, max_results=50000) if ids else []
        if not found:
            raise LookupError(f"no sweep parent run{' named ' + repr(sweep) if sweep else ''} in {experiment or 'any experiment'} at {self.client.tracking_uri}")
        return found

    def sweep(self, parent) -> None:
        name = parent.data.tags.get(SWEEP, parent.info.run_name)
        children = self.client.search_runs([parent.info.experiment_id], f"tags.`{PARENT}` = '{parent.info.run_id}'", max_results=50000)
        if parent.info.status == "FAILED" and "superpos.error" in parent.data.tags and not children:
            return  # a sweep that failed before its first trial (docs/mlflow-layout.md)
        self._orphans(name, parent, children)
        root = f"{self.storage_path.rstrip('/')}/{name}" if self.storage_path else parent.data.tags.get("superpos.storage")
        if not root:
            self.find("record", name, parent.info.run_id, "the parent run has no superpos.storage tag; give --storage-path")
            return
        data = _read(f"{root}/superpos_sweep.json")
        if data is None:
            self.find("record", name, "", f"no sweep record {root}/superpos_sweep.json")
            return
        record = json.loads(data)
        if record.get("parent_run_id") != parent.info.run_id:
            self.find("record", name, parent.info.run_id, f"the sweep record {root}/superpos_sweep.json names parent run {record.get('parent_run_id')}, not this one")
            return
        if parent.data.tags.get("superpos.storage") and not within(parent.data.tags["superpos.storage"], root):
            self.find("outside", name, parent.info.run_id, f"tag superpos.storage = {parent.data.tags['superpos.storage']} is not the storage path {root}")
        experiments = sorted(i.base_name for i in _list(root) if i.base_name == "grid" or i.base_name.startswith("study-"))
        trials: dict[str, tuple[str, RayTrial]] = {}  # member id -> (experiment, Ray trial)
        for exp in experiments:
            snapshot = tune_trials(f"{root}/{exp}")
            if snapshot is None:
                self.find("record", name, "", f"no readable Tune snapshot in {root}/{exp}")
                continue
            for t in snapshot.values():
                for mid in t.members:
                    trials[mid] = (exp, t)
        self._children(name, root, trials, children)
        for exp in experiments:
            if exp.startswith("study-"):
                self._study(name, root, exp[len("study-"):], record, {m: t for m, (e, t) in trials.items() if e == exp}, children)

    def _orphans(self, name: str, parent, children) -> None:
        if parent.info.status not in ENDED:
            return
        for r in children:
            if r.info.status == "RUNNING":
                why = f"RUNNING under parent run {parent.info.run_id}, which ended {parent.info.status}"
                self.find("orphan", name, r.info.run_id, why)
                if self.repair:
                    self.client.set_tag(r.info.run_id, REPAIR_TAG, f"ended KILLED by superpos audit --repair: {why}")
                    self.client.set_terminated(r.info.run_id, "KILLED")
                    self.repaired.append(r.info.run_id)

    def _children(self, name: str, root: str, trials: dict, children) -> None:
        by_member: dict[str, list] = {}
        for r in children:
            by_member.setdefault(r.data.tags.get(TRIAL_ID, ""), []).append(r)
        for mid in sorted(set(trials) - set(by_member)):
            self.find("missing", name, "", f"trial {mid} (Ray trial {trials[mid][1].id}) has no child run")
        for mid, runs in sorted(by_member.items()):
            if mid not in trials:
                for r in runs:
                    self.find("extra", name, r.info.run_id, f"child run of trial {mid!r}, which no Tune snapshot holds")
                continue
            if len(runs) > 1:
                self.find("duplicate", name, "", f"trial {mid} has {len(runs)} child runs: {', '.join(r.info.run_id for r in runs)}")
            exp, ray_trial = trials[mid]
            records = checkpoint_records(f"{root}/{exp}/{ray_trial.dirname}").get(mid) if ray_trial.dirname else None
            for r in runs:
                self._status(name, r, ray_trial)
                self._steps(name, r, records)
                if r.info.status == "FINISHED" and r.data.tags.get("status") == "finished":
                    self._artifacts(name, r)
            if ray_trial.dirname and not within(f"{root}/{exp}/{ray_trial.dirname}", root):
                self.find("outside", name, "", f"Ray trial {ray_trial.id}'s directory {ray_trial.dirname} is outside {root}")
            for r in runs:
                for path in _source_files(r.data.params.get("source_prompts")):
                    if not within(path, f"{root}/sources"):
                        self.find("outside", name, r.info.run_id, f"source prompt {path} is outside {root}/sources")

    def _status(self, name: str, run, ray_trial: RayTrial) -> None:
        tag, status = run.data.tags.get("status"), run.info.status
        if ray_trial.status == "TERMINATED":
            ok = (status == "FINISHED" and tag in ("finished", "diverged", "stopped")) or (status == "FAILED" and tag == "failed")
        elif ray_trial.status == "ERROR":
            ok = status == "FAILED" and tag == "failed"
        else:  # PENDING / RUNNING / PAUSED: the sweep was interrupted; its run waits for --resume
            ok = status == "RUNNING"
        if not ok:
            self.find("status", name, run.info.run_id, f"run status {status} (tag status={tag}), but Tune's final state of Ray trial {ray_trial.id} is {ray_trial.status}")

    def _steps(self, name: str, run, records: list[dict] | None) -> None:
        keys = set(run.data.metrics)
        histories = {k: self.client.get_metric_history(run.info.run_id, k) for k in sorted(keys)}
        for key, history in histories.items():
            steps = [m.step for m in history]
            twice = sorted({s for s in steps if steps.count(s) > 1})
            if twice:
                self.find("steps", name, run.info.run_id, f"metric {key}: step(s) {twice} logged more than once")
        score_steps = sorted({m.step for m in histories.get(STEP_KEY, [])})
        for key, history in histories.items():
            lost = sorted(set(score_steps) - {m.step for m in history})
            if lost:
                self.find("steps", name, run.info.run_id, f"metric {key}: step(s) {lost} missing (logged for {STEP_KEY})")
        if records is None:
            return
        made = {int(r["step"]): r for r in records}
        last = max(score_steps, default=-1)
        lost = sorted(s for s in made if s <= last and s not in score_steps)
        if lost:
            self.find("steps", name, run.info.run_id, f"evaluation step(s) {lost} of the trial's checkpoint are not logged (last logged: {last})")
        if run.info.status in ENDED and made and max(made) > last:
            self.find("steps", name, run.info.run_id, f"the run ended at step {last}, but the trial's checkpoint has evaluations up to step {max(made)}")
        unknown = sorted(set(score_steps) - set(made))
        if unknown:
            self.find("steps", name, run.info.run_id, f"step(s) {unknown} logged but not in the trial's checkpoint")
        for key, history in histories.items():
            for m in history:
                want = made.get(m.step, {}).get(key)
                if isinstance(want, (int, float)) and not isinstance(want, bool) and not _same(float(want), m.value):
                    self.find("steps", name, run.info.run_id, f"metric {key} at step {m.step}: logged {m.value!r}, the trial computed {want!r}")

    def _artifacts(self, name: str, run) -> None:
        have = {a.path for a in self.client.list_artifacts(run.info.run_id)}
        needed = [a for a in REQUIRED_ARTIFACTS if not (a == "best_prompt.safetensors" and run.data.tags.get("method") == "full")]
        for a in needed:
            if a not in have:
                self.find("artifact", name, run.info.run_id, f"finished run without {a}")
        with tempfile.TemporaryDirectory(prefix="superpos-audit-") as tmp:
            for a in (a for a in needed if a in have):
                try:
                    path = self.client.download_artifacts(run.info.run_id, a, tmp)
                    if a.endswith(".safetensors"):
                        from safetensors.torch import load_file

                        load_file(path)
                    else:
                        result = json.loads(Path(path).read_text())
                except Exception as e:  # noqa: BLE001 - whatever stops it loading is the finding
                    self.find("artifact", name, run.info.run_id, f"{a} does not load: {type(e).__name__}: {e}"[:500])
                    continue
                if a == "result.json":
                    scores = [m.value for m in self.client.get_metric_history(run.info.run_id, STEP_KEY) if math.isfinite(m.value)]
                    if scores and not _same(float(result.get("best_score", math.nan)), max(scores)):
                        self.find("artifact", name, run.info.run_id, f"result.json best_score {result.get('best_score')} is not the best logged {STEP_KEY} {max(scores)}")

    def _study(self, name: str, root: str, task: str, record: dict, trials: dict[str, RayTrial], children) -> None:
        import optuna

        from trainables.study_store import study_storage

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            storage, _ = study_storage(root, None)
            study = optuna.load_study(study_name=f"{name}-{task}", storage=storage)
        except Exception as e:  # noqa: BLE001
            self.find("study", name, "", f"study {name}-{task}: cannot be read from {root}: {type(e).__name__}: {e}"[:500])
            return
        complete = [t for t in study.trials if t.state.name == "COMPLETE"]
        expected = _num_samples(record)
        if expected is not None and len(complete) != expected:
            self.find("study", name, "", f"study {name}-{task} holds {len(complete)} complete trials, not num_samples = {expected}")
        if len(complete) != len(study.trials):
            self.find("study", name, "", f"study {name}-{task}: trial(s) {[t.number for t in study.trials if t.state.name != 'COMPLETE']} not complete")
        runs = [r for r in children if r.data.tags.get(TRIAL_ID) in trials]
        unmatched = list(runs)
        for t in complete:
            match = next((r for r in unmatched if all(_param_equal(r.data.params.get(k), v) for k, v in t.params.items())), None)
            if match is None:
                self.find("study", name, "", f"study {name}-{task}: Optuna trial {t.number} {t.params} matches no child run")
            else:
                unmatched.remove(match)


def _num_samples(record: dict) -> int | None:
    """num_samples of the spec that started the sweep, if its file is still there."""
    import yaml

    try:
        return int(yaml.safe_load(Path(record["spec"]).read_text())["num_samples"])
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
        return None


def _source_files(param: str | None) -> list[str]:
    try:
        value = json.loads(param) if param else None
    except ValueError:
        return []
    return [p for p in value if isinstance(p, str)] if isinstance(value, list) else []


def _param_equal(logged: str | None, value) -> bool:
    if logged is None:
        return False
    try:
        return json.loads(logged) == value
    except ValueError:
        return logged == value


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def run_audit(tracking_uri: str, experiment: str | None = None, sweep: str | None = None, storage_path: str | None = None, repair: bool = False) -> Audit:
    audit = Audit(tracking_uri, storage_path, repair)
    for parent in audit.parents(experiment, sweep):
        audit.sweep(parent)
    return audit


def main(args) -> int:
    """The ``superpos audit`` subcommand: exit 0 when clean, 1 with findings."""
    if not args.experiment and not args.sweep:
        from superpos.errors import ConfigError

        raise ConfigError("superpos audit: give --experiment NAME or --sweep NAME")
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one line per finding, nothing else
    try:
        audit = run_audit(args.tracking_uri, args.experiment, args.sweep, args.storage_path, args.repair)
    except LookupError as e:
        print(f"superpos audit: {e}")
        return 1
    if args.json:
        print(json.dumps({"findings": [asdict(f) for f in audit.findings], "repaired": audit.repaired}, indent=2))
    else:
        for f in audit.findings:
            print(f.line())
        for run_id in audit.repaired:
            print(f"repaired {run_id}: ended KILLED (tag {REPAIR_TAG})")
        if not audit.findings:
            print("audit clean")
    return 1 if audit.findings else 0
