"""Every connection sends its packets at once (TCP_NODELAY), as OpenSSH does: with Nagle's
algorithm a command's last small packets wait for a delayed ACK, 50 ms a command on a
cached connection (bench/ssh.py, section 4, measures it against OpenSSH's ControlMaster)."""

from __future__ import annotations

import socket
from pathlib import Path

from fabexec import Exec
from fabexec.connections import connection_for
from fabexec.sandbox import Cluster
from tests.clusters import host_block, ssh_info


def no_delay(sock: socket.socket) -> bool:
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


def test_a_direct_connection_sends_at_once(cluster: Cluster) -> None:
    info = ssh_info(cluster, cluster.hosts[0])
    assert Exec("true", info).exit_code == 0
    assert no_delay(connection_for(cluster.hosts[0], info).transport.sock)


def test_a_proxyjump_hop_sends_at_once(cluster: Cluster, tmp_path: Path) -> None:
    """The hop's TCP connection carries the target's packets: it is the one that matters."""
    target, hop = cluster.hosts[:2]
    config = tmp_path / "ssh_config"
    config.write_text(host_block(cluster, "jumped", cluster.addresses[target])
                      + f"    ProxyJump {hop}\n\n" + cluster.ssh_config.read_text())
    info = ssh_info(cluster, "jumped", ssh_config=config)
    node = Exec("true", info)
    assert node.exit_code == 0, node.errors
    cxn = connection_for("jumped", info)
    assert cxn.gateway.transport is not None
    assert no_delay(cxn.gateway.transport.sock)
