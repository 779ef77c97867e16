"""Bulk metric histories and the cache of ended runs (analysis/history.py)."""

from __future__ import annotations

import time

import pandas as pd
import pytest

from analysis.history import fetch_one_by_one, load_histories


def _log(client, run_id, key_values, step):
    from mlflow.entities import Metric

    client.log_batch(run_id, metrics=[Metric(k, v, int(time.time() * 1000), step) for k, v in key_values.items()])


@pytest.fixture
def store(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.setenv("SUPERPOS_CACHE", str(tmp_path / "cache"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("e", artifact_location=(tmp_path / "a").as_uri())
    ids = [client.create_run(exp).info.run_id for _ in range(3)]
    for i, rid in enumerate(ids):
        for step in (10, 20):
            _log(client, rid, {"score": 0.1 * i + step / 100, "accuracy": step / 50}, step)
    for rid in ids[:2]:
        client.set_terminated(rid, "FINISHED")
    return uri, client, exp, ids


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["run_id", "key", "step", "timestamp"], ignore_index=True)


def _runs(client, exp):
    return client.search_runs([exp])


@pytest.mark.slow
def test_cached_equals_uncached_and_running_runs_are_reread(store):
    uri, client, exp, (done, done2, running) = store
    cold = load_histories(client, uri, exp, _runs(client, exp))
    assert len(cold) == 3 * 2 * 2
    warm = load_histories(client, uri, exp, _runs(client, exp))
    uncached = load_histories(client, uri, exp, _runs(client, exp), cache=False)
    pd.testing.assert_frame_equal(_sorted(warm), _sorted(cold))
    pd.testing.assert_frame_equal(_sorted(uncached), _sorted(cold))
    one_by_one = fetch_one_by_one(client, {r.info.run_id: list(r.data.metrics) for r in _runs(client, exp)})
    pd.testing.assert_frame_equal(_sorted(one_by_one), _sorted(cold))

    # a new value in the running run is read; the ended run's cached history is kept as long
    # as its end time is the same, and read again once it ends anew (a resumed run)
    _log(client, running, {"score": 0.9}, 30)
    _log(client, done, {"score": 0.8}, 30)
    again = load_histories(client, uri, exp, _runs(client, exp))
    assert 30 in set(again.loc[again["run_id"] == running, "step"])
    assert 30 not in set(again.loc[again["run_id"] == done, "step"])
    time.sleep(0.01)
    client.set_terminated(done, "FINISHED")
    resumed = load_histories(client, uri, exp, _runs(client, exp))
    assert 30 in set(resumed.loc[resumed["run_id"] == done, "step"])
    pd.testing.assert_frame_equal(_sorted(resumed), _sorted(load_histories(client, uri, exp, _runs(client, exp), cache=False)))


@pytest.mark.slow
def test_tracking_server_bulk_endpoint_equals_the_sql_store(store, tmp_path, monkeypatch):
    """Through a local ``mlflow server`` (127.0.0.1, a free port): the get-history-bulk path,
    with chunks of one run so that several requests per key are made."""
    from analysis import history
    from analysis.bench_report import start_server, stop_server
    from analysis.runs import client as client_for

    uri, client, exp, _ = store
    monkeypatch.setattr(history, "REST_CHUNK", 1)
    server, url = start_server(uri, tmp_path / "a")
    try:
        remote = client_for(url)
        over_http = load_histories(remote, url, exp, remote.search_runs([exp]), cache=False)
    finally:
        stop_server(server)
    pd.testing.assert_frame_equal(_sorted(over_http), _sorted(load_histories(client, uri, exp, _runs(client, exp), cache=False)))


class FakeClient:
    """A store with neither SQL engine nor REST host: histories one call per run and key, counted."""

    def __init__(self, histories):
        from types import SimpleNamespace

        self.histories, self.calls = histories, []
        self._tracking_client = SimpleNamespace(store=object())

    def get_metric_history(self, run_id, key):
        from mlflow.entities import Metric

        self.calls.append(run_id)
        return [Metric(key, v, 1000 + s, s) for s, v in self.histories[run_id]]


def _run(run_id, status, end_time):
    from types import SimpleNamespace

    return SimpleNamespace(info=SimpleNamespace(run_id=run_id, status=status, end_time=end_time), data=SimpleNamespace(metrics={"score": 0.0}))


def test_cache_keeps_ended_runs_and_rereads_running_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("SUPERPOS_CACHE", str(tmp_path))
    client = FakeClient({"a": [(1, 0.5), (2, 0.6)], "b": [(1, 0.1)]})
    runs = [_run("a", "FINISHED", 100), _run("b", "RUNNING", None)]
    cold = load_histories(client, "uri", "1", runs)
    assert sorted(client.calls) == ["a", "b"]
    client.calls.clear()
    client.histories["b"].append((2, 0.2))
    warm = load_histories(client, "uri", "1", runs)
    assert client.calls == ["b"]  # the running run is read again, the ended one comes from the cache
    assert len(warm) == len(cold) + 1
    pd.testing.assert_frame_equal(_sorted(warm), _sorted(load_histories(client, "uri", "1", runs, cache=False)))
    client.calls.clear()
    client.histories["a"].append((3, 0.7))  # resumed and ended again: a new end time
    again = load_histories(client, "uri", "1", [_run("a", "FINISHED", 200), runs[1]])
    assert sorted(client.calls) == ["a", "b"] and 3 in set(again.loc[again["run_id"] == "a", "step"])
