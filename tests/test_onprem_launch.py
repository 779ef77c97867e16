"""deploy/onprem/cluster.yaml launched for real with `ray up`: three "machines" on loopback
addresses of this host (head 127.0.0.4, workers 127.0.0.2 and 127.0.0.3), reached over SSH
through an sshd this test starts (Debian's openssh-server; its own port, host key, config and
authorized key in a temp dir; not the system service). A sweep submitted with `ray job submit` to
the head's job server runs its trials on both workers, is stopped with `ray job stop` and resubmitted
with `--resume`; one worker's Ray is stopped over SSH while a trial trains on it,
the trial continues from its checkpoint on the other worker, the sweep finishes; `ray down`
leaves no process of the test behind.

Test-only differences from the deploy config, because the three machines are one host: each
node's Ray gets its own temp dir and ports, and `ray` on the nodes' PATH is a wrapper whose
`ray stop` stops only that node's Ray (matched by its temp dir); the real `ray stop` stops every
Ray of the user on the host, as it does on a real machine, which here would be every node and any
other Ray on this host. Nothing is installed by the setup commands (the nodes share this venv)."""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import yaml

from launch_helpers import REPO, VENV_BIN, alive, end, free_ports, metric_steps, missing, pids_with, small_spec, sweep_runs, wait_for

PROGRAMS = ("/usr/sbin/sshd", "ssh", "ssh-keygen", "rsync", "unshare")


def can_mount() -> bool:
    """The test runs its sshd in a mount namespace (see the fixture): root with CAP_SYS_ADMIN."""
    return not missing("unshare") and subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True).returncode == 0


pytestmark = [
    pytest.mark.cluster, pytest.mark.slow,
    pytest.mark.skipif(bool(missing(*PROGRAMS)), reason=f"Debian packages openssh-server and rsync not installed (missing {', '.join(missing(*PROGRAMS))}); .ci/run installs them"),
    pytest.mark.skipif(not can_mount(), reason="needs root with mount namespaces (unshare --mount) for its sshd's private home"),
]
# the head is not 127.0.0.1: Ray replaces that address by the host's outward one
# (services.resolve_ip_for_localhost), and the autoscaler then no longer finds the head by its IP
HEAD, WORKERS = "127.0.0.4", ["127.0.0.2", "127.0.0.3"]
EPOCHS = 40  # long enough that the worker is stopped while its trial still trains, also on an idle machine

RELAY = """import socket, sys, threading
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
def pump(src, dst):
    while True:
        data = src.recv(65536) if hasattr(src, "recv") else src.read1(65536)
        if not data:
            break
        dst.sendall(data) if hasattr(dst, "sendall") else (dst.write(data), dst.flush())
    try:
        s.shutdown(socket.SHUT_WR)
    except OSError:
        pass
threading.Thread(target=pump, args=(sys.stdin.buffer, s), daemon=True).start()
pump(s, sys.stdout.buffer)
"""

STOP_NODE = """import os, signal, sys, time
node_dir = sys.argv[1]
def mine():
    found = []
    for p in os.listdir("/proc"):
        if p.isdigit() and int(p) != os.getpid():
            try:
                if node_dir.encode() in open(f"/proc/{p}/cmdline", "rb").read():
                    found.append(int(p))
            except OSError:
                pass
    return found
for sig in (signal.SIGTERM, signal.SIGKILL):
    for p in mine():
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass
    end = time.time() + 10
    while time.time() < end and mine():
        time.sleep(0.2)
"""


