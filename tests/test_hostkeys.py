"""Host keys as OpenSSH checks them: an unknown key is accepted and remembered
(``strict_ssh=False``) or refused (``strict_ssh=True``); a changed key is always refused.

Each test gives its own known_hosts file (``known_hosts=``), a copy in tmp_path.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from subprocess import CompletedProcess
from typing import Dict, List, Set, Tuple

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from paramiko import HostKeys

from fabexec import Exec
from fabexec.errors import HostKeyError
from fabexec.sandbox import Cluster
from tests.clusters import expected_hostname, pssh_info, ssh_info


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


# --------------------------------------------------------------------------- OpenSSH's file format
# Each case also asks OpenSSH's client, with a copy of the same file: fabexec must judge as it does.

def lookup_name(cluster: Cluster, host: str) -> str:
    """The name OpenSSH and paramiko look a node up by: its address, with the port if not 22."""
    ip, port = cluster.addresses[host]
    return ip if port == 22 else f"[{ip}]:{port}"


def wildcard(cluster: Cluster, host: str, joker: str = "*") -> str:
    """A pattern covering the node and its neighbours: the last octet (and any port) left open."""
    ip, port = cluster.addresses[host]
    network = ip.rsplit(".", 1)[0] + "." + joker
    return network if port == 22 else f"[{network}]:*"


def key_of(cluster: Cluster, host: str) -> str:
    """``type base64`` of the node's host key."""
    kind, key = known_keys(cluster)[host][0]
    return f"{kind} {key}"


def another_key() -> str:
    """A host key no node has."""
    public = Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()


def openssh_accepts(cluster: Cluster, host: str, known: Path, strict: bool) -> bool:
    """Whether OpenSSH's client logs in to ``host`` given a copy of ``known``."""
    copy = known.with_name(known.name + ".openssh")
    shutil.copyfile(known, copy)
    checking = "yes" if strict else "accept-new"
    return openssh(cluster, host, "true", f"UserKnownHostsFile={copy}",
                   f"StrictHostKeyChecking={checking}").returncode == 0


def openssh(cluster: Cluster, host: str, command: str, *options: str) -> CompletedProcess:
    args = [arg for option in options for arg in ("-o", option)]
    return subprocess.run(["ssh", "-F", str(cluster.ssh_config), "-o", "BatchMode=yes", *args,
                           host, command], capture_output=True, text=True, timeout=60,
                          check=False)


def refused(node: Exec, host: str, why: str) -> bool:
    error = node.errors.get(host)
    return (node.exit_codes[host] == 255 and isinstance(error, HostKeyError)
            and why in str(error).lower() and str(error) in node.stderr[host])


@pytest.mark.parametrize("strict", [False, True], ids=["accept-new", "strict"])
def test_a_wildcard_line_holding_another_key_is_a_changed_key(cluster: Cluster, tmp_path: Path,
                                                              strict: bool) -> None:
    host = cluster.hosts[0]
    known = tmp_path / "known_hosts"
    known.write_text(f"{wildcard(cluster, host)} {another_key()}\n")
    before = known.read_text()
    node = Exec("hostname", ssh_info(cluster, host, known_hosts=known, strict_ssh=strict))
    assert refused(node, host, "changed"), node.errors
    assert known.read_text() == before, "the changed key was remembered"
    assert not openssh_accepts(cluster, host, known, strict)


@pytest.mark.parametrize("joker", ["*", "?"])
def test_a_wildcard_line_holding_the_key_passes_strict_ssh(cluster: Cluster, tmp_path: Path,
                                                           joker: str) -> None:
    host = cluster.hosts[0]
    known = tmp_path / "known_hosts"
    known.write_text(f"{wildcard(cluster, host, joker)} {key_of(cluster, host)}\n")
    node = Exec("hostname", ssh_info(cluster, host, known_hosts=known, strict_ssh=True))
    assert (node.errors, node.stdout) == ({}, {host: expected_hostname(cluster, host) + "\n"})
    assert openssh_accepts(cluster, host, known, strict=True)


