"""The driver's MLflow outbox (trainables/outbox.py): Tune's hooks never wait on MLflow; what the
store could not take is logged in order once it answers, and a trial's end survives the driver
(`--resume` logs it)."""

import json
import threading
from types import SimpleNamespace

import pytest

from trainables import outbox as outbox_module
from trainables import tracking
from trainables.outbox import JOURNAL
from trainables.runner import BufferedSweepLogger
from trainables.spec import parse_spec
from trainables.spec.trial_config import MEMBERS_KEY, grid_trial_config


class Down:
    """A tracking client whose every call fails as an unreachable server does."""

    def __getattr__(self, name):
        from mlflow.exceptions import MlflowException

        def fail(*a, **k):
            raise MlflowException("API request failed: Max retries exceeded (connection refused)")

        return fail


class Gate:
    """A tracking client that answers only while ``open`` is set, and tells when it was refused."""

    def __init__(self, real):
        self.real, self.open, self.refused = real, threading.Event(), threading.Event()

    def __getattr__(self, name):
        if not self.open.is_set():
            self.refused.set()
            return getattr(Down(), name)
        return getattr(self.real, name)


@pytest.fixture
def trial():
    spec = parse_spec({"name": "o", "experiment": "o", "base": {"task": "cb", "model": "tiny-t5", "method": "simple"}}, "o.yaml")
    (member,) = spec.members()
    return SimpleNamespace(trial_id="t_00000", config={MEMBERS_KEY: grid_trial_config([member])}, checkpoint=None), member


def record(step):
    return {"step": step, "epoch": step / 2, "score": 0.5, "best_score": 0.5, "status": "running"}


def ended_checkpoint(path, member, steps):
    """A trial's last checkpoint as the trainable writes it: the member's whole history and result."""
    from ray.tune import Checkpoint

    d = path / member.id
    d.mkdir(parents=True)
    (d / "metrics.jsonl").write_text("".join(json.dumps(record(s)) + "\n" for s in steps))
    (d / "result.json").write_text(json.dumps({"status": "finished", "best_score": 0.5}))
    return Checkpoint.from_directory(str(path))


def history(uri, parent):
    client = tracking.client_for(uri)
    (run,) = [r for r in client.search_runs([client.get_run(parent).info.experiment_id]) if r.info.run_id != parent]
    return [m.step for m in client.get_metric_history(run.info.run_id, "score")], run


def test_outage_waits_in_order_and_is_logged_once(tmp_path, trial, monkeypatch, capsys):
    trial, member = trial
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    parent = tracking.start_parent(uri, "o", "o", "o.yaml")
    gate = Gate(tracking.client_for(uri))
    monkeypatch.setattr(tracking, "client_for", lambda uri: gate)
    monkeypatch.setattr(outbox_module, "BACKOFF_S", 0.05)
    logger = BufferedSweepLogger(uri, parent, "o", str(tmp_path / "outbox"))
    logger.on_trial_start(0, [], trial)  # the store is down: the hooks return, the events wait
    for step in (2, 4, 6):
        logger.on_trial_result(0, [], trial, {MEMBERS_KEY: {member.id: record(step)}})
    assert gate.refused.wait(60)
    assert logger.pending() == 4
    gate.open.set()
    assert logger.drain() and logger.pending() == 0
    err = capsys.readouterr().err
    assert "unreachable" in err and "was unreachable for" in err, err
    logger.on_trial_result(0, [], trial, {MEMBERS_KEY: {member.id: record(6)}})  # a retried report: not logged twice
    assert logger.drain()
    assert history(uri, parent)[0] == [2, 4, 6]


def test_hooks_return_while_the_store_has_not_answered(tmp_path, trial, monkeypatch):
    """Tune's loop never waits on MLflow: every hook returns while the store holds its calls."""
    trial, member = trial
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    parent = tracking.start_parent(uri, "o", "o", "o.yaml")
    real, answer = tracking.client_for(uri), threading.Event()

    class Held:
        def __getattr__(self, name):
            def held(*a, **k):
                answer.wait()
                return getattr(real, name)(*a, **k)

            return held

    monkeypatch.setattr(tracking, "client_for", lambda uri: Held())
    logger = BufferedSweepLogger(uri, parent, "o", str(tmp_path / "outbox"))
    trial.checkpoint = ended_checkpoint(tmp_path / "storage", member, (2, 4))

    def hooks():
        logger.on_trial_start(0, [], trial)
        for step in (2, 4):
            logger.on_trial_result(0, [], trial, {MEMBERS_KEY: {member.id: record(step)}})
        logger.on_trial_complete(0, [], trial)

    tune_loop = threading.Thread(target=hooks)
    tune_loop.start()
    tune_loop.join(120)
    returned = not tune_loop.is_alive()
    answer.set()
    assert returned and logger.pending() >= 1
    assert logger.drain()
    steps, run = history(uri, parent)
    assert steps == [2, 4] and run.info.status == "FINISHED"


def test_a_trials_end_survives_the_driver(tmp_path, trial, monkeypatch):
    """The store is down when a trial ends and the driver dies: its end is in the journal with
    its checkpoint, and the next driver logs its whole history and closes its run."""
    trial, member = trial
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    parent = tracking.start_parent(uri, "o", "o", "o.yaml")
    outbox = tmp_path / "outbox"
    real = tracking.client_for
    monkeypatch.setattr(tracking, "client_for", lambda uri: Down())
    logger = BufferedSweepLogger(uri, parent, "o", str(outbox))
    logger.on_trial_start(0, [], trial)
    logger.on_trial_result(0, [], trial, {MEMBERS_KEY: {member.id: record(2)}})
    trial.checkpoint = ended_checkpoint(tmp_path / "storage", member, (2, 4, 6))
    logger.on_trial_complete(0, [], trial)
    (journaled,) = [json.loads(line) for line in (outbox / JOURNAL).read_text().splitlines()]
    assert journaled["hook"] == "complete"
    import shutil

    shutil.rmtree(tmp_path / "storage")  # the trial's storage is gone: the journal kept a copy

    # the driver dies; a new one (--resume) logs the journal once the store answers
    monkeypatch.setattr(tracking, "client_for", real)
    again = BufferedSweepLogger(uri, parent, "o", str(outbox))
    assert again.drain() and not (outbox / JOURNAL).exists() and not (outbox / "files" / journaled["id"]).exists()
    steps, run = history(uri, parent)
    assert steps == [2, 4, 6]
    assert run.info.status == "FINISHED" and run.data.tags["status"] == "finished"


def test_errors_of_what_is_logged_are_not_buffered(tmp_path, trial):
    from mlflow.exceptions import MlflowException

    trial, _ = trial
    logger = BufferedSweepLogger(f"sqlite:///{tmp_path}/mlflow.db", "no-such-run", "o", str(tmp_path / "outbox"))
    logger.on_trial_start(0, [], trial)
    with pytest.raises(MlflowException):  # RESOURCE_DOES_NOT_EXIST: a bug to see, not an outage to wait out
        logger.drain()
    with pytest.raises(MlflowException):  # and Tune's loop sees it at its next step
        logger.on_step_end(0, [])
    assert not (tmp_path / "outbox" / JOURNAL).exists()
