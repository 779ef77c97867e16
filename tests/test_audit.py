"""`superpos audit` (trainables/audit.py) on real sweeps damaged on purpose: a small grid sweep
and a small Optuna search are run once per module; each test audits a copy with one kind of
damage and expects exactly that kind of finding (and a clean audit of the undamaged copy)."""

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.slow]

BASE = {"task": "cb", "model": "tiny-t5", "method": "simple", "batch_size": 8, "eval_batch_size": 8, "max_train_examples": 16, "max_eval_examples": 8, "device": "cpu"}


@pytest.fixture(scope="module")
def store(data_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("store")
    common = {"epochs": 2, "resources": {"cpu": 1}, "tracking_uri": f"sqlite:///{root}/mlflow.db", "storage_path": str(root / "ray")}
    specs = {
        "grid": {"name": "grid", "experiment": "audit-grid", "base": BASE, "seeds": [0, 1], **common},
        "search": {"name": "search", "experiment": "audit-search", "base": BASE, "search": "optuna", "num_samples": 2,
                   "space": {"lr": {"loguniform": [1e-3, 0.3]}}, "best_file": str(root / "best.yaml"), **common},
    }
    for kind, spec in specs.items():
        (root / f"{kind}.yaml").write_text(yaml.safe_dump(spec))
        cmd = [sys.executable, "-m", "superpos.cli", "sweep" if kind == "grid" else "search", str(root / f"{kind}.yaml"), "--data-dir", str(data_dir)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return root


class Copy:
    """A copy of the store whose MLflow database points at the copy's own artifacts and storage."""

    def __init__(self, store: Path, dest: Path):
        shutil.copytree(store, dest)
        self.root, self.db = dest, dest / "mlflow.db"
        with sqlite3.connect(self.db) as con:
            for table, column in (("experiments", "artifact_location"), ("runs", "artifact_uri"), ("tags", "value")):
                con.execute(f"update {table} set {column} = replace({column}, ?, ?)", (str(store), str(dest)))
        self.uri = f"sqlite:///{self.db}"
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(self.uri)

    def children(self, experiment: str) -> list:
        exp = self.client.get_experiment_by_name(experiment)
        return self.client.search_runs([exp.experiment_id], "tags.`superpos.role` = 'trial'")

    def parent(self, experiment: str):
        exp = self.client.get_experiment_by_name(experiment)
        (run,) = self.client.search_runs([exp.experiment_id], "tags.`superpos.role` = 'sweep'")
        return run

    def sql(self, statement: str, *args) -> None:
        with sqlite3.connect(self.db) as con:
            con.execute(statement, args)

    def artifact(self, run, name: str) -> Path:
        return Path(run.info.artifact_uri.removeprefix("file://")) / name

    def audit(self, experiment: str, *extra: str) -> tuple[int, list[dict]]:
        cmd = [sys.executable, "-m", "superpos.cli", "audit", "--tracking-uri", self.uri, "--experiment", experiment,
               "--storage-path", str(self.root / "ray"), "--json", *extra]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert out.returncode in (0, 1), out.stderr[-3000:]
        return out.returncode, json.loads(out.stdout)["findings"]


@pytest.fixture
def copy(store, tmp_path) -> Copy:
    return Copy(store, tmp_path / "copy")


def kinds(findings) -> set[str]:
    return {f["kind"] for f in findings}


def test_undamaged_sweeps_audit_clean(copy):
    for experiment in ("audit-grid", "audit-search"):
        rc, findings = copy.audit(experiment)
        assert (rc, findings) == (0, []), findings
    out = subprocess.run([sys.executable, "-m", "superpos.cli", "audit", "--tracking-uri", copy.uri, "--sweep", "grid", "--storage-path", str(copy.root / "ray")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and out.stdout.strip() == "audit clean", out.stdout


def test_a_missing_child_run(copy):
    child = copy.children("audit-grid")[0]
    copy.client.delete_run(child.info.run_id)
    rc, findings = copy.audit("audit-grid")
    assert rc == 1 and kinds(findings) == {"missing"} and child.data.tags["superpos.trial_id"] in findings[0]["message"]


def test_an_extra_and_a_duplicate_child_run(copy):
    child = copy.children("audit-grid")[0]
    parent = copy.parent("audit-grid")
    tags = {"mlflow.parentRunId": parent.info.run_id, "superpos.role": "trial", "status": "finished"}
    for trial_id in ("0123456789ab", child.data.tags["superpos.trial_id"]):
        run = copy.client.create_run(parent.info.experiment_id, tags={**tags, "superpos.trial_id": trial_id})
        copy.client.set_terminated(run.info.run_id, "FINISHED")
    rc, findings = copy.audit("audit-grid")
    assert rc == 1 and {"extra", "duplicate"} <= kinds(findings)
    assert any(f["kind"] == "extra" and "0123456789ab" in f["message"] for f in findings)


def test_a_status_that_disagrees_with_tune(copy):
    child = copy.children("audit-grid")[0]
    copy.client.set_terminated(child.info.run_id, "FAILED")
    rc, findings = copy.audit("audit-grid")
    assert rc == 1 and kinds(findings) == {"status"} and findings[0]["run"] == child.info.run_id


def test_an_orphaned_running_run_and_its_repair(copy):
    child = copy.children("audit-grid")[0]
    copy.sql("update runs set status = 'RUNNING', end_time = null where run_uuid = ?", child.info.run_id)
    rc, findings = copy.audit("audit-grid")
    assert rc == 1 and "orphan" in kinds(findings)
    before = len(copy.client.search_runs([child.info.experiment_id]))
    rc, findings = copy.audit("audit-grid", "--repair")
    run = copy.client.get_run(child.info.run_id)
    assert run.info.status == "KILLED" and "superpos audit --repair" in run.data.tags["superpos.repair"]
    assert len(copy.client.search_runs([child.info.experiment_id])) == before  # nothing deleted
    rc, findings = copy.audit("audit-grid")
    assert "orphan" not in kinds(findings)  # repaired; KILLED still disagrees with Tune, and says so
    assert kinds(findings) == {"status"}


def test_a_step_logged_twice(copy):
    child = copy.children("audit-grid")[0]
    first = copy.client.get_metric_history(child.info.run_id, "score")[0]
    copy.client.log_metric(child.info.run_id, "score", first.value, step=first.step)
    rc, findings = copy.audit("audit-grid")
    assert rc == 1 and kinds(findings) == {"steps"} and "more than once" in findings[0]["message"]


def test_a_lost_step(copy):
    child = copy.children("audit-grid")[0]
    copy.sql("delete from metrics where run_uuid = ? and step = (select min(step) from metrics where run_uuid = ?)", child.info.run_id, child.info.run_id)
    rc, findings = copy.audit("audit-grid")
    assert rc == 1 and kinds(findings) == {"steps"} and any("not logged" in f["message"] for f in findings)


def test_a_logged_value_the_trial_did_not_compute(copy):
    child = copy.children("audit-grid")[0]
    copy.sql("update metrics set value = value + 1 where run_uuid = ? and key = 'train_loss'", child.info.run_id)
    rc, findings = copy.audit("audit-grid")
    assert rc == 1 and kinds(findings) == {"steps"} and all("the trial computed" in f["message"] for f in findings)


def test_artifacts_missing_unloadable_or_contradicting(copy):
    a, b, *_ = copy.children("audit-grid")
    copy.artifact(a, "prompt.safetensors").unlink()
    copy.artifact(a, "best_prompt.safetensors").write_text("not tensors")
    result = json.loads(copy.artifact(b, "result.json").read_text())
    copy.artifact(b, "result.json").write_text(json.dumps({**result, "best_score": 0.75}))
    rc, findings = copy.audit("audit-grid")
    messages = sorted(f["message"] for f in findings)
    assert rc == 1 and kinds(findings) == {"artifact"} and len(findings) == 3, messages
    assert any("without prompt.safetensors" in m for m in messages) and any("best_prompt.safetensors does not load" in m for m in messages)
    assert any("best_score 0.75 is not the best logged" in m for m in messages)


def test_a_study_short_of_num_samples_and_a_trial_without_its_run(copy):
    record_file = copy.root / "ray" / "search" / "superpos_sweep.json"
    record = json.loads(record_file.read_text())
    spec = yaml.safe_load(Path(record["spec"]).read_text())
    (copy.root / "search3.yaml").write_text(yaml.safe_dump({**spec, "num_samples": 3}))
    record_file.write_text(json.dumps({**record, "spec": str(copy.root / "search3.yaml")}))
    child = copy.children("audit-search")[0]
    copy.sql("update params set value = '0.123' where run_uuid = ? and key = 'lr'", child.info.run_id)
    rc, findings = copy.audit("audit-search")
    messages = [f["message"] for f in findings]
    assert rc == 1 and kinds(findings) == {"study"}, messages
    assert any("holds 2 complete trials, not num_samples = 3" in m for m in messages) and any("matches no child run" in m for m in messages)


def test_a_path_outside_the_storage_path(copy):
    parent = copy.parent("audit-grid")
    copy.client.set_tag(parent.info.run_id, "superpos.storage", "/somewhere/else/grid")
    rc, findings = copy.audit("audit-grid")
    assert rc == 1 and kinds(findings) == {"outside"} and "/somewhere/else/grid" in findings[0]["message"]


def test_a_missing_sweep_record(copy):
    (copy.root / "ray" / "grid" / "superpos_sweep.json").unlink()
    rc, findings = copy.audit("audit-grid")
    assert rc == 1 and kinds(findings) == {"record"}