def test_a_host_excluded_from_a_line_is_not_judged_by_it(cluster: Cluster,
                                                         tmp_path: Path) -> None:
    """``pattern,!name``: the line covers the second node, not the first, which is new."""
    first, second = cluster.hosts[:2]
    known = tmp_path / "known_hosts"
    line = f"{wildcard(cluster, first)},!{lookup_name(cluster, first)} {another_key()}\n"
    known.write_text(line)
    node = Exec("hostname", pssh_info(cluster, hosts=[first, second], known_hosts=known))
    assert node.exit_codes == {first: 0, second: 255}
    assert refused(node, second, "changed"), node.errors
    assert known.read_text() == line + f"{lookup_name(cluster, first)} {key_of(cluster, first)}\n"
    known.write_text(line)
    assert openssh_accepts(cluster, first, known, strict=False)
    assert not openssh_accepts(cluster, second, known, strict=False)


@pytest.mark.parametrize("strict", [False, True], ids=["accept-new", "strict"])
def test_a_revoked_key_is_refused_even_where_it_is_listed(cluster: Cluster, tmp_path: Path,
                                                          strict: bool) -> None:
    host, other = cluster.hosts[:2]
    known = tmp_path / "known_hosts"
    known.write_text(cluster.known_hosts.read_text() + f"@revoked * {key_of(cluster, host)}\n")
    before = known.read_text()
    node = Exec("hostname", pssh_info(cluster, hosts=[host, other], known_hosts=known,
                                      strict_ssh=strict))
    assert node.exit_codes == {host: 255, other: 0}
    assert refused(node, host, "revoked"), node.errors
    assert known.read_text() == before
    assert not openssh_accepts(cluster, host, known, strict)


def test_a_cert_authority_line_is_ignored_with_one_warning(
        cluster: Cluster, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """paramiko checks no host certificates: the plain keys decide, and the file is named once."""
    known = tmp_path / "known_hosts"
    known.write_text(f"@cert-authority * {another_key()}\n" + cluster.known_hosts.read_text())
    for _ in range(2):
        node = Exec("hostname", pssh_info(cluster, known_hosts=known, strict_ssh=True))
        assert (node.errors, node.exit_code) == ({}, 0)
    warned = [r.getMessage() for r in caplog.records if str(known) in r.getMessage()]
    assert len(warned) == 1 and "@cert-authority" in warned[0] and "\n" not in warned[0]


def test_a_key_filed_without_its_port_is_known(cluster: Cluster, tmp_path: Path) -> None:
    """OpenSSH looks a host on another port up as ``[ip]:port``, then as ``ip``."""
    host = cluster.hosts[0]
    ip, port = cluster.addresses[host]
    if port == 22:
        pytest.skip("the node listens on port 22, where names carry no port")
    known = tmp_path / "known_hosts"
    known.write_text(f"{ip} {key_of(cluster, host)}\n")
    node = Exec("hostname", ssh_info(cluster, host, known_hosts=known, strict_ssh=True))
    assert (node.errors, node.exit_code) == ({}, 0)
    assert openssh_accepts(cluster, host, known, strict=True)


@pytest.mark.parametrize("right", [True, False], ids=["its-key", "another-key"])
def test_a_hashed_name_is_judged_like_a_plain_one(cluster: Cluster, tmp_path: Path,
                                                  right: bool) -> None:
    host = cluster.hosts[0]
    known = tmp_path / "known_hosts"
    key = key_of(cluster, host) if right else another_key()
    known.write_text(f"{HostKeys.hash_host(lookup_name(cluster, host))} {key}\n")
    node = Exec("hostname", ssh_info(cluster, host, known_hosts=known, strict_ssh=True))
    assert node.exit_code == (0 if right else 255)
    assert right or refused(node, host, "changed")
    assert openssh_accepts(cluster, host, known, strict=True) is right
