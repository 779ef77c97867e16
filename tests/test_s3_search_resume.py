"""A search on S3 storage keeps its Optuna study in the bucket (trainables/study_store.py):
interrupted on one machine, `superpos search --resume` on another (a fresh local cache and
working directory) continues the same study to exactly num_samples trials (issue 11, fault 9).
S3 is moto's server on 127.0.0.1, reached through AWS_ENDPOINT_URL, as in the README recipe."""

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

pytestmark = [pytest.mark.faults, pytest.mark.slow]

SAMPLES = 3


def study_trials(journal_bytes: bytes, tmp_path, name: str):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = tmp_path / "check.journal"  # a copy to read: the study in the bucket is not touched
    path.write_bytes(journal_bytes)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=f"{name}-cb", storage=JournalStorage(JournalFileBackend(str(path)))).trials


def remote_journal() -> bytes | None:
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri("s3://sweeps/runs/s3search/optuna.journal")
    if fs.get_file_info(path).type == pyarrow.fs.FileType.NotFound:
        return None
    with fs.open_input_stream(path) as f:
        return f.read()


def test_search_on_s3_resumes_its_study_from_a_fresh_machine(s3, data_dir, tmp_path):
    from mlflow.tracking import MlflowClient

    spec = {
        "name": "s3search", "experiment": "s3search", "epochs": 3, "search": "optuna", "num_samples": SAMPLES,
        "space": {"lr": {"loguniform": [1e-3, 0.3]}}, "scheduler": {"type": "asha", "grace_period": 1}, "resources": {"cpu": 1},
        "base": {"task": "cb", "model": "tiny-t5", "method": "superpos", "m": 8, "batch_size": 8, "max_train_examples": 16, "max_eval_examples": 8, "device": "cpu"},
        "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "storage_path": "s3://sweeps/runs", "best_file": str(tmp_path / "best.yaml"),
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    cmd = [sys.executable, "-m", "superpos.cli", "search", str(tmp_path / "spec.yaml"), "--data-dir", str(data_dir)]

    def run(machine: str, *extra) -> subprocess.Popen:
        home = tmp_path / machine
        home.mkdir()
        env = dict(os.environ, SUPERPOS_CACHE=str(home / "cache"), HF_HUB_OFFLINE="1")
        return subprocess.Popen([*cmd, *extra], cwd=home, env=env, stdout=open(tmp_path / f"{machine}.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)

    first = run("machine1")
    try:
        end = time.time() + 240
        while time.time() < end and first.poll() is None:
            data = remote_journal()
            if data and any(t.state.is_finished() for t in study_trials(data, tmp_path, "s3search")):
                break
            time.sleep(1)
        os.killpg(first.pid, signal.SIGINT)  # Ctrl-C: Tune saves its state, the searcher pushes the journal
        first.wait(120)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    before = study_trials(remote_journal(), tmp_path, "s3search")
    assert 1 <= len([t for t in before if t.state.is_finished()]) < SAMPLES, (tmp_path / "machine1.log").read_text()[-3000:]

    second = run("machine2", "--resume")  # a new head node: nothing of machine1's local files
    try:
        assert second.wait(300) == 0, (tmp_path / "machine2.log").read_text()[-3000:]
    finally:
        if second.poll() is None:
            os.killpg(second.pid, signal.SIGKILL)
    after = study_trials(remote_journal(), tmp_path, "s3search")
    assert len(after) == SAMPLES and all(t.state.is_finished() for t in after), [(t.number, t.state) for t in after]
    done = {t.number: t.params for t in before if t.state.is_finished()}
    assert {t.number: t.params for t in after if t.number in done} == done  # the same study, continued
    assert not list(tmp_path.glob("machine*/*.db"))  # no local study left behind

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("s3search").experiment_id])
    children = [r for r in runs if r.data.tags.get("superpos.role") == "trial"]
    assert len(children) == SAMPLES and all(r.info.status == "FINISHED" for r in children)
    assert [r.info.status for r in runs if r.data.tags.get("superpos.role") == "sweep"] == ["FINISHED"]
    assert yaml.safe_load((tmp_path / "best.yaml").read_text())["per_task"].get("cb") or "cb" in yaml.safe_load((tmp_path / "best.yaml").read_text()).get("tied", {})
