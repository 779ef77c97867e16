"""Metric histories of many MLflow runs, read fast: bulk queries and a cache of ended runs.

``MlflowClient.get_metric_history`` answers one run and one key a call: 600 runs x 8 metrics
are 4,800 calls, each a round trip through a tracking server. Instead:

* SQL stores (``sqlite:///``, ``postgresql://``, ...): one query for every metric of up to
  ``SQL_CHUNK`` runs, on MLflow's own ``metrics`` table model (``_sql_bulk``);
* tracking servers (``http(s)://``), per metric key: the server's bulk endpoint
  ``GET /ajax-api/2.0/mlflow/metrics/get-history-bulk`` (what the MLflow UI's charts use), up
  to 100 runs a request (the server's limit) and 25,000 values an answer, 4 requests at a time
  (``mlflow server`` has 4 workers by default); a chunk whose answer is full is re-read run by
  run, so nothing is cut off;
* any other store: one call per run and key, as before.

Cache: the histories of ended runs (an MLflow status other than RUNNING/SCHEDULED, with an end
time) are kept in one Parquet file per tracking URI and experiment under
``$SUPERPOS_CACHE/mlflow_history/`` (the cache directory of tokenised data, superpos.settings),
keyed by run id and end time. A run that is resumed and ends again has a new end time and is
read again; running runs are always read; runs no longer in the experiment drop out of the file.
``SUPERPOS_MLFLOW_CACHE=0`` turns the cache off.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import pandas as pd

from superpos.settings import cache_dir

COLUMNS = ["run_id", "key", "step", "timestamp", "value"]
TYPES = {"run_id": "object", "key": "object", "step": "int64", "timestamp": "int64", "value": "float64", "end_time": "int64"}
SQL_CHUNK = 500
REST_CHUNK, REST_MAX_RESULTS, REST_THREADS = 100, 25_000, 4
BULK_ENDPOINT = "/ajax-api/2.0/mlflow/metrics/get-history-bulk"
LIVE = ("RUNNING", "SCHEDULED")
CACHE_ENV = "SUPERPOS_MLFLOW_CACHE"


def cache_file(tracking_uri: str, experiment_id: str) -> Path:
    key = hashlib.sha256(f"{tracking_uri}\n{experiment_id}".encode()).hexdigest()[:24]
    return cache_dir() / "mlflow_history" / f"{key}.parquet"


def ended_runs(runs) -> dict[str, int]:
    """run id -> end time of the runs whose histories can no longer change."""
    return {r.info.run_id: r.info.end_time for r in runs if r.info.status not in LIVE and r.info.end_time}


def load_histories(mlflow_client, tracking_uri: str, experiment_id: str, runs, cache: bool | None = None) -> pd.DataFrame:
    """Every logged value of every metric of ``runs``: one row per (run_id, key, step, timestamp, value)."""
    if cache is None:
        cache = os.environ.get(CACHE_ENV, "1") != "0"
    ended = ended_runs(runs)
    path = cache_file(tracking_uri, experiment_id)
    cached = _read_cache(path, ended) if cache else _frame([], [*COLUMNS, "end_time"])
    have = set(cached["run_id"])
    todo = {r.info.run_id: list(r.data.metrics) for r in runs if r.info.run_id not in have}
    fetched = fetch(mlflow_client, todo)
    if cache and set(todo) & set(ended):
        fresh = fetched[fetched["run_id"].isin(ended)].assign(end_time=lambda f: f["run_id"].map(ended))
        _write_cache(path, pd.concat([cached, fresh], ignore_index=True))
    return pd.concat([cached[COLUMNS], fetched], ignore_index=True).astype({c: TYPES[c] for c in COLUMNS})


def _frame(rows, columns) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=columns).astype({c: TYPES[c] for c in columns})


def _read_cache(path: Path, ended: dict[str, int]) -> pd.DataFrame:
    try:
        cached = pd.read_parquet(path)
    except (OSError, ValueError):  # absent, or unreadable: read everything again
        return _frame([], [*COLUMNS, "end_time"])
    valid = cached["run_id"].map(ended) == cached["end_time"]
    return cached[valid].reset_index(drop=True)


def _write_cache(path: Path, frame: pd.DataFrame) -> None:
    """Atomic: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def fetch(mlflow_client, metric_keys: dict[str, list[str]]) -> pd.DataFrame:
    """The histories of ``{run_id: [keys]}`` through the store's fastest way (module docstring)."""
    by_key = runs_by_key(metric_keys)
    store = mlflow_client._tracking_client.store
    if hasattr(store, "engine") and hasattr(store, "get_metric_history_bulk"):
        rows = _sql_bulk(store, list(metric_keys))
    elif hasattr(store, "get_host_creds"):
        rows = _rest_bulk(mlflow_client, store, by_key)
    else:
        rows = _one_by_one(mlflow_client, by_key)
    return _frame(rows, COLUMNS)


