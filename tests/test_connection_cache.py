"""Connections are cached per process and reused by later `Exec` calls; a dead one is
reopened by the next `Exec` without the caller doing anything.

``$SSH_CONNECTION`` on the node names the client's port: the same port means the same
TCP connection, as the node sees it.
"""

from __future__ import annotations

import os
import socket
from typing import Tuple

from fabexec import Exec, connection_pool
from fabexec.connections import close_connections, connection_for
from fabexec.errors import ConnectionLostError
from fabexec.sandbox import Cluster, SandboxCluster
from tests.clusters import eventually, ssh_info


def client_port(cluster: Cluster, host: str, **changes: object) -> str:
    """The client-side port of the connection this `Exec` ran over, as the node saw it."""
    node = Exec('set -- $SSH_CONNECTION; echo "$2"', ssh_info(cluster, host, **changes))
    assert node.exit_code == 0, node.stderr
    return node.stdout[host]


def established(port: str) -> bool:
    """Whether a TCP connection from local port ``port`` is established on this machine."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            next(rows)  # the heading
            for row in rows:
                local, state = row.split()[1], row.split()[3]
                if int(local.rsplit(":", 1)[1], 16) == int(port) and state == "01":
                    return True
    return False


def test_second_exec_reuses_the_cached_connection(any_cluster: Cluster) -> None:
    host = any_cluster.hosts[0]
    first = client_port(any_cluster, host)
    transport = connection_for(host, ssh_info(any_cluster, host)).transport
    assert client_port(any_cluster, host) == first
    assert connection_for(host, ssh_info(any_cluster, host)).transport is transport


def test_exec_reconnects_after_the_node_killed_its_sessions(cluster: SandboxCluster) -> None:
    host = cluster.hosts[-1]
    first = client_port(cluster, host)
    cluster.crash(host)
    assert client_port(cluster, host) != first


def test_exec_reconnects_after_the_transport_was_closed(any_cluster: Cluster) -> None:
    host = any_cluster.hosts[0]
    first = client_port(any_cluster, host)
    connection_for(host, ssh_info(any_cluster, host)).transport.close()
    assert client_port(any_cluster, host) != first


def test_close_all_closes_every_cached_connection(any_cluster: Cluster) -> None:
    client_port(any_cluster, any_cluster.hosts[0])
    cached = connection_for(any_cluster.hosts[0], ssh_info(any_cluster, any_cluster.hosts[0]))
    close_connections()
    assert not cached.is_connected


def test_a_run_that_opts_out_of_reuse_closes_its_connection_when_it_ends(
        cluster: SandboxCluster) -> None:
    host = cluster.hosts[0]
    kept = client_port(cluster, host)
    assert established(kept)  # the pool keeps a connection open...
    own = client_port(cluster, host, reuse_connections=False)
    assert own != kept
    assert not established(own)  # ...unless the run asked for one of its own
    assert client_port(cluster, host) == kept


def test_an_idle_timeout_closes_connections_left_idle(cluster: SandboxCluster) -> None:
    connection_pool.idle_timeout = 0.5
    try:
        port = client_port(cluster, cluster.hosts[1])
        assert eventually(lambda: not established(port), seconds=30)
    finally:
        connection_pool.idle_timeout = None


def connections_to(address: Tuple[str, int]) -> int:
    """This process's established TCP connections to ``address`` (its sockets only)."""
    ours = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            ours.add(target[8:-1])
    ip, port = address
    remote = f"{socket.inet_aton(ip)[::-1].hex().upper()}:{port:04X}"
    with open("/proc/net/tcp") as rows:
        next(rows)  # the heading
        return sum(1 for row in map(str.split, rows)
                   if row[2] == remote and row[3] == "01" and row[9] in ours)


def test_a_kill_after_the_link_broke_leaves_no_connection_open(cluster: SandboxCluster,
                                                               tag: str) -> None:
    """kill() after a host's run ended with a broken link reconnects to end what may be
    left there, then closes that connection: the pool had dropped it, so nothing else
    (close_connections included) would ever close it. Found by the soak."""
    host = cluster.hosts[-1]
    node = Exec(f"sleep {tag}", ssh_info(cluster, host, exec_async=True))
    assert eventually(lambda: bool(Exec(f"pgrep -f '^sleep {tag}'", ssh_info(cluster, host)
                                        ).stdout[host]))
    cluster.crash(host)
    node.wait()
    assert isinstance(node.errors[host], ConnectionLostError)
    before = connections_to(cluster.addresses[host])
    node.kill()
    assert connections_to(cluster.addresses[host]) == before
