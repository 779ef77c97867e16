"""The sweep driver's start (issues 18 and 19): a sweep without --address runs on a Ray of its
own, never on one it finds; an unreachable --address or tracking server is named before
anything is written; one driver per storage path (local lock file, S3 lease); a short MLflow
retry budget lets the outbox take over; a damaged tuner.pkl on --resume is named."""

import contextlib
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from superpos.cli import main
from superpos.errors import ConfigError

BASE = {"task": "cb", "model": "tiny-t5", "method": "superpos", "m": 8, "batch_size": 8, "max_train_examples": 16, "max_eval_examples": 8, "device": "cpu"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def write_spec(tmp_path: Path, name: str = "drv", **kw) -> Path:
    raw = {"name": name, "experiment": "driver", "base": dict(BASE), "epochs": 1, "resources": {"cpu": 1},
           "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "storage_path": str(tmp_path / "ray"), **kw}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def sweep_runs(uri: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("driver")
    runs = client.search_runs([exp.experiment_id], max_results=1000) if exp else []
    return client, [r for r in runs if r.data.tags.get("superpos.role") == "sweep"], [r for r in runs if r.data.tags.get("superpos.role") == "trial"]


def driver(tmp_path: Path, spec: Path, data_dir: Path, log: str, *extra, env=None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "superpos.cli", "sweep", str(spec), "--data-dir", str(data_dir), *extra]
    return subprocess.Popen(cmd, stdout=open(tmp_path / log, "w"), stderr=subprocess.STDOUT, env=env or dict(os.environ), start_new_session=True)


def end(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)


# -- Ray: a new local instance unless --address -----------------------------------------------
@pytest.mark.faults
@pytest.mark.slow
def test_sweep_without_address_never_joins_a_running_cluster(tmp_path, fixture_data_dir):
    """A `ray start --head` cluster on the loopback range, advertised to the sweep the way Ray looks for
    one (RAY_ADDRESS, as under `ray job submit`): the sweep runs on a Ray of its own, and the
    cluster's job table holds no job of it."""
    # 127.0.0.2: Ray rewrites 127.0.0.1 in an address to the machine's own IP, where nothing listens
    host, port = "127.0.0.2", free_port()
    address = f"{host}:{port}"
    ports = [str(free_port()) for _ in range(5)]
    ray_bin = Path(sys.executable).parent / "ray"
    temp_dir = tempfile.mkdtemp(prefix="rs-", dir="/tmp")  # Ray's socket paths must stay under 108 bytes
    # `ray start` turns on token authentication: the cluster's token is the test's own
    (Path(temp_dir) / "token").write_text(os.urandom(32).hex())
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=f"{temp_dir}/token")
    head = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--block", "--node-ip-address", host, "--port", str(port), "--num-cpus", "1",
         "--temp-dir", temp_dir, "--include-dashboard", "false", "--disable-usage-stats",
         "--node-manager-port", ports[0], "--object-manager-port", ports[1],
         "--dashboard-agent-listen-port", ports[2], "--dashboard-agent-grpc-port", ports[3], "--runtime-env-agent-port", ports[4]],
        stdout=open(tmp_path / "cluster.log", "w"), stderr=subprocess.STDOUT, start_new_session=True, env=env,
    )
    sweep = None
    try:
        probe = [sys.executable, "-c", f"import ray; ray.init(address='{address}', log_to_driver=False); "
                 "from ray._private.state import jobs; print('JOBS', len(jobs()))"]
        while head.poll() is None and not listening(host, port):  # the head is up once its GCS port answers
            with contextlib.suppress(subprocess.TimeoutExpired):
                head.wait(0.2)
        assert head.poll() is None, (tmp_path / "cluster.log").read_text()[-3000:]
        first = subprocess.run(probe, capture_output=True, text=True, timeout=120, env=env)
        assert "JOBS 1" in first.stdout, (first.stdout + first.stderr)[-3000:] + (tmp_path / "cluster.log").read_text()[-2000:]

        spec = write_spec(tmp_path)
        sweep = driver(tmp_path, spec, fixture_data_dir, "sweep.log", env=dict(env, RAY_ADDRESS=address))
        assert sweep.wait(300) == 0, (tmp_path / "sweep.log").read_text()[-3000:]
        log = (tmp_path / "sweep.log").read_text()
        assert "Connecting to existing Ray cluster" not in log, log[-3000:]

        after = subprocess.run(probe, capture_output=True, text=True, timeout=120, env=env)
        assert "JOBS 2" in after.stdout, after.stdout + after.stderr[-3000:]  # the two probes, no sweep
        _, parents, children = sweep_runs(f"sqlite:///{tmp_path}/mlflow.db")
        assert [p.info.status for p in parents] == ["FINISHED"] and len(children) == 1
    finally:
        if sweep is not None:
            end(sweep)
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops the processes it started
        try:
            head.wait(60)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(head.pid, signal.SIGKILL)
            shutil.rmtree(temp_dir, ignore_errors=True)


