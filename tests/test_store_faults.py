"""Two sweeps started at once on a new sqlite MLflow store both finish (issue 11, fault 8:
one used to crash in MLflow's schema migration): the store and the experiment are created
under a file lock (trainables/store.py)."""

import subprocess
import sys

import pytest
import yaml

pytestmark = [pytest.mark.faults, pytest.mark.slow]


def test_two_sweeps_start_together_on_a_new_store(data_dir, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    procs = []
    for name in ("one", "two"):
        spec = {"name": name, "experiment": "together", "epochs": 1, "resources": {"cpu": 1}, "tracking_uri": uri, "storage_path": str(tmp_path / "ray"),
                "base": {"task": "cb", "model": "tiny-t5", "method": "simple", "batch_size": 8, "max_train_examples": 8, "max_eval_examples": 4, "device": "cpu"}}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(spec))
        cmd = [sys.executable, "-m", "superpos.cli", "sweep", str(tmp_path / f"{name}.yaml"), "--data-dir", str(data_dir)]
        procs.append(subprocess.Popen(cmd, stdout=open(tmp_path / f"{name}.log", "w"), stderr=subprocess.STDOUT))
    codes = [p.wait(300) for p in procs]
    assert codes == [0, 0], [(tmp_path / f"{n}.log").read_text()[-3000:] for n in ("one", "two")]
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("together").experiment_id])
    parents = {r.data.tags["superpos.sweep"]: r.info.status for r in runs if r.data.tags.get("superpos.role") == "sweep"}
    assert parents == {"one": "FINISHED", "two": "FINISHED"}
    assert sorted(r.data.tags["sweep"] for r in runs if r.data.tags.get("superpos.role") == "trial") == ["one", "two"]