def runs_by_key(metric_keys: dict[str, list[str]]) -> dict[str, list[str]]:
    """``{run_id: [keys]}`` turned into ``{key: [run_ids]}``: bulk queries go one key at a time."""
    by_key: dict[str, list[str]] = {}
    for run_id, keys in metric_keys.items():
        for key in keys:
            by_key.setdefault(key, []).append(run_id)
    return by_key


def fetch_one_by_one(mlflow_client, metric_keys: dict[str, list[str]]) -> pd.DataFrame:
    """One call per run and key (the benchmark's baseline; what every store supports)."""
    return _frame(_one_by_one(mlflow_client, runs_by_key(metric_keys)), COLUMNS)


def _chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _sql_bulk(store, run_ids: list[str]) -> list[tuple]:
    """Every metric of up to ``SQL_CHUNK`` runs a query, read as plain rows from MLflow's own
    ``metrics`` table model: building one ORM object per value, as ``get_metric_history_bulk``
    does, took 36 of the 47 s of reading 600 runs x 80 evaluations x 8 metrics from sqlite."""
    from mlflow.store.tracking.dbmodels.models import SqlMetric
    from sqlalchemy import select

    m = SqlMetric
    rows = []
    with store.engine.connect() as connection:
        for chunk in _chunks(run_ids, SQL_CHUNK):
            query = select(m.run_uuid, m.key, m.step, m.timestamp, m.value, m.is_nan).where(m.run_uuid.in_(chunk))
            rows += [(r, k, s, t, math.nan if nan else v) for r, k, s, t, v, nan in connection.execute(query)]
    return rows


def _rest_bulk(mlflow_client, store, by_key: dict[str, list[str]]) -> list[tuple]:
    """Requests run ``REST_THREADS`` at a time: the server answers them on its several workers,
    and over a tunnel their latencies overlap."""
    from concurrent.futures import ThreadPoolExecutor

    from mlflow.utils.rest_utils import http_request_safe

    def request(key: str, chunk: list[str]) -> list[tuple]:
        params = [("run_id", r) for r in chunk] + [("metric_key", key), ("max_results", REST_MAX_RESULTS)]
        metrics = http_request_safe(store.get_host_creds(), BULK_ENDPOINT, "GET", params=params).json().get("metrics", [])
        if len(metrics) >= REST_MAX_RESULTS:  # a full answer may be cut off: these runs one by one
            return _one_by_one(mlflow_client, {key: chunk})
        return [(m["run_id"], m["key"], int(m["step"]), int(m["timestamp"]), float(m["value"])) for m in metrics]

    jobs = [(key, chunk) for key, run_ids in by_key.items() for chunk in _chunks(run_ids, REST_CHUNK)]
    with ThreadPoolExecutor(REST_THREADS) as pool:
        return [row for rows in pool.map(lambda job: request(*job), jobs) for row in rows]


def _one_by_one(mlflow_client, by_key: dict[str, list[str]]) -> list[tuple]:
    return [
        (run_id, m.key, m.step, m.timestamp, m.value)
        for key, run_ids in by_key.items()
        for run_id in run_ids
        for m in mlflow_client.get_metric_history(run_id, key)
    ]
