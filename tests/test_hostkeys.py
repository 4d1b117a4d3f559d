"""Host keys as OpenSSH checks them: an unknown key is accepted and remembered
(``strict_ssh=False``) or refused (``strict_ssh=True``); a changed key is always refused.

Each test gives its own known_hosts file (``known_hosts=``), a copy in tmp_path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

from fabexec import Exec
from fabexec.errors import HostKeyError
from fabexec.sandbox import Cluster
from tests.clusters import expected_hostname, ssh_info


def known_keys(cluster: Cluster) -> Dict[str, List[Tuple[str, str]]]:
    """Each node's (key type, key) pairs, from the cluster's known_hosts."""
    keys: Dict[str, List[Tuple[str, str]]] = {host: [] for host in cluster.hosts}
    for line in cluster.known_hosts.read_text().splitlines():
        names, kind, key = line.split()[:3]
        for host in set(names.split(",")) & set(keys):
            keys[host].append((kind, key))
    return keys


def names_of(cluster: Cluster, host: str) -> Set[str]:
    """The names a node's key is filed under: its alias and its address."""
    names: Set[str] = set()
    for line in cluster.known_hosts.read_text().splitlines():
        if host in line.split()[0].split(","):
            names |= set(line.split()[0].split(","))
    return names


def test_unknown_host_key_is_refused_under_strict_ssh(any_cluster: Cluster,
                                                      tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    host = any_cluster.hosts[0]
    node = Exec("hostname", ssh_info(any_cluster, host, known_hosts=known, strict_ssh=True))
    assert node.exit_codes == {host: 255}
    assert isinstance(node.errors[host], HostKeyError)
    assert host in str(node.errors[host])
    assert str(node.errors[host]) in node.stderr[host]
    assert known.read_text() == ""


def test_unknown_host_key_is_accepted_and_remembered_without_strict_ssh(
        any_cluster: Cluster, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    host = any_cluster.hosts[0]
    node = Exec("hostname", ssh_info(any_cluster, host, known_hosts=known, strict_ssh=False))
    assert node.stdout == {host: expected_hostname(any_cluster, host) + "\n"}
    remembered = [line.split() for line in known.read_text().splitlines()]
    assert len(remembered) == 1
    name, kind, key = remembered[0]
    assert name in names_of(any_cluster, host)
    assert (kind, key) in known_keys(any_cluster)[host]


def test_remembered_host_key_then_passes_strict_ssh(any_cluster: Cluster,
                                                     tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    host = any_cluster.hosts[0]
    Exec("true", ssh_info(any_cluster, host, known_hosts=known, strict_ssh=False))
    node = Exec("hostname", ssh_info(any_cluster, host, known_hosts=known, strict_ssh=True))
    assert (node.errors, node.exit_code) == ({}, 0)


@pytest.mark.parametrize("strict", [False, True], ids=["accept-new", "strict"])
def test_changed_host_key_is_refused_naming_the_host(any_cluster: Cluster, tmp_path: Path,
                                                     strict: bool) -> None:
    """known_hosts files another node's keys under this node's names (a man in the middle)."""
    host, other = any_cluster.hosts[0], any_cluster.hosts[1]
    theirs = dict(known_keys(any_cluster)[other])
    lines = []
    for line in any_cluster.known_hosts.read_text().splitlines():
        names, kind, _ = line.split()[:3]
        if host in names.split(",") and kind in theirs:
            line = f"{names} {kind} {theirs[kind]}"
        lines.append(line + "\n")
    known = tmp_path / "known_hosts"
    known.write_text("".join(lines))
    node = Exec("hostname", ssh_info(any_cluster, host, known_hosts=known, strict_ssh=strict))
    assert node.exit_codes == {host: 255}
    assert node.stdout == {host: ""}
    assert isinstance(node.errors[host], HostKeyError)
    assert host in str(node.errors[host])
    assert "changed" in str(node.errors[host]).lower()
    assert str(node.errors[host]) in node.stderr[host]
    assert known.read_text() == "".join(lines), "the changed key was written over"
