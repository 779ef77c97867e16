"""deploy/slurm/superpos.sbatch launched for real: a SLURM cluster of two nodes on this host
(slurmctld, two slurmd with NodeAddr 127.0.0.2 and 127.0.0.3, munged; Debian's slurm-wlm and
munge, configured here in a temp dir with their own ports, spool and state dirs), the smoke
sweep as a job, a job stopped mid-sweep by its time-limit signal and resumed by the next one
submitted by hand (SUPERPOS_REQUEUE=0), that one stopped in turn and resumed by its own requeue
(the script's default), and the refusals (more nodes than the partition has; GPUs asked of a job
without them)."""

import os
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from launch_helpers import REPO, VENV_BIN, alive, end, free_ports, metric_steps, missing, pids_with, small_spec, sweep_runs, wait_for

PROGRAMS = ("/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/sbin/munged", "sbatch", "scontrol", "scancel", "sinfo")
pytestmark = [
    pytest.mark.cluster, pytest.mark.slow,
    pytest.mark.skipif(bool(missing(*PROGRAMS)), reason=f"Debian packages slurm-wlm and munge not installed (missing {', '.join(missing(*PROGRAMS))}); .ci/run installs them"),
]
SCRIPT = REPO / "deploy" / "slurm" / "superpos.sbatch"
# not 127.0.0.1: Ray replaces that address by the host's outward one (services.resolve_ip_for_localhost)
NODES = {"n1": "127.0.0.2", "n2": "127.0.0.3"}


@pytest.fixture(scope="module")
def slurm():
    """A two-node SLURM cluster on loopback; every daemon ended (by PID) afterwards."""
    root = Path(tempfile.mkdtemp(prefix="sp-slurm-", dir="/tmp"))  # short: Ray's socket paths live under it
    procs = []
    try:
        (root / "state").mkdir()
        (root / "munge.key").write_bytes(os.urandom(1024))
        (root / "munge.key").chmod(0o600)
        ctld_port, *node_ports = free_ports(1 + len(NODES))
        host = socket.gethostname()
        nodes = "\n".join(f"NodeName={n} NodeHostname={host} NodeAddr={ip} Port={p} CPUs=1 State=UNKNOWN" for (n, ip), p in zip(NODES.items(), node_ports))
        conf = root / "slurm.conf"
        conf.write_text(f"""ClusterName=superpos-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
AuthType=auth/munge
# cred_expire: also how long a requeued job is held (Reason=BeginTime) before it may start
# again (default 120 s); the sched/bf intervals: how soon after that the scheduler starts it
# (defaults 60 s and 30 s)
AuthInfo=socket={root}/munge.sock,cred_expire=10
SchedulerParameters=sched_interval=2,bf_interval=2
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool-%n
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd-%n.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
EnforcePartLimits=ALL
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
{nodes}
PartitionName=test Nodes={','.join(NODES)} Default=YES MaxTime=INFINITE State=UP
""")
        env = dict(os.environ, SLURM_CONF=str(conf))
        log = open(root / "daemons.log", "w")
        munge = ["/usr/sbin/munged", "-F", "-f", f"--socket={root}/munge.sock", f"--key-file={root}/munge.key",
                 f"--pid-file={root}/munged.pid", f"--log-file={root}/munged.log", f"--seed-file={root}/munge.seed"]
        procs.append(subprocess.Popen(munge, stdout=log, stderr=subprocess.STDOUT))
        wait_for(lambda: (root / "munge.sock").exists(), 30, "munged's socket", procs[-1])
        procs.append(subprocess.Popen(["/usr/sbin/slurmctld", "-D", "-i", "-f", str(conf)], env=env, stdout=log, stderr=subprocess.STDOUT))
        for n in NODES:
            procs.append(subprocess.Popen(["/usr/sbin/slurmd", "-D", "-N", n, "-f", str(conf)], env=env, stdout=log, stderr=subprocess.STDOUT))

        def idle():
            out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], env=env, capture_output=True, text=True).stdout.split()
            return out.count("idle") == len(NODES)

        wait_for(idle, 90, "both SLURM nodes idle")
        yield {"root": root, "env": env}
    finally:
        leftovers = pids_with(str(root))
        end([p.pid for p in procs] + sorted(leftovers))
        assert not alive([p.pid for p in procs] + sorted(leftovers)), "a process of the test outlived it"
        shutil.rmtree(root, ignore_errors=True)