@pytest.fixture
def lab(tmp_path):
    """An sshd on the nodes' addresses and the test copy of the on-prem config; ended by PID."""
    root = Path(tempfile.mkdtemp(prefix="sp-onprem-", dir="/tmp"))  # short: Ray's socket paths live under it
    sshd = None
    try:
        for d in ("home", "bin", "nodes"):
            (root / d).mkdir()
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / "key")], check=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / "hostkey")], check=True)
        shutil.copy(root / "key.pub", root / "authorized_keys")
        (root / "token").write_text(os.urandom(32).hex())
        ssh_port, gcs, dashboard, *node_ports = free_ports(3 + 10 * 3)
        (root / "relay.py").write_text(RELAY)
        (root / "stop_node.py").write_text(STOP_NODE)
        # each node's shell: this venv first, its own `ray stop`, Ray's token, the test's cache
        (root / "home" / ".bashrc").write_text(textwrap.dedent(f"""\
            export PATH={root}/bin:{VENV_BIN}:$PATH
            export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={root}/token RAY_gcs_rpc_server_reconnect_timeout_s=10
            export SUPERPOS_CACHE={root}/cache HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
            """))
        wrapper = root / "bin" / "ray"
        wrapper.write_text(textwrap.dedent(f"""\
            #!/bin/bash
            node=$(echo "$SSH_CONNECTION" | cut -d' ' -f3)
            if [ "$1" = stop ]; then exec {sys.executable} {root}/stop_node.py {root}/nodes/$node; fi
            exec {VENV_BIN}/ray "$@"
            """))
        wrapper.chmod(0o755)
        (root / "sshd_config").write_text("\n".join([
            *(f"ListenAddress {ip}:{ssh_port}" for ip in [HEAD, *WORKERS]),
            f"HostKey {root}/hostkey", f"PidFile {root}/sshd.pid", f"AuthorizedKeysFile {root}/authorized_keys",
            "PermitRootLogin prohibit-password", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "UsePAM no", "StrictModes no", "",
        ]))
        # the head's autoscaler reaches the workers with plain ssh (ray up drops the proxy command
        # on the head) and the key at ~/ray_bootstrap_key.pem, ~ being the account's home: the
        # sshd (and so every node's session) sees the test's home at /root, in a mount namespace
        # of its own, whose ssh config names the sshd's port
        (root / "home" / ".ssh").mkdir(mode=0o700)
        (root / "home" / ".ssh" / "config").write_text(f"Host {HEAD} {' '.join(WORKERS)}\n  Port {ssh_port}\n")
        (root / "home" / ".ssh" / "config").chmod(0o600)
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation dir (made by systemd on a booted host)
        # python itself may live under /root (pyenv): seen there through the test's home too
        keep = [Path("/root", p.relative_to("/root").parts[0]) for p in {Path(sys.base_prefix).resolve()} if p.is_relative_to("/root")]
        binds = "".join(f"mkdir -p {root}/home/{k.name} && mount --bind {k} {root}/home/{k.name} && " for k in keep)
        sshd = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                                 f"{binds}mount --rbind {root}/home /root && exec /usr/sbin/sshd -D -e -f {root}/sshd_config"],
                                stdout=open(root / "sshd.log", "w"), stderr=subprocess.STDOUT)

        config = yaml.safe_load((REPO / "deploy" / "onprem" / "cluster.yaml").read_text())
        config["cluster_name"] = root.name
        config["provider"].update(head_ip=HEAD, worker_ips=WORKERS)
        config["auth"] = {"ssh_user": "root", "ssh_private_key": str(root / "key"),
                          "ssh_proxy_command": f"{sys.executable} {root}/relay.py %h {ssh_port}"}
        config["file_mounts"], config["setup_commands"], config["head_setup_commands"] = {}, [], []

        def node_options(ports: list[int]) -> str:
            return (f"--node-manager-port={ports[0]} --object-manager-port={ports[1]} --metrics-export-port={ports[2]} "
                    f"--dashboard-agent-listen-port={ports[3]} --dashboard-agent-grpc-port={ports[4]} --runtime-env-agent-port={ports[5]}")

        config["head_start_ray_commands"] = [
            "ray stop",
            f"RAY_enable_autoscaler_v2=0 RAY_JOB_STOP_SIGNAL=SIGINT RAY_JOB_STOP_WAIT_TIME_S=120 ray start --head --node-ip-address={HEAD} --port={gcs} --num-cpus=0 --temp-dir={root}/nodes/{HEAD} "
            f"--autoscaling-config=~/ray_bootstrap_config.yaml --dashboard-host=127.0.0.1 --dashboard-port={dashboard} {node_options(node_ports[:10])}",
        ]
        # per worker: its address from the SSH connection, its temp dir and ports
        by_ip = " ".join(f'[ "$NODE" = {ip} ] && OPTS="{node_options(node_ports[10 * (i + 1):])}";' for i, ip in enumerate(WORKERS))
        config["worker_start_ray_commands"] = [
            "ray stop",
            f'NODE=$(echo "$SSH_CONNECTION" | cut -d" " -f3); {by_ip} '
            f'setsid nohup ray start --block --address=$RAY_HEAD_IP:{gcs} --node-ip-address=$NODE --num-cpus=1 --temp-dir={root}/nodes/$NODE $OPTS '
            f'> {root}/worker-$NODE.log 2>&1 < /dev/null &',
        ]
        (root / "cluster.yaml").write_text(yaml.safe_dump(config))
        env = dict(os.environ, PATH=f"{VENV_BIN}:{os.environ['PATH']}", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(root / "token"), TMPDIR=str(root))
        yield {"root": root, "config": root / "cluster.yaml", "env": env, "ssh_port": ssh_port, "dashboard": dashboard}
    finally:
        leftovers = pids_with(str(root))
        end(([sshd.pid] if sshd else []) + sorted(leftovers))
        shutil.rmtree(root, ignore_errors=True)
        Path(f"/tmp/ray/cluster-{root.name}.state").unlink(missing_ok=True)
        Path(f"/tmp/ray/cluster-{root.name}.lock").unlink(missing_ok=True)


