"""cluster.yaml validates against the cluster-config JSON schema shipped in the installed ray."""

import json
from pathlib import Path

import jsonschema
import ray.autoscaler
import yaml

CLUSTER = Path(__file__).resolve().parent.parent / "cluster.yaml"


def config() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def test_validates_against_rays_schema():
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config(), schema)


def test_a100_workers_spot_option_and_bounds():
    c = config()
    workers = {k: v for k, v in c["available_node_types"].items() if k != c["head_node_type"]}
    assert all(v["node_config"]["machineType"] == "a2-highgpu-1g" and v["resources"]["GPU"] == 1 for v in workers.values())
    assert any(s.get("provisioningModel") == "SPOT" for v in workers.values() for s in v["node_config"].get("scheduling", []))
    assert all(0 <= v["min_workers"] <= v["max_workers"] <= c["max_workers"] for v in workers.values())
    assert c["available_node_types"][c["head_node_type"]]["resources"] == {"CPU": 0}  # no trials on the head


def test_image_install_and_private_services():
    c = config()
    image = c["docker"]["image"]
    assert image.startswith("rayproject/ray:") and "-cu" in image and "ray-ml" not in image
    assert any("pip install" in cmd and "/home/ray/superpos" in cmd for cmd in c["setup_commands"])
    start = " ".join(c["head_start_ray_commands"])
    assert "mlflow server --host 127.0.0.1" in start and "sqlite:////home/ray/mlflow/mlflow.db" in start
    assert "0.0.0.0" not in CLUSTER.read_text() and "--dashboard-host=127.0.0.1" in start
    assert "gs://" in CLUSTER.read_text()  # storage path and artifacts on cloud storage