def test_unreachable_address_is_named_and_leaves_no_state(tmp_path, fixture_data_dir, capsys):
    spec = write_spec(tmp_path)
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    assert main(["sweep", str(spec), "--data-dir", str(fixture_data_dir), "--address", address]) == 2
    err = capsys.readouterr().err
    assert f"--address {address}" in err and "no Ray cluster answers" in err, err
    assert not (tmp_path / "ray").exists() and not (tmp_path / "mlflow.db").exists()


def test_unreachable_tracking_server_is_named_before_anything(tmp_path, fixture_data_dir, capsys):
    spec = write_spec(tmp_path)
    uri = f"http://127.0.0.1:{free_port()}"
    assert main(["sweep", str(spec), "--data-dir", str(fixture_data_dir), "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert f"--tracking-uri: the MLflow tracking server {uri} does not answer" in err, err
    assert not (tmp_path / "ray").exists()


# -- MLflow's own retries do not hold the driver ----------------------------------------------
def test_driver_mlflow_client_gives_up_at_once_and_the_outbox_takes_over(tmp_path, monkeypatch):
    """A tracking server that drops every connection: one attempt per event, then the outbox
    waits out its back-off (MLflow's default, 7 retries with back-off, held the driver for
    minutes); the hook itself returns without waiting on the store."""
    from trainables import outbox
    from trainables.preflight import DRIVER_MLFLOW_HTTP, short_mlflow_retries
    from trainables.runner import BufferedSweepLogger
    from trainables.spec import parse_spec
    from trainables.spec.trial_config import grid_trial_config

    for key in DRIVER_MLFLOW_HTTP:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")  # keeps MLflow's default retries quick, if they happen
    monkeypatch.setattr(outbox, "BACKOFF_S", 3600.0)  # no second try within the test
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    attempts = []

    def drop_all():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            attempts.append(1)
            conn.close()

    threading.Thread(target=drop_all, daemon=True).start()
    try:
        short_mlflow_retries()
        raw = {"name": "o", "experiment": "o", "base": dict(BASE)}
        (member,) = parse_spec(raw, "o.yaml").members()
        trial = SimpleNamespace(trial_id="t1", config={"members": grid_trial_config([member])}, checkpoint=None)
        logger = BufferedSweepLogger(f"http://127.0.0.1:{server.getsockname()[1]}", "parent", "o", str(tmp_path / "outbox"))
        logger.on_trial_start(0, [], trial)
        outage = tmp_path / "outbox" / outbox.OUTAGE  # written when the writer finds the store down
        deadline = time.monotonic() + 120
        while not outage.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        server.close()
    assert outage.exists() and logger.pending() == 1
    assert len(attempts) == 1


# -- one driver per storage path --------------------------------------------------------------
@pytest.mark.faults
@pytest.mark.slow
def test_two_starts_at_once_run_the_sweep_once(tmp_path, fixture_data_dir):
    spec = write_spec(tmp_path)
    procs = [driver(tmp_path, spec, fixture_data_dir, f"d{i}.log") for i in range(2)]
    try:
        codes = sorted(p.wait(300) for p in procs)
    finally:
        for p in procs:
            end(p)
    logs = [(tmp_path / f"d{i}.log").read_text() for i in range(2)]
    assert codes == [0, 2], logs
    refused = next(log for log in logs if "in use by another driver" in log)
    winner = procs[[i for i, log in enumerate(logs) if log is not refused][0]]
    assert f"host {socket.gethostname()}, PID {winner.pid}" in refused, refused
    _, parents, children = sweep_runs(f"sqlite:///{tmp_path}/mlflow.db")
    assert [p.info.status for p in parents] == ["FINISHED"] and len(children) == 1
    assert len(list((tmp_path / "ray" / "drv").glob("superpos_sweep.json"))) == 1
    assert len(list((tmp_path / "ray" / "drv" / "grid").glob("experiment_state-*.json"))) == 1


@pytest.mark.faults
@pytest.mark.slow
def test_two_concurrent_resumes_log_each_step_once(tmp_path, fixture_data_dir):
    """A sweep record whose Tune experiment never started (a driver killed at once): two
    `--resume` at once, one refused, every metric step logged once."""
    from trainables import guards
    from trainables.spec import load_spec
    from trainables.tracking import start_parent

    spec = write_spec(tmp_path, epochs=2)
    s = load_spec(spec)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    parent = start_parent(uri, "driver", "drv", spec.name)
    root = tmp_path / "ray" / "drv"
    root.mkdir(parents=True)
    record = {"parent_run_id": parent, "tracking_uri": uri, "experiment": "driver", "spec": str(spec),
              "spec_sha256": guards.fingerprint(s, [m.config.flat() for m in s.members()])}
    (root / "superpos_sweep.json").write_text(json.dumps(record))
    procs = [driver(tmp_path, spec, fixture_data_dir, f"r{i}.log", "--resume") for i in range(2)]
    try:
        codes = sorted(p.wait(300) for p in procs)
    finally:
        for p in procs:
            end(p)
    logs = [(tmp_path / f"r{i}.log").read_text() for i in range(2)]
    assert codes == [0, 2] and any("in use by another driver" in log for log in logs), logs
    client, parents, (child,) = sweep_runs(uri)
    steps = [m.step for m in client.get_metric_history(child.info.run_id, "score")]
    assert len(steps) == 2 and len(set(steps)) == 2, steps


@pytest.fixture
def s3(s3, monkeypatch):
    """conftest's S3 server, with a short lease settle time"""
    monkeypatch.setenv("SUPERPOS_LEASE_SETTLE_S", "0.5")
    return s3


def test_s3_lease_refuses_a_second_driver_and_is_released(s3):
    from trainables.sweep_lock import Lease, sweep_lock

    root = "s3://sweeps/runs/drv"
    with sweep_lock(root):
        held = Lease(root).read()
        assert held["pid"] == os.getpid() and held["expires"] > held["heartbeat"]
        with pytest.raises(ConfigError, match=f"in use by another driver \\(host {socket.gethostname()}, PID {os.getpid()}\\)"):
            with sweep_lock(root):
                pass
    assert Lease(root).read() is None  # released: the next driver starts at once
    with sweep_lock(root):
        pass


def test_s3_two_drivers_at_once_one_keeps_the_lease(s3):
    from trainables.sweep_lock import Lease

    root = "s3://sweeps/runs/race"
    leases = [Lease(root), Lease(root)]
    outcome = {}
    go = threading.Barrier(2)

    def take(i):
        go.wait()
        try:
            leases[i].acquire()
            outcome[i] = "held"
        except ConfigError as e:
            outcome[i] = str(e)

    threads = [threading.Thread(target=take, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for lease in leases:
        lease.release()
    assert sorted(v == "held" for v in outcome.values()) == [False, True], outcome


def test_s3_stale_lease_is_taken_over(s3, capsys):
    import pyarrow.fs

    from trainables.sweep_lock import LEASE_FILE, Lease

    root = "s3://sweeps/runs/stale"
    fs, path = pyarrow.fs.FileSystem.from_uri(f"{root}/{LEASE_FILE}")
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    gone = {"host": "node-7", "pid": 4242, "token": "old", "heartbeat": 1000.0, "expires": 1060.0}  # a driver that died long ago
    with fs.open_output_stream(path) as f:
        f.write(json.dumps(gone).encode())
    lease = Lease(root)
    lease.acquire()
    try:
        assert lease.read()["token"] == lease.token
        assert "taking over the lease of host node-7, PID 4242" in capsys.readouterr().err
    finally:
        lease.release()


def test_s3_lease_of_a_killed_driver_on_this_host_is_taken_over_at_once(s3, capsys):
    """A driver killed here leaves an unexpired lease; ``--resume`` on this host need not wait
    out the TTL. A live holder on this host, or one on another host, still refuses."""
    import pyarrow.fs

    from trainables.sweep_lock import LEASE_FILE, Lease

    root = "s3://sweeps/runs/killed"
    fs, path = pyarrow.fs.FileSystem.from_uri(f"{root}/{LEASE_FILE}")
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    killed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])

    def holder(host, pid):
        now = time.time()
        with fs.open_output_stream(path) as f:
            f.write(json.dumps({"host": host, "pid": pid, "token": "old", "heartbeat": now, "expires": now + 3600}).encode())

    try:
        for host in (socket.gethostname(), "node-7"):
            holder(host, killed.pid)  # alive here, or on another host whose processes we cannot see
            with pytest.raises(ConfigError, match=f"PID {killed.pid}"):
                Lease(root).acquire()
        killed.kill()  # SIGKILL, not reaped yet: a zombie
        holder("node-7", killed.pid)
        with pytest.raises(ConfigError, match="host node-7"):
            Lease(root).acquire()
        holder(socket.gethostname(), killed.pid)
        lease = Lease(root)
        lease.acquire()
        lease.release()
        assert f"PID {killed.pid} (its process is gone)" in capsys.readouterr().err
    finally:
        killed.kill()
        killed.wait()


# -- a damaged tuner.pkl ------------------------------------------------------------------------
@pytest.fixture
def local_ray():
    import ray

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_resume_names_a_truncated_tuner_pkl(local_ray, tmp_path, fixture_data_dir, capsys):
    from trainables import guards
    from trainables.spec import load_spec

    spec = write_spec(tmp_path)
    s = load_spec(spec)
    root = tmp_path / "ray" / "drv"
    (root / "grid").mkdir(parents=True)
    whole = pickle.dumps({"state": list(range(1000))})
    (root / "grid" / "tuner.pkl").write_bytes(whole[: len(whole) // 2])  # a torn write
    record = {"parent_run_id": "p", "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "experiment": "driver", "spec": str(spec),
              "spec_sha256": guards.fingerprint(s, [m.config.flat() for m in s.members()])}
    (root / "superpos_sweep.json").write_text(json.dumps(record))
    assert main(["sweep", str(spec), "--data-dir", str(fixture_data_dir), "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"{root}/grid/tuner.pkl is damaged" in err and "Traceback" not in err, err