def run(lab, *cmd, timeout=600) -> subprocess.CompletedProcess:
    done = subprocess.run(list(map(str, cmd)), env=lab["env"], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (cmd, done.stdout[-6000:], done.stderr[-6000:])
    return done


def node_of_running_trials(storage: Path) -> dict[str, str]:
    """Ray trial dir -> the node of its latest result (Tune records node_ip in every result)."""
    out = {}
    for f in storage.glob("*/result.json"):
        lines = f.read_text().splitlines()
        if lines:
            out[f.parent.name] = json.loads(lines[-1])["node_ip"]
    return out


def test_ray_up_a_sweep_a_worker_stopped_mid_trial_and_ray_down(lab, data_dir, tmp_path):
    run(lab, "ray", "up", "-y", "--no-config-cache", lab["config"])
    wait_for(lambda: all(any(_is_raylet(p) for p in pids_with(f"{lab['root']}/nodes/{ip}/")) for ip in WORKERS), 120, "both workers' Ray")

    spec = small_spec(tmp_path / "lab.yaml", "lab", EPOCHS)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    grid = tmp_path / "ray" / "lab" / "grid"
    # the driver as a Ray job on the head, submitted to its job server (on the head's 127.0.0.1,
    # reached here directly: one host; a user reaches it through `ray dashboard CONFIG`), with the
    # token from the environment; `ray job submit` follows the job's log and fails if the job does
    job_server = f"http://127.0.0.1:{lab['dashboard']}"
    sweep = ["superpos", "sweep", spec, "--address", "auto", "--data-dir", data_dir, "--storage-path", tmp_path / "ray", "--tracking-uri", uri]

    def submit(job: str, *more: str) -> subprocess.Popen:
        return subprocess.Popen([f"{VENV_BIN}/ray", "job", "submit", "--address", job_server, "--submission-id", job, "--", *map(str, [*sweep, *more])],
                                env=lab["env"], stdout=open(tmp_path / f"{job}.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)

    def on_each_worker(since: dict[str, int]) -> bool:
        """Both trials running, one on each worker, each with a result and a checkpoint after ``since``."""
        lines = {t: (grid / t / "result.json").read_text().count("\n") for t in since}
        return (sorted(node_of_running_trials(grid).values()) == WORKERS and len(list(grid.glob("*/checkpoint_*"))) >= 2
                and all(n > since.get(t, 0) for t, n in lines.items()))

    first = submit("lab-sweep")
    wait_for(lambda: on_each_worker({}), 300, "a checkpointed trial on each worker", first)
    # `ray job stop`: the driver gets SIGINT (the head's RAY_JOB_STOP_SIGNAL) and stops as Ctrl-C does
    run(lab, "ray", "job", "stop", "--address", job_server, "lab-sweep")
    try:
        first.wait(300)
    finally:
        end([first.pid])
    log = (tmp_path / "lab-sweep.log").read_text()
    assert "Job 'lab-sweep' was stopped" in log and "interrupted; continue it with" in log, log[-4000:]
    parents, children = sweep_runs(uri, "launch-lab")
    assert [p.info.status for p in parents] == ["RUNNING"] and not any(c.data.tags["status"] == "finished" for c in children)

    # the same job again with --resume; once both trials train again, one on each worker, each
    # past a new checkpoint: stop 127.0.0.3's Ray over SSH
    before = {t: (grid / t / "result.json").read_text().count("\n") for t in node_of_running_trials(grid)}
    driver = submit("lab-sweep-resumed", "--resume")
    wait_for(lambda: on_each_worker(before), 300, "both trials training again, one on each worker", driver)
    (moved,) = [t for t, ip in node_of_running_trials(grid).items() if ip == WORKERS[1]]
    at_stop = (grid / moved / "result.json").read_text().count("\n")
    run(lab, "ssh", "-i", lab["root"] / "key", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", f"ProxyCommand={sys.executable} {lab['root']}/relay.py %h {lab['ssh_port']}", f"root@{WORKERS[1]}", "ray stop")
    assert not pids_with(f"{lab['root']}/nodes/{WORKERS[1]}/")

    try:
        assert driver.wait(900) == 0, (tmp_path / "lab-sweep-resumed.log").read_text()[-4000:]
    finally:
        end([driver.pid])
    assert "Job 'lab-sweep-resumed' succeeded" in (tmp_path / "lab-sweep-resumed.log").read_text()

    parents, children = sweep_runs(uri, "launch-lab")
    assert [p.info.status for p in parents] == ["FINISHED"] and len(children) == 2
    for c in children:
        assert c.info.status == "FINISHED" and c.data.tags["status"] == "finished"
        assert metric_steps(uri, c.info.run_id) == [2 * (k + 1) for k in range(EPOCHS)]
    # trials ran on both workers; the stopped worker's trial continued on a node that was up (the
    # other worker, or the stopped one once the autoscaler had started its Ray again) ...
    nodes = sorted(c.data.tags["superpos.nodes"].split(",") for c in children)
    assert [n[0] for n in nodes] == WORKERS, nodes
    # ... from its checkpoint, not from scratch: after the stop (and results of the stopped worker
    # the driver had not yet written) comes a first result since a restore, not of the first epoch
    after = [json.loads(line) for line in (grid / moved / "result.json").read_text().splitlines()[at_stop:]]
    restored = [r["training_iteration"] for r in after if r["iterations_since_restore"] == 1]
    assert restored and all(it > 1 for it in restored), [(r["training_iteration"], r["iterations_since_restore"]) for r in after]

    ours = pids_with(str(lab["root"])) - pids_with("sshd")
    run(lab, "ray", "down", "-y", lab["config"])
    try:
        wait_for(lambda: not alive(ours), 120, "every process of the test's cluster to end after ray down")
    except AssertionError:
        raise AssertionError({p: Path(f"/proc/{p}/cmdline").read_bytes()[:300] for p in alive(ours)}) from None


def _is_raylet(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "raylet"
    except OSError:
        return False
