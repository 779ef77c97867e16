"""What `superpos sweep` / `superpos search` refuse before launch (trainables/guards.py), and
what `--resume` refuses to load (issue 11, faults 2, 3, 7, 11)."""

import json
import pickle
import re

import pytest
import yaml

from superpos.cli import main
from superpos.errors import ConfigError
from trainables import guards
from trainables.spec import Resources, parse_spec, write_best

BASE = {"task": "cb", "model": "tiny-t5", "method": "superpos", "m": 8, "batch_size": 8, "max_train_examples": 16, "max_eval_examples": 8, "device": "cpu"}


def write_spec(tmp_path, **kw) -> str:
    raw = {"name": "g", "experiment": "guards", "base": dict(BASE), "epochs": 1,
           "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "storage_path": str(tmp_path / "ray"), **kw}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.mark.parametrize("key", ["name", "experiment"])
@pytest.mark.parametrize("value", ["../../x", "a/b", "..", "a\\b", "/abs", "", ".hidden", "a b", "x..y"])
def test_unsafe_names_are_refused(key, value):
    raw = {"name": "ok", "experiment": "ok", key: value}
    with pytest.raises(ConfigError, match=f"key '{key}'.*not a safe name"):
        parse_spec(raw, "test.yaml")


def test_safe_names_stay_one_folder_under_the_storage_path(tmp_path):
    from trainables.sweep_state import RunOptions, sweep_root

    for name in ("smoke", "table1", "optuna_lr_m", "a.b-c_9"):
        spec = parse_spec({"name": name, "experiment": "e", "storage_path": str(tmp_path)}, "test.yaml")
        root = sweep_root(spec, RunOptions())
        assert root == str(tmp_path / name)
        assert sweep_root(spec, RunOptions(storage_path="s3://bucket/runs")) == f"s3://bucket/runs/{name}"


class Planted:
    """A pickle that, once loaded, writes a marker file (a stand-in for os.system)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_resume_refuses_a_record_that_does_not_match_the_spec(tmp_path, fixture_data_dir):
    spec = write_spec(tmp_path)
    root = tmp_path / "ray" / "g"
    (root / "grid").mkdir(parents=True)
    marker = tmp_path / "pwned"
    (root / "grid" / "tuner.pkl").write_bytes(pickle.dumps(Planted(marker)))
    record = {"parent_run_id": "x", "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "experiment": "guards", "spec": spec, "spec_sha256": "0" * 64}
    (root / "superpos_sweep.json").write_text(json.dumps(record))
    args = ["sweep", spec, "--resume", "--data-dir", str(fixture_data_dir)]
    assert main(args) == 2
    assert not marker.exists()
    # a record without a fingerprint (planted, or from another tool) is refused too
    del record["spec_sha256"]
    (root / "superpos_sweep.json").write_text(json.dumps(record))
    assert main(args) == 2 and not marker.exists()


def test_fingerprint_ignores_where_a_sweep_runs_but_not_what_it_runs():
    a = parse_spec({"name": "n", "experiment": "e", "base": dict(BASE), "storage_path": "/x", "tracking_uri": "sqlite:///a.db"}, "a.yaml")
    b = parse_spec({"name": "n", "experiment": "e", "base": dict(BASE), "storage_path": "s3://b/y", "tracking_uri": "http://h"}, "b/b.yaml")
    trials = [m.config.flat() for m in a.members("/data1")]
    assert guards.fingerprint(a, trials) == guards.fingerprint(b, [m.config.flat() for m in b.members("/data2")])
    c = parse_spec({"name": "n", "experiment": "e", "base": dict(BASE, m=16)}, "a.yaml")
    assert guards.fingerprint(c, [m.config.flat() for m in c.members()]) != guards.fingerprint(a, trials)


@pytest.mark.parametrize(("extra", "message"), [
    ({"grid": {"lr": [0.01, float("inf")]}}, r"lr must be a finite number > 0, got inf"),
    ({"grid": {"m": [8, 100000]}}, r"key 'm': m = 100000 exceeds the vocabulary of tiny-t5 \(30522 real tokens\); allowed: 1..30522"),
    ({"grid": {"lr": [10.0 ** -k for k in range(1, 12)], "seed": list(range(100))}}, r"1100 trials .*pass --yes"),
    ({"scheduler": {"type": "asha", "grace_period": 3}, "epochs": 2}, r"scheduler.grace_period = 3 exceeds epochs = 2"),
])
def test_refused_before_launch_with_no_state(tmp_path, fixture_data_dir, capsys, extra, message):
    spec = write_spec(tmp_path, **extra)
    assert main(["sweep", spec, "--data-dir", str(fixture_data_dir)]) == 2
    assert re.search(message, capsys.readouterr().err), message
    assert not (tmp_path / "ray").exists() and not (tmp_path / "mlflow.db").exists()


def test_search_m_space_beyond_the_vocabulary_is_refused(tmp_path, fixture_data_dir, capsys):
    spec = write_spec(tmp_path, search="optuna", space={"m": {"lograndint": [1, 65536]}}, num_samples=2)
    assert main(["search", spec, "--data-dir", str(fixture_data_dir)]) == 2
    assert "key 'space.m': m = 65536 exceeds the vocabulary" in capsys.readouterr().err


def test_search_lr_space_with_a_non_positive_value_is_refused(tmp_path, fixture_data_dir, capsys):
    spec = write_spec(tmp_path, search="optuna", space={"lr": {"uniform": [-1, 1]}}, num_samples=2)
    assert main(["search", spec, "--data-dir", str(fixture_data_dir)]) == 2
    assert "lr must be a finite number > 0, got -1" in capsys.readouterr().err
    assert not (tmp_path / "ray").exists()


def test_search_grace_period_beyond_epochs_names_both_flags(tmp_path, fixture_data_dir, capsys):
    args = ["search", "--task", "cb", "--epochs", "3", "--num-samples", "2", "--storage-path", str(tmp_path / "ray"),
            "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--data-dir", str(fixture_data_dir)]
    assert main(args) == 2  # the default --grace-period is 5
    err = capsys.readouterr().err
    assert "--grace-period = 5 exceeds --epochs = 3" in err and "allowed: --grace-period in 1..3" in err
    assert not (tmp_path / "ray").exists()


def test_resources_no_cluster_can_place(monkeypatch, capsys):
    import ray

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    guards.check_resources(Resources(cpu=2), local=True, source="s.yaml")  # fits
    with pytest.raises(ConfigError, match=r"key 'resources': one trial needs cpu 1000 \(cluster has 2\)"):
        guards.check_resources(Resources(cpu=1000), local=True, source="s.yaml")
    guards.check_resources(Resources(cpu=1, gpu=1), local=False, source="s.yaml")  # an autoscaler may add one
    assert "gpu 1 (cluster has 0)" in capsys.readouterr().err


def test_best_file_names_no_winner_for_a_tied_study(tmp_path):
    path = tmp_path / "best.yaml"
    write_best(path, "superpos", "tiny-t5", {"rte": {"lr": 0.01}, "cb": {"lr": 0.1}}, "s")
    write_best(path, "superpos", "tiny-t5", {}, "s", {"cb": "all 3 trials tied at best_score = 0.0: no best values"})
    data = yaml.safe_load(path.read_text())
    assert data["per_task"] == {"rte": {"lr": 0.01}} and "cb" in data["tied"]
    write_best(path, "superpos", "tiny-t5", {"cb": {"lr": 0.2}}, "s")  # a later search with a winner
    data = yaml.safe_load(path.read_text())
    assert data["per_task"]["cb"] == {"lr": 0.2} and "tied" not in data
