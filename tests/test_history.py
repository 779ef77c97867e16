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
