"""What `superpos search --resume` does on top of Ray's restore, without a Ray cluster:
the Optuna searcher reconciles its study with the Tune snapshot (trainables/searcher.py), the
MLflow runs of Ray trials lost with the driver are dropped, and a trial stopped by ASHA gets a
result.json (trainables/tracking.py). The end-to-end check is test_faults.py (d)."""

import json
import pickle

import pytest

from trainables.searcher import StudySearch, experiment_trials


def searcher(tmp_path) -> StudySearch:
    import optuna
    from ray import tune

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/optuna.db")
    s = StudySearch(metric="best_score", mode="max", storage=storage, study_name="s-cb", seed=0)
    s.set_search_properties(None, None, {"base": "{}", "lr": tune.loguniform(1e-3, 1.0)})
    return s


def snapshot(s: StudySearch, tmp_path) -> dict:
    """What Tune saves with its experiment state: the searcher's pickle."""
    path = tmp_path / "searcher-state.pkl"
    s.save(str(path))
    return {"path": str(path)}


def restored(tmp_path, snap: dict, trials: dict) -> StudySearch:
    """A fresh driver's searcher restored from ``snap``, reconciled with Tune's ``trials``."""
    s = searcher(tmp_path)
    s.restore(snap["path"])
    s.reconcile(trials)
    return s


def states(s: StudySearch) -> list[str]:
    return [t.state.name for t in s._ot_study.get_trials(deepcopy=False)]


def test_trials_asked_or_told_after_the_snapshot(tmp_path):
    s = searcher(tmp_path)
    a, b = s.suggest("a"), s.suggest("b")
    snap = snapshot(s, tmp_path)  # Tune's last snapshot: a and b running
    s.on_trial_result("a", {"best_score": 0.5, "training_iteration": 1})
    s.on_trial_complete("a", {"best_score": 0.5})  # a ended after it
    c = s.suggest("c")  # c was asked after it: no restored Ray trial runs it
    assert states(s) == ["COMPLETE", "RUNNING", "RUNNING"]

    r = restored(tmp_path, snap, {"a": a, "b": b})
    # c is queued again; a is known to be finished, so its re-run is not told again (Ray's
    # OptunaSearch raised UpdateFinishedTrialError here and the resumed search died)
    assert states(r) == ["COMPLETE", "RUNNING", "WAITING"]
    r.on_trial_result("a", {"best_score": 0.6, "training_iteration": 2})
    r.on_trial_complete("a", {"best_score": 0.6})
    # the next new Ray trial runs c's parameters: no new Optuna trial
    assert r.suggest("d") == c
    r.on_trial_complete("b", {"best_score": 0.1})
    r.on_trial_complete("d", {"best_score": 0.2})
    study = r._ot_study
    assert [(t.state.name, t.value) for t in study.trials] == [("COMPLETE", 0.5), ("COMPLETE", 0.1), ("COMPLETE", 0.2)]
    assert [t.params["lr"] for t in study.trials] == [a["lr"], b["lr"], c["lr"]]


def test_torn_snapshot_trusts_tunes_trial_list(tmp_path):
    """The searcher pickle and the trial list are copied to storage file by file: a kill in
    between leaves one older than the other. Tune restores its trial list; the searcher follows."""
    s = searcher(tmp_path)
    a = s.suggest("a")
    snap = snapshot(s, tmp_path)  # the searcher's pickle knows a only
    b = s.suggest("b")  # ... Tune's trial list knows a and b
    r = restored(tmp_path, snap, {"a": a, "b": b})
    assert states(r) == ["RUNNING", "RUNNING"]  # b is adopted, not queued for another trial
    r.on_trial_result("b", {"best_score": 0.3, "training_iteration": 1})
    r.on_trial_complete("b", {"best_score": 0.3})
    assert states(r) == ["RUNNING", "COMPLETE"]

    # the other way round: the pickle knows a Ray trial that Tune's trial list lost
    s2 = restored(tmp_path, snapshot(r, tmp_path), {})
    assert states(s2) == ["WAITING", "COMPLETE"]
    assert s2.suggest("e") == a
    s2.on_trial_result("gone", {"best_score": 0.0, "training_iteration": 1})  # unknown trial: ignored


