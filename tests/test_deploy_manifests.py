"""The launch files under deploy/ that no machine here can run for real are validated: the
KubeRay manifests against KubeRay v1.7.0's own CRD schemas (strictly: an unknown field fails,
as with `kubectl apply --validate=strict`), their entrypoints by superpos's own CLI parser, the
Dockerfile's Ray image against the lock, and the on-prem config against Ray's cluster schema."""

import copy
import json
import re
import shlex
import subprocess
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml

from superpos.cli import build_parser
from superpos.environment import read_lock

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
KUBERAY = REPO.parent / "shared" / "reference" / "kuberay-v1.7.0"
CRDS = {"RayJob": "ray.io_rayjobs.yaml", "RayCluster": "ray.io_rayclusters.yaml"}


def strict(schema):
    """The CRD's OpenAPI v3 schema with unknown fields refused: Kubernetes prunes them (or, with
    strict field validation, refuses them); jsonschema would let them pass."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def crd_schema(kind: str) -> dict:
    if not (KUBERAY / CRDS[kind]).is_file():
        pytest.skip(f"KubeRay v1.7.0 CRDs not found at {KUBERAY}")
    crd = yaml.safe_load((KUBERAY / CRDS[kind]).read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return strict(version["schema"]["openAPIV3Schema"])


def manifest(name: str) -> dict:
    return yaml.safe_load((DEPLOY / "kuberay" / name).read_text())


@pytest.mark.parametrize("name", ["rayjob.yaml", "raycluster.yaml"])
def test_kuberay_manifests_validate_against_the_crds(name):
    doc = manifest(name)
    assert doc["apiVersion"] == "ray.io/v1"
    jsonschema.validate(doc, crd_schema(doc["kind"]))


@pytest.mark.parametrize("path, wrong", [
    (("spec",), "shutdownAfterJobFinish"),  # for shutdownAfterJobFinishes
    (("spec", "rayClusterSpec", "workerGroupSpecs", 0), "maxReplica"),  # for maxReplicas
    (("spec", "rayClusterSpec", "headGroupSpec", "template", "spec", "containers", 0), "resource"),  # for resources
])
def test_a_misspelt_field_fails_validation(path, wrong):
    doc = copy.deepcopy(manifest("rayjob.yaml"))
    node = doc
    for key in path:
        node = node[key]
    right = next(k for k in node if k.startswith(wrong))
    node[wrong] = node.pop(right)
    with pytest.raises(jsonschema.ValidationError, match=wrong):
        jsonschema.validate(doc, crd_schema("RayJob"))


def test_rayjob_runs_a_sweep_in_a_cpu_head_and_gpu_workers_cluster_then_shuts_it_down():
    job = manifest("rayjob.yaml")["spec"]
    assert job["shutdownAfterJobFinishes"] is True
    cluster = job["rayClusterSpec"]
    assert cluster["rayVersion"] == read_lock(REPO / "requirements.lock")["ray"]
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert not any("nvidia.com/gpu" in c["resources"].get("limits", {}) for c in head["template"]["spec"]["containers"])
    (workers,) = cluster["workerGroupSpecs"]
    assert all(c["resources"]["limits"]["nvidia.com/gpu"] == "1" for c in workers["template"]["spec"]["containers"])

    # the entrypoint is a command superpos's own parser accepts, with bucket storage and the
    # MLflow Service as its tracking URI
    argv = shlex.split(job["entrypoint"])
    assert argv[:2] == ["superpos", "sweep"]
    args = build_parser().parse_args(argv[1:])
    assert args.func.__name__ == "sweep" and args.address == "auto"
    assert all((REPO / s).is_file() for s in args.spec)
    assert args.storage_path.startswith("gs://") and args.data_dir.startswith("gs://")
    services = [d for d in yaml.safe_load_all((DEPLOY / "kuberay" / "mlflow.yaml").read_text()) if d["kind"] == "Service"]
    (svc,) = services
    assert svc["spec"]["type"] == "ClusterIP"
    assert args.tracking_uri == f"http://{svc['metadata']['name']}:{svc['spec']['ports'][0]['port']}"


def test_rayjob_misspelt_option_in_the_entrypoint_is_refused_by_the_parser():
    argv = shlex.split(manifest("rayjob.yaml")["spec"]["entrypoint"].replace("--storage-path", "--storage-pth"))
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv[1:])


def test_dockerfile_image_has_the_locks_ray_and_python():
    text = (DEPLOY / "Dockerfile").read_text()
    (image,) = re.findall(r"^FROM (\S+)", text, flags=re.M)
    m = re.fullmatch(r"rayproject/ray:(?P<ray>[\d.]+)-py(?P<py>\d)(?P<minor>\d+)-cu(?P<cuda>\d+)", image)
    assert m, image
    lock = (REPO / "requirements.lock").read_text()
    assert m["ray"] == read_lock(REPO / "requirements.lock")["ray"]
    python = re.search(r"Python (\d+)\.(\d+)", lock)
    assert (m["py"], m["minor"]) == python.groups()
    assert "grep -v '^torch==' requirements.lock" in text and "-c /tmp/requirements-gpu.lock" in text and f"torch=={read_lock(REPO / 'requirements.lock')['torch'].split('+')[0]}" in text
    assert f"cu{m['cuda']}" in text.split("FROM", 1)[1].split("\n", 1)[1]  # torch built for the image's CUDA


def test_onprem_config_validates_against_rays_schema_and_installs_with_the_lock():
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    config = yaml.safe_load((DEPLOY / "onprem" / "cluster.yaml").read_text())
    jsonschema.validate(config, schema)
    # what `ray up` does first: a local config naming node types is refused here, not by the schema
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(config))
    assert config["provider"]["type"] == "local" and config["provider"]["head_ip"] and config["provider"]["worker_ips"]
    setup = " ".join(config["setup_commands"])
    assert "grep -v '^torch==' /home/ray/superpos/requirements.lock > /home/ray/requirements-gpu.lock" in setup
    assert "pip install -q -e /home/ray/superpos -c /home/ray/requirements-gpu.lock" in setup
    start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start and "mlflow server --host 127.0.0.1" in start and "0.0.0.0" not in start
    # the same shape as the GCP config: ray stop, then ray start with the autoscaling config
    gcp = yaml.safe_load((REPO / "cluster.yaml").read_text())
    assert [c.split()[0].rsplit("/", 1)[-1] for c in config["worker_start_ray_commands"]] == ["ray", "ulimit"] == [
        c.split()[0] for c in gcp["worker_start_ray_commands"]]


def test_sbatch_script_is_valid_bash_with_a_clean_stop_before_the_time_limit():
    script = DEPLOY / "slurm" / "superpos.sbatch"
    subprocess.run(["bash", "-n", str(script)], check=True)
    directives = re.findall(r"^#SBATCH (\S+)", script.read_text(), flags=re.M)
    assert any(d.startswith("--signal=B:USR1@") for d in directives) and "--requeue" in directives
