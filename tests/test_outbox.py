"""The driver's MLflow outbox (trainables/outbox.py): events the store could not take are kept
on disk in order and replayed once, also by a new driver after a crash (`--resume`)."""

from types import SimpleNamespace

import pytest

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


@pytest.fixture
def trial():
    spec = parse_spec({"name": "o", "experiment": "o", "base": {"task": "cb", "model": "tiny-t5", "method": "simple"}}, "o.yaml")
    (member,) = spec.members()
    return SimpleNamespace(trial_id="t_00000", config={MEMBERS_KEY: grid_trial_config([member])}, checkpoint=None), member


def record(step):
    return {"step": step, "epoch": step / 2, "score": 0.5, "best_score": 0.5, "status": "running"}


def test_outage_is_buffered_in_order_and_replayed_once(tmp_path, trial, monkeypatch, capsys):
    trial, member = trial
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    parent = tracking.start_parent(uri, "o", "o", "o.yaml")
    outbox = tmp_path / "outbox"
    logger = BufferedSweepLogger(uri, parent, "o", str(outbox))
    logger.on_trial_start(0, [], trial)
    logger.on_trial_result(0, [], trial, {MEMBERS_KEY: {member.id: record(2)}})

    real = tracking.client_for
    monkeypatch.setattr(tracking, "client_for", lambda uri: Down())
    logger._client = None
    for step in (4, 6):
        logger.on_trial_result(0, [], trial, {MEMBERS_KEY: {member.id: record(step)}})
    assert logger.pending() == 2 and not logger.flush(force=True)
    assert "unreachable" in capsys.readouterr().err

    # the driver dies; a new one (--resume) replays the journal once the store answers
    monkeypatch.setattr(tracking, "client_for", real)
    again = BufferedSweepLogger(uri, parent, "o", str(outbox))
    assert again.drain() and not (outbox / JOURNAL).exists()
    assert "was unreachable for" in capsys.readouterr().err
    again.on_trial_result(0, [], trial, {MEMBERS_KEY: {member.id: record(6)}})  # a retried report: not logged twice
    client = real(uri)
    (run,) = [r for r in client.search_runs([client.get_run(parent).info.experiment_id]) if r.info.run_id != parent]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "score")] == [2, 4, 6]


def test_errors_of_what_is_logged_are_not_buffered(tmp_path, trial, monkeypatch):
    from mlflow.exceptions import MlflowException

    trial, _ = trial
    logger = BufferedSweepLogger(f"sqlite:///{tmp_path}/mlflow.db", "no-such-run", "o", str(tmp_path / "outbox"))
    with pytest.raises(MlflowException):  # RESOURCE_DOES_NOT_EXIST: a bug to see, not an outage to wait out
        logger.on_trial_start(0, [], trial)
    assert logger.pending() == 0
