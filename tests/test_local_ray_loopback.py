"""A sweep's own local Ray (no --address) listens on the loopback range only: never on the
machine's routable address or on all interfaces, so a laptop or a shared login node does not
expose it to the network."""

import ipaddress
import os

import psutil
import pytest

pytestmark = pytest.mark.slow


def on_loopback(ip: str) -> bool:
    """127.0.0.0/8, also as an IPv4-mapped IPv6 address (::ffff:127.0.0.1, gRPC's sockets)."""
    address = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return isinstance(address, ipaddress.IPv4Address) and address in ipaddress.IPv4Network("127.0.0.0/8")


def listeners(procs) -> set[tuple[str, int, str, int]]:
    """(process name, PID, IP, port) of each listening TCP socket of ``procs``."""
    found = set()
    for proc in procs:
        try:
            name = proc.name()
            conns = proc.net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        found |= {(name, proc.pid, c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN}
    return found


def test_a_sweeps_local_ray_listens_on_loopback_only():
    import ray

    from trainables.runner import ray_session

    assert not ray.is_initialized()  # else ray_session would start nothing
    me = psutil.Process()
    before = listeners([me])
    with ray_session(None):

        @ray.remote(num_cpus=0)
        def node_ip() -> str:
            return ray.util.get_node_ip_address()

        ip = ray.get(node_ip.remote())  # a worker too, with its own server
        children = me.children(recursive=True)
        sockets = (listeners([me]) - before) | listeners(children)
        names = {name for name, *_ in sockets}
    assert not ray.is_initialized()
    assert {"gcs_server", "raylet"} <= names, sockets  # not vacuous: the node's servers were seen
    assert any(pid == os.getpid() for _, pid, *_ in sockets), sockets  # and the driver's own
    exposed = sorted(s for s in sockets if not on_loopback(s[2]))
    assert not exposed, f"Ray listens beyond the loopback range: {exposed} (all: {sorted(sockets)})"
    assert ip == "127.0.0.1"  # what the node advertises to its workers
