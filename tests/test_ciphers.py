"""Connections prefer AES-GCM, and still reach a server that offers only CTR with HMAC."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Tuple

import pytest

from fabexec import Exec, SshExecInfo, connections, sandbox
from tests.clusters import ssh_info


def test_connections_negotiate_aes_gcm(cluster: sandbox.SandboxCluster) -> None:
    host = cluster.hosts[0]
    info = ssh_info(cluster, host)
    assert Exec("true", info).exit_code == 0
    transport = connections.connection_for(host, info).transport
    assert (transport.local_cipher, transport.remote_cipher) == (
        "aes128-gcm@openssh.com", "aes128-gcm@openssh.com")


@pytest.fixture()
def ctr_only_sshd(cluster: sandbox.SandboxCluster) -> Iterator[Tuple[str, int]]:
    """A second sshd of node 1, on a port of its own, offering AES-CTR ciphers only."""
    with sandbox.second_sshd(cluster, cluster.hosts[0], "Ciphers aes128-ctr,aes256-ctr\n") \
            as address:
        yield address


def test_a_server_without_gcm_gets_ctr_with_hmac(cluster: sandbox.SandboxCluster,
                                                 ctr_only_sshd: Tuple[str, int],
                                                 tmp_path: Path) -> None:
    ip, port = ctr_only_sshd
    info = SshExecInfo(hosts=ip, port=port, user=cluster.user, pkey=cluster.key,
                       known_hosts=tmp_path / "known_hosts", collect_output=True,
                       hide_output=True)
    node = Exec("echo reached", info)
    assert (node.exit_code, node.stdout[ip]) == (0, "reached\n")
    transport = connections.connection_for(ip, info).transport
    assert transport.remote_cipher == "aes128-ctr"
    assert transport.remote_mac.startswith("hmac-sha2")