def job_env(slurm, tmp_path, requeue: bool) -> dict:
    ray_tmp = slurm["root"] / f"ray{len(list(slurm['root'].glob('ray*')))}"
    ray_tmp.mkdir()
    env = dict(slurm["env"], PATH=f"{VENV_BIN}:{os.environ['PATH']}", SUPERPOS_RAY_TMPDIR=str(ray_tmp),
               SUPERPOS_CACHE=str(tmp_path / "cache"), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.pop("SUPERPOS_REQUEUE", None)  # requeue: the script's default
    return env if requeue else dict(env, SUPERPOS_REQUEUE="0")


def sbatch(slurm, tmp_path, *args, wait: bool = True, nodes: int = 2, requeue: bool = False) -> subprocess.CompletedProcess:
    cmd = ["sbatch", "--parsable", f"--nodes={nodes}", "--cpus-per-task=1", f"--chdir={tmp_path}", f"--output={tmp_path}/slurm-%j.out",
           *(["--wait"] if wait else []), str(SCRIPT), *map(str, args)]
    return subprocess.run(cmd, env=job_env(slurm, tmp_path, requeue), capture_output=True, text=True, timeout=600)


def job_info(slurm, job: str) -> dict:
    """``scontrol show job``'s fields (JobState, Reason, Restarts, ...)."""
    out = subprocess.run(["scontrol", "show", "job", job], env=slurm["env"], capture_output=True, text=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def job_state(slurm, job: str) -> str:
    return job_info(slurm, job)["JobState"]


def job_output(tmp_path, job: str) -> str:
    return (tmp_path / f"slurm-{job}.out").read_text()


def ended(info: dict) -> bool:
    """A job's final state, or one it stays in until someone acts (held)."""
    return info["JobState"] not in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "SIGNALING") or "held" in info["Reason"].lower()


def newest_checkpoint(grid: Path) -> int:
    """The highest checkpoint index of the sweep's trials (-1: none yet)."""
    return max((int(p.name.split("_")[-1]) for p in grid.glob("*/checkpoint_*")), default=-1)


def stop_after_checkpoint(slurm, tmp_path, job: str, grid: Path, after: int) -> None:
    """Once a trial of the running job writes a checkpoint past ``after``, what
    `#SBATCH --signal=B:USR1@300` sends before the time limit."""
    wait_for(lambda: newest_checkpoint(grid) > after or ended(job_info(slurm, job)), 600, f"a checkpoint past {after} of job {job}")
    sent = subprocess.run(["scancel", "--batch", "--signal=USR1", job], env=slurm["env"], capture_output=True, text=True)
    assert sent.returncode == 0, (sent.stderr, job_output(tmp_path, job)[-4000:])


def assert_finished_once(uri: str, epochs: int) -> None:
    """The parent run FINISHED, one FINISHED child run per trial, every metric step once."""
    parents, children = sweep_runs(uri, "launch-long")
    assert [p.info.status for p in parents] == ["FINISHED"]
    assert len(children) == 2 and len({c.data.tags["superpos.trial_id"] for c in children}) == 2
    for c in children:
        assert c.info.status == "FINISHED" and c.data.tags["status"] == "finished"
        assert metric_steps(uri, c.info.run_id) == [2 * (k + 1) for k in range(epochs)]  # every step once
    # the two trials (1 CPU each, 1 CPU a node, 40 epochs) trained side by side, one on each node
    assert {n for c in children for n in c.data.tags["superpos.nodes"].split(",")} == set(NODES.values())


def sweep_args(tmp_path, data_dir) -> list:
    return ["--data-dir", data_dir, "--storage-path", tmp_path / "ray", "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]


def test_the_smoke_sweep_runs_as_a_two_node_job(slurm, data_dir, tmp_path):
    done = sbatch(slurm, tmp_path, REPO / "sweeps" / "smoke.yaml", *sweep_args(tmp_path, data_dir))
    job = done.stdout.strip().split(";")[0]
    assert done.returncode == 0, (done.stderr, job_output(tmp_path, job)[-4000:] if job else "")
    assert job_state(slurm, job) == "COMPLETED"
    parents, children = sweep_runs(f"sqlite:///{tmp_path}/mlflow.db", "superpos-smoke")
    assert [p.info.status for p in parents] == ["FINISHED"]
    assert len(children) == 6 and all(c.info.status == "FINISHED" and c.data.tags["status"] == "finished" for c in children)
    # on the job's nodes; not necessarily both: a smoke trial may end before the other's worker has
    # started, and Tune then runs the other in the worker it already has (the long sweep below
    # shows both nodes at work)
    assert {c.data.tags["superpos.node"] for c in children} <= set(NODES.values())


def test_a_job_stopped_by_its_time_limit_signal_is_resumed_by_hand_then_by_its_requeue(slurm, data_dir, tmp_path):
    epochs = 40  # long enough that both signals come while the trials still train, also on an idle machine
    spec = small_spec(tmp_path / "long.yaml", "long", epochs)
    args, grid, uri = [spec, *sweep_args(tmp_path, data_dir)], tmp_path / "ray" / "long" / "grid", f"sqlite:///{tmp_path}/mlflow.db"
    # 1. where the site forbids requeueing (SUPERPOS_REQUEUE=0): the stopped job ends
    first = sbatch(slurm, tmp_path, *args, wait=False)
    job = first.stdout.strip().split(";")[0]
    assert first.returncode == 0 and job, first.stderr
    stop_after_checkpoint(slurm, tmp_path, job, grid, -1)
    wait_for(lambda: ended(job_info(slurm, job)), 600, "the first job to end")
    info, out = job_info(slurm, job), job_output(tmp_path, job)
    assert info["JobState"] == "FAILED" and info["Restarts"] == "0" and "--resume" in out, (info, out[-4000:])  # stopped, not finished
    parents, children = sweep_runs(uri, "launch-long")
    assert [p.info.status for p in parents] == ["RUNNING"] and not all(c.data.tags["status"] == "finished" for c in children)
    # 2. the next job, submitted by hand with --resume and requeue on (the default), is stopped
    # in turn once its trials train again: it requeues itself, and its next run (same job id) resumes
    last = newest_checkpoint(grid)
    second = sbatch(slurm, tmp_path, *args, "--resume", wait=False, requeue=True)
    job2 = second.stdout.strip().split(";")[0]
    assert second.returncode == 0 and job2, second.stderr
    stop_after_checkpoint(slurm, tmp_path, job2, grid, last)
    wait_for(lambda: ended(job_info(slurm, job2)), 900, f"job {job2} to be requeued and to end")  # held a while (requeue delay)
    info, out = job_info(slurm, job2), job_output(tmp_path, job2)
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", (info, out[-4000:])
    # both runs in the job's output (--open-mode=append): the stop, the requeue, the resumed sweep
    assert f"job {job2} stopped: requeueing it" in out and f"job {job2}, restart 1: continuing the sweep" in out, out[-4000:]
    assert out.count("resuming sweep long") == 2, out[-4000:]
    assert_finished_once(uri, epochs)


def test_more_nodes_than_the_partition_has_shows_slurms_refusal(slurm, tmp_path, data_dir):
    refused = sbatch(slurm, tmp_path, REPO / "sweeps" / "smoke.yaml", *sweep_args(tmp_path, data_dir), nodes=3)
    assert refused.returncode != 0 and "Batch job submission failed" in refused.stderr, refused
    assert not list(tmp_path.glob("slurm-*.out")) and not (tmp_path / "ray").exists()


def test_a_spec_asking_for_gpus_names_the_missing_sbatch_option(slurm, tmp_path, data_dir):
    spec = small_spec(tmp_path / "gpu.yaml", "gpu", 1, resources={"cpu": 1, "gpu": 1})
    done = sbatch(slurm, tmp_path, spec, *sweep_args(tmp_path, data_dir))
    job = done.stdout.strip().split(";")[0]
    out = job_output(tmp_path, job)
    assert done.returncode == 2 and job_state(slurm, job) == "FAILED", out
    assert "--gpus-per-node" in out and "resources.gpu" in out and str(spec) in out, out
    assert not (tmp_path / "ray").exists() and not (tmp_path / "mlflow.db").exists()  # refused before any work