def test_experiment_trials_reads_the_newest_snapshot(tmp_path):
    assert experiment_trials(str(tmp_path)) is None
    for stamp, trials in (("2026-01-01_00-00-00", ["a"]), ("2026-01-02_00-00-00", ["a", "b"])):
        data = [[json.dumps({"trial_id": t, "evaluated_params": {"lr": 0.1}, "status": "RUNNING"}), "{}"] for t in trials]
        (tmp_path / f"experiment_state-{stamp}.json").write_text(json.dumps({"trial_data": data, "runner_data": {}}))
    assert experiment_trials(str(tmp_path)) == {"a": {"lr": 0.1}, "b": {"lr": 0.1}}
    (tmp_path / "experiment_state-2026-01-03_00-00-00.json").write_text("{torn")
    assert experiment_trials(str(tmp_path)) is None  # unreadable: the caller changes nothing


def test_drop_lost_runs_ends_and_hides_them(tmp_path):
    from mlflow.entities import ViewType

    from trainables.tracking import PARENT, TRIAL_ID, child_statuses, client_for, drop_lost_runs, start_parent

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    parent = start_parent(uri, "e", "s", "s.yaml")
    client = client_for(uri)
    exp = client.get_run(parent).info.experiment_id
    for trial, task, status in (("kept", "cb", "running"), ("lost", "cb", "running"), ("done", "cb", "finished"), ("other", "rte", "running")):
        client.create_run(exp, tags={PARENT: parent, TRIAL_ID: trial, "task": task, "status": status})
    assert drop_lost_runs(uri, parent, "cb", {"kept"}) == ["lost"]
    assert sorted(child_statuses(uri, parent)) == [("cb", "finished"), ("cb", "running"), ("rte", "running")]
    (gone,) = [r for r in client.search_runs([exp], run_view_type=ViewType.DELETED_ONLY)]
    assert gone.data.tags[TRIAL_ID] == "lost" and gone.data.tags["status"] == "lost" and gone.info.status == "KILLED"


@pytest.mark.parametrize("with_prompt", [True, False])
def test_stopped_result(tmp_path, with_prompt):
    import torch
    from safetensors.torch import save_file

    from trainables.tracking import stopped_result

    records = [
        {"step": 2, "epoch": 1.0, "examples": 16, "score": 0.5, "best_score": 0.5},
        {"step": 4, "epoch": 2.0, "examples": 32, "score": 0.7, "best_score": 0.7},
        {"step": 6, "epoch": 3.0, "examples": 48, "score": 0.7, "best_score": 0.7},
    ]
    prompt = tmp_path / "prompt.safetensors"
    if with_prompt:
        save_file({"prompt": torch.zeros(2, 3)}, prompt, metadata={"step": "6", "trainable_parameters": "6"})
    result = stopped_result(records, prompt)
    assert result["status"] == "stopped" and "ASHA" in result["message"]
    assert (result["best_score"], result["best_step"], result["best_epoch"]) == (0.7, 4, 2.0)  # the first best, as the Trainer counts
    assert (result["steps"], result["examples"]) == (6, 48)
    assert result["trainable_parameters"] == (6 if with_prompt else None)


def test_search_trials_ignore_the_prompt_flag():
    from trainables.spec.trial_config import BASE_KEY, PROMPT_EVERY_EVAL_KEY, members_of

    base = {"task": "cb", "model": "tiny-t5", "method": "superpos", "m": 4}
    (member,) = members_of({BASE_KEY: json.dumps(base), "lr": 0.05, PROMPT_EVERY_EVAL_KEY: True}, "abc")
    assert member.id == "abc" and member.config.lr == 0.05


def test_pickled_searcher_is_a_study_search(tmp_path):
    """Tune pickles the searcher into tuner.pkl: Tuner.restore gets StudySearch back."""
    s = searcher(tmp_path)
    assert isinstance(pickle.loads(pickle.dumps(s)), StudySearch)
