"""The soak's services, each a real process on 127.0.0.1: moto's S3 server, an ``mlflow server``
over HTTP, and a Ray cluster of a head and worker nodes, each node a separate ``ray start --block``
(its own session: SIGKILL or SIGSTOP of a node reaches all of its processes). Readiness is an
event each time: an HTTP answer, or ``ray start``'s "Ray runtime started" line in the node's log."""

from __future__ import annotations

import socket
import sys
import urllib.request
from pathlib import Path

from soak.processes import Processes, Started, wait_for

BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
BUCKET = "soak"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status < 500
    except OSError:
        return False


class Services:
    """Ports are chosen once: a restarted server or node comes back where it was."""

    def __init__(self, procs: Processes, work: Path, env: dict[str, str]):
        self.procs, self.work, self.env = procs, work, env
        self.s3_port, self.mlflow_port, self.gcs_port = free_port(), free_port(), free_port()
        self.s3_url = f"http://{HOST}:{self.s3_port}"
        self.tracking_uri = f"http://{HOST}:{self.mlflow_port}"
        self.address = f"{HOST}:{self.gcs_port}"
        # Ray's unix sockets need a short path
        self.ray_tmp = Path(f"/tmp/soak-{self.gcs_port}")
        self.s3: Started | None = None
        self.mlflow: Started | None = None
        self.head: Started | None = None
        self.workers: dict[str, Started] = {}
        self._starts = 0

    # -- S3 --------------------------------------------------------------------------------
    def start_s3(self) -> None:
        self.s3 = self.procs.start("s3", [str(BIN / "moto_server"), "-H", HOST, "-p", str(self.s3_port)], self.env)
        wait_for(lambda: answers(f"{self.s3_url}/moto-api/"), 120, "the S3 server")
        import boto3

        boto3.client("s3", endpoint_url=self.s3_url, aws_access_key_id="testing", aws_secret_access_key="testing",
                     region_name="us-east-1").create_bucket(Bucket=BUCKET)

    # -- MLflow ----------------------------------------------------------------------------
    def start_mlflow(self) -> None:
        cmd = [str(BIN / "mlflow"), "server", "--host", HOST, "--port", str(self.mlflow_port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{self.work}/mlflow.db", "--artifacts-destination", str(self.work / "mlflow-artifacts")]
        self.mlflow = self.procs.start("mlflow", cmd, self.env)
        wait_for(lambda: answers(f"{self.tracking_uri}/health"), 180, "the MLflow server")

    # -- Ray -------------------------------------------------------------------------------
    def _ports(self) -> list[str]:
        """Every listening port of a node chosen free: other Ray clusters may run on this machine."""
        names = ("node-manager", "object-manager", "metrics-export", "dashboard-agent-listen", "dashboard-agent-grpc", "runtime-env-agent")
        return [a for n in names for a in (f"--{n}-port", str(free_port()))] + ["--object-store-memory", str(100 * 2**20)]

    def _ray_start(self, name: str, args: list[str]) -> Started:
        log = self.procs.log_dir / f"{name}.log"
        offset = log.stat().st_size if log.exists() else 0
        entry = self.procs.start(name, [str(BIN / "ray"), "start", "--block", "--node-ip-address", HOST, "--disable-usage-stats", *self._ports(), *args], self.env)

        def started():
            if entry.proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({entry.proc.returncode}): {log.read_text()[-2000:]}")
            return "Ray runtime started" in log.read_text(errors="replace")[offset:]

        wait_for(started, 240, f"Ray node {name}")
        return entry

    def start_head(self) -> None:
        self.head = self._ray_start("ray-head", ["--head", "--port", str(self.gcs_port), "--num-cpus", "0", "--include-dashboard", "false", "--temp-dir", str(self.ray_tmp)])

    def start_worker(self, slot: str) -> Started:
        self._starts += 1
        self.workers[slot] = self._ray_start(f"ray-{slot}-{self._starts}", ["--address", self.address, "--num-cpus", "1"])
        return self.workers[slot]
