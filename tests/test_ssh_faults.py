"""Faults are results, not hangs: a host that cannot be reached or refuses us ends that
host only, with exit code 255 and the reason in ``errors[host]`` and ``stderr[host]``.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from fabexec import Exec, SshExecInfo
from fabexec.errors import AuthenticationError, UnreachableError
from fabexec.sandbox import Cluster
from tests.clusters import SPARE_IP, expected_hostname, pssh_info, ssh_config_with

UNREACHABLE = 255


def test_unreachable_host_keeps_the_other_hosts_results(any_cluster: Cluster,
                                                        tmp_path: Path) -> None:
    """``dead`` names a loopback port where nothing listens: the connection is refused."""
    config = ssh_config_with(any_cluster, tmp_path / "ssh_config", {"dead": (SPARE_IP, 1)})
    hosts = [*any_cluster.hosts[:2], "dead", *any_cluster.hosts[2:]]
    node = Exec("hostname", pssh_info(any_cluster, hosts=hosts, ssh_config=config))
    live = [h for h in hosts if h != "dead"]
    assert node.stdout == {"dead": "", **{h: expected_hostname(any_cluster, h) + "\n"
                                          for h in live}}
    assert node.exit_codes == {"dead": UNREACHABLE, **{h: 0 for h in live}}
    assert node.exit_code == UNREACHABLE
    assert list(node.errors) == ["dead"]
    assert isinstance(node.errors["dead"], UnreachableError)
    assert str(node.errors["dead"]) in node.stderr["dead"]
    assert "refused" in str(node.errors["dead"]).lower()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections (the kernel does) and never says a word."""
    with socket.socket() as listener:
        listener.bind((SPARE_IP, 0))
        listener.listen(16)
        yield listener.getsockname()[1]


# Unbounded, paramiko would wait 15 s for the banner alone: pytest-timeout catches it.
@pytest.mark.timeout(12)
def test_silent_host_ends_within_connect_timeout(cluster: Cluster, silent_port: int,
                                                 tmp_path: Path) -> None:
    config = ssh_config_with(cluster, tmp_path / "ssh_config", {"silent": (SPARE_IP, silent_port)})
    node = Exec("hostname", pssh_info(cluster, hosts=["silent", cluster.hosts[0]],
                                      ssh_config=config, connect_timeout=2))
    assert node.exit_codes == {"silent": UNREACHABLE, cluster.hosts[0]: 0}
    assert isinstance(node.errors["silent"], UnreachableError)
    assert "within 2 s" in str(node.errors["silent"])
    assert str(node.errors["silent"]) in node.stderr["silent"]


def test_refused_key_is_an_authentication_error(any_cluster: Cluster, tmp_path: Path) -> None:
    """A key the node never saw; the alias says only where the node is."""
    stranger = tmp_path / "id_stranger"
    stranger.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption()))
    stranger.chmod(0o600)
    ip, port = any_cluster.addresses[any_cluster.hosts[0]]
    bare = tmp_path / "ssh_config"
    bare.write_text(f"Host bare\n    HostName {ip}\n")
    node = Exec("hostname", SshExecInfo(
        hosts="bare", ssh_config=bare, user=any_cluster.user, port=port, pkey=stranger,
        known_hosts=any_cluster.known_hosts, collect_output=True, hide_output=True))
    assert node.exit_codes == {"bare": UNREACHABLE}
    assert isinstance(node.errors["bare"], AuthenticationError)
    assert str(node.errors["bare"]) in node.stderr["bare"]
    assert node.stdout == {"bare": ""}
