"""Every node gets what a trial needs (trainables/nodes.py): task files from a bucket, fetched
once per node by trials that start together, and a node that runs another superpos than the
driver refused. S3 is moto's server on 127.0.0.1 (AWS_ENDPOINT_URL), as in the README recipe;
the GET requests it served are read from its recorder."""

import hashlib
import json
import os
import subprocess
import sys
import urllib.request

import pytest
import yaml

from superpos.cli import main

pytestmark = [pytest.mark.slow]

BASE = {"model": "tiny-t5", "method": "superpos", "m": 8, "batch_size": 8, "max_train_examples": 8, "max_eval_examples": 4, "device": "cpu"}


@pytest.fixture(scope="module")
def s3_bucket(data_dir, tmp_path_factory):
    """moto's S3 on 127.0.0.1 holding cb whole and rte without its validation file; a local
    Ray started after the AWS variables and a private SUPERPOS_CACHE are set (its workers
    inherit them)."""
    import boto3
    import ray
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    cache = tmp_path_factory.mktemp("node") / "cache"
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "SUPERPOS_CACHE": str(cache)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
        client.create_bucket(Bucket="glue")
        for f in [*(data_dir / "cb").iterdir(), data_dir / "rte" / "train.tsv"]:
            client.upload_file(str(f), "glue", f"data/{f.parent.name}/{f.name}")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        yield env | {"cache": cache}
    finally:
        ray.shutdown()
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def recorded_gets(endpoint: str, name: str) -> int:
    """GETs of object ``name`` since the recorder was (re)started."""
    lines = urllib.request.urlopen(f"{endpoint}/moto-api/recorder/download-recording").read().decode().splitlines()
    return sum(1 for r in map(json.loads, lines) if r["method"] == "GET" and r["url"].split("?")[0].endswith(f"/{name}"))


def restart_recorder(endpoint: str) -> None:
    for action in ("stop-recording", "reset-recording", "start-recording"):
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/recorder/{action}", method="POST")).read()


FETCH = """
import hashlib, json, sys
from superpos.config import TrainConfig
from trainables.nodes import prepare_node
config = prepare_node(TrainConfig(task="cb", data_dir="s3://glue/data"))
files = sorted((p.name, hashlib.sha256(p.read_bytes()).hexdigest()) for p in (__import__("pathlib").Path(config.data_dir) / "cb").iterdir())
print(json.dumps({"data_dir": config.data_dir, "files": files}))
"""


def fetch_on_this_node(n: int) -> list[dict]:
    """``n`` trials starting at once on this node (one process each), as Ray starts them."""
    procs = [subprocess.Popen([sys.executable, "-c", FETCH], stdout=subprocess.PIPE, text=True) for _ in range(n)]
    try:
        outs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert all(p.returncode == 0 for p in procs), outs
    return [json.loads(o.splitlines()[-1]) for o in outs]


def test_trials_starting_together_fetch_each_file_once_and_read_it_whole(s3_bucket, data_dir):
    endpoint = s3_bucket["AWS_ENDPOINT_URL"]
    restart_recorder(endpoint)
    seen = fetch_on_this_node(4)
    expected = sorted((p.name, hashlib.sha256(p.read_bytes()).hexdigest()) for p in (data_dir / "cb").iterdir())
    local = s3_bucket["cache"] / "data" / "s3" / "glue" / "data"
    assert all(s == {"data_dir": str(local), "files": [list(e) for e in expected]} for s in seen), seen
    assert [recorded_gets(endpoint, name) for name, _ in expected] == [1] * len(expected)
    assert not list(local.rglob("*.part"))

    # a later trial on this node fetches nothing; a damaged local copy is fetched again
    restart_recorder(endpoint)
    fetch_on_this_node(1)
    assert sum(recorded_gets(endpoint, name) for name, _ in expected) == 0
    (local / "cb" / "train.jsonl").write_text("{\n")
    (again,) = fetch_on_this_node(1)
    assert again["files"] == [list(e) for e in expected]
    assert recorded_gets(endpoint, "train.jsonl") == 1 and recorded_gets(endpoint, "validation.jsonl") == 0


def runs(uri: str, experiment: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    found = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=100)
    return [r for r in found if r.data.tags.get("superpos.role") == "trial"]


def test_a_sweep_reads_its_data_from_a_bucket_and_a_missing_file_fails_once(s3_bucket, tmp_path):
    import ray

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    raw = {"name": "bucket", "experiment": "bucket", "base": BASE, "epochs": 1, "grid": {"task": ["cb", "rte"]}, "max_failures": 3,
           "resources": {"cpu": 1}, "tracking_uri": uri, "storage_path": str(tmp_path / "ray")}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(raw))
    assert main(["sweep", str(tmp_path / "spec.yaml"), "--data-dir", "s3://glue/data"]) == 1

    by_task = {r.data.tags["task"]: r for r in runs(uri, "bucket")}
    node = ray.util.get_node_ip_address()
    assert by_task["cb"].info.status == "FINISHED" and by_task["cb"].data.tags["status"] == "finished"
    assert by_task["cb"].data.params["data_dir"] == "s3://glue/data"  # the run records where the data lives
    assert by_task["cb"].data.tags["superpos.node"] == node == by_task["cb"].data.tags["superpos.nodes"]
    rte = by_task["rte"]
    assert rte.info.status == "FAILED" and rte.data.tags["status"] == "failed"
    error = rte.data.tags["superpos.error"]
    assert f"node {node}" in error and "s3://glue/data/rte/validation.tsv" in error, error
    # failed once: the trial reported once and never errored (not retried max_failures times)
    (trial_dir,) = [d for d in (tmp_path / "ray" / "bucket" / "grid").iterdir() if d.is_dir() and rte.data.tags["superpos.group"] in d.name]
    assert len((trial_dir / "result.json").read_text().splitlines()) == 1 and not (trial_dir / "error.txt").exists()


def test_a_node_with_another_superpos_is_refused_naming_both_versions(s3_bucket, data_dir, tmp_path, monkeypatch):
    from superpos.environment import lock_hash
    from trainables import nodes

    # the driver runs a newer superpos than the (only) node: the node is the stale one
    monkeypatch.setattr(nodes, "package_versions", lambda: {"superpos": "9.9.9", "lock_sha256": "f" * 64})
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    raw = {"name": "stale", "experiment": "stale", "base": dict(BASE, task="cb"), "epochs": 1, "max_failures": 3,
           "resources": {"cpu": 1}, "tracking_uri": uri, "storage_path": str(tmp_path / "ray")}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(raw))
    assert main(["sweep", str(tmp_path / "spec.yaml"), "--data-dir", str(data_dir)]) == 1
    (run,) = runs(uri, "stale")
    error = run.data.tags["superpos.error"]
    assert run.info.status == "FAILED" and error.startswith("stale node "), error
    assert "9.9.9" in error and "f" * 64 in error and lock_hash() in error and "0.1.0" in error, error
    assert not list((tmp_path / "ray" / "stale" / "grid").glob("*/error.txt"))  # refused once, not retried
