"""known_hosts read as sshd(8) describes it, parsed once, and looked up through an index
that answers as trying every line would."""

from __future__ import annotations

import base64
import os
import socket
from pathlib import Path
from typing import List

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from paramiko import HostKeys, PKey, RSAKey, Transport

from fabexec.errors import ExecInfoError
from fabexec.hostkeys import KnownHosts, Status, _matcher, prefer_key_types, shared_host_keys


def new_key() -> PKey:
    public = Ed25519PrivateKey.generate().public_key()
    kind, blob = public.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode().split()
    return PKey.from_type_string(kind, base64.b64decode(blob))


A, B, C = new_key(), new_key(), new_key()
RSA = RSAKey.generate(1024)


def line(names: str, key: PKey, marker: str = "") -> str:
    return f"{marker} {names} {key.get_name()} {key.get_base64()}".lstrip() + "\n"


def known(text: str, path: str = "known_hosts") -> KnownHosts:
    return KnownHosts(path, text)


@pytest.mark.parametrize("names, name, matches", [
    ("node1", "node1", True),
    ("node1", "NODE1", True),  # OpenSSH compares names without case
    ("Node1", "node1", True),
    ("node1", "node10", False),
    ("node1,node2", "node2", True),
    ("node*", "node10", True),
    ("node*", "mode1", False),
    ("node?", "node1", True),
    ("node?", "node10", False),
    ("*", "anything.example.org", True),
    ("127.0.2.*", "127.0.2.7", True),
    ("127.0.2.*", "[127.0.2.7]:2222", False),  # off port 22 the port is part of the name
    ("[127.0.2.*]:*", "[127.0.2.7]:2222", True),
    ("[127.0.2.7]:2222", "[127.0.2.7]:2222", True),
    ("[127.0.2.7]:2222", "127.0.2.7", False),
    ("node*,!node3", "node1", True),
    ("node*,!node3", "node3", False),  # an excluded name wins, whatever the order
    ("!node3,node*", "node3", False),
    ("!node3", "node1", False),  # exclusions alone match nothing
    ("a.b", "axb", False),  # only * and ? are special
])
def test_names_are_matched_as_openssh_matches_them(names: str, name: str, matches: bool) -> None:
    assert bool(known(line(names, A)).lookup(name)) is matches


def test_a_hashed_name_is_found_by_its_name_only() -> None:
    keys = known(line(HostKeys.hash_host("[node1]:2222"), A))
    assert keys.lookup("[node1]:2222") and keys.lookup("[NODE1]:2222")
    assert not keys.lookup("node1") and not keys.lookup("[node1]:2223")


def test_a_key_is_known_if_any_matching_line_holds_it() -> None:
    keys = known(line("node*", A) + line("node1", B))
    assert keys.check("node1", B).status is Status.KNOWN
    assert keys.check("node1", A).status is Status.KNOWN
    assert keys.check("node2", B).status is Status.CHANGED
    assert keys.check("other", B).status is Status.NEW


def test_a_known_key_of_another_type_makes_a_changed_key() -> None:
    assert known(line("node1", RSA)).check("node1", A).status is Status.CHANGED


def test_a_revoked_key_is_refused_even_where_it_is_listed() -> None:
    keys = known(line("node1", A) + line("*", A, "@revoked") + line("node1", B))
    verdict = keys.check("node1", A)
    assert (verdict.status, verdict.found.line if verdict.found else None) == (Status.REVOKED, 2)
    assert keys.check("node1", B).status is Status.KNOWN


def test_a_revoked_line_covers_only_the_hosts_it_names() -> None:
    keys = known(line("node1", A) + line("node2", A, "@revoked"))
    assert keys.check("node1", A).status is Status.KNOWN


def test_cert_authority_lines_are_counted_and_never_match() -> None:
    keys = known(line("*", A, "@cert-authority") + line("*.example.org", B, "@cert-authority"))
    assert keys.cert_authorities == 2
    assert keys.check("node1", A).status is Status.NEW


@pytest.mark.parametrize("bad", [
    "node1 ssh-ed25519\n",  # no key
    f"node1 ssh-ed25519 {A.get_base64()[:-3]}!!\n",  # not base64
    f"node1 ssh-rsa {A.get_base64()}\n",  # the type does not match the key
    f"@unknown node1 ssh-ed25519 {A.get_base64()}\n",
    f"|1|bad|salt ssh-ed25519 {A.get_base64()}\n",
    "# node1 ssh-ed25519 AAAA\n",
    "\n",
])
def test_lines_openssh_cannot_read_are_skipped(bad: str) -> None:
    keys = known(bad + line("node2", B))
    assert keys.check("node1", A).status is Status.NEW
    assert keys.check("node2", B).status is Status.KNOWN


def test_off_port_22_a_key_filed_under_the_bare_name_is_known_and_nothing_else() -> None:
    keys = known(line("node1", A))
    assert keys.check("[node1]:2222", A).status is Status.KNOWN
    assert keys.check("[node1]:2222", B).status is Status.NEW  # not CHANGED: OpenSSH's rule
    assert known(line("[node1]:2222", A)).check("node1", A).status is Status.NEW


NAMES = ["node1", "node2", "node3", "10.0.0.2", "[node3]:2222", "hashed", "[hashed]:22",
         "web7.example.org", "db1.example.org", "nowhere", "NODE1"]
MIXED = (line("node1", A) + line("node2,10.0.0.2", B) + line("[node3]:2222", A)
         + line("node1", RSA) + line(HostKeys.hash_host("hashed"), B)
         + line("*.example.org,!db?.example.org", C) + line("db*", A, "@revoked")
         + line("node?", C) + line("node1", A))


@pytest.mark.parametrize("name", NAMES)
def test_the_index_finds_what_trying_every_line_finds(name: str) -> None:
    keys = known(MIXED)
    tried = [number for number, text in enumerate(MIXED.splitlines(), 1)
             if _line_matches(text, name)]
    assert [entry.line for entry in keys.lookup(name)] == tried


def _line_matches(text: str, name: str) -> bool:
    names = text.split()[1] if text.startswith("@") else text.split()[0]
    matcher = _matcher(names)
    if isinstance(matcher, tuple):  # plain names: compared one by one here
        return name.lower() in matcher
    return matcher is not None and matcher(name.lower())


def test_a_remembered_key_is_appended_and_found(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    path.write_text(line("node1", A).rstrip("\n"))  # a last line without its newline
    keys = shared_host_keys(str(path))
    keys.remember("[Node2]:2222", B)
    assert keys.check("[node2]:2222", B).status is Status.KNOWN
    assert path.read_text() == line("node1", A) + line("[node2]:2222", B)
    assert KnownHosts(str(path), path.read_text()).check("[node2]:2222", B).status is Status.KNOWN


def test_an_excerpt_keeps_every_line_that_may_name_the_hosts_and_no_other() -> None:
    """What a gateway is sent: for its targets it answers as the whole file does."""
    lines = [line("node1,[10.0.0.1]:2201", A), line("node2,[10.0.0.2]:2202", B),
             line("[10.0.0.3]:2203", C), line("node3", A, "@revoked"), line("node4", B),
             line(HostKeys.hash_host("[node9]:22"), C), line("gw*,!gw2", A),
             "# a comment\n", line("10.0.0.2", C)]
    whole = known("".join(lines))
    hosts = [("node3", 22), ("10.0.0.3", 2203), ("node2", 22), ("10.0.0.2", 2202)]
    excerpt = whole.excerpt(hosts)
    assert excerpt == "".join(lines[i] for i in (1, 2, 3, 5, 6, 8))
    part = known(excerpt)
    for name in ("node3", "[10.0.0.3]:2203", "node2", "[10.0.0.2]:2202", "[node9]:22", "gw1"):
        for key in (A, B, C):
            assert part.check(name, key).status is whole.check(name, key).status


def test_a_file_is_parsed_once_and_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    path.write_text(line("node1", A))
    first = shared_host_keys(str(path))
    assert shared_host_keys(str(path)) is first
    path.write_text(line("node1", B) + line("node2", B))
    os.utime(path, ns=(1, 1))  # a different stamp, even within the same clock tick
    assert shared_host_keys(str(path)).check("node1", B).status is Status.KNOWN


def test_a_missing_file_knows_nothing(tmp_path: Path) -> None:
    assert shared_host_keys(str(tmp_path / "absent")).check("node1", A).status is Status.NEW


def test_dev_null_knows_nothing() -> None:
    assert shared_host_keys(os.devnull).check("node1", A).status is Status.NEW


def _fifo(tmp_path: Path) -> str:
    os.mkfifo(tmp_path / "fifo")
    return str(tmp_path / "fifo")


def _socket(tmp_path: Path) -> str:
    path = str(tmp_path / "sock")
    socket.socket(socket.AF_UNIX).bind(path)
    return path


@pytest.mark.parametrize("make", [lambda p: str(p), lambda p: "/dev/full", _fifo, _socket],
                         ids=["directory", "dev-full", "fifo", "socket"])
def test_what_cannot_be_a_known_hosts_file_is_an_error_naming_known_hosts(tmp_path: Path,
                                                                         make: object) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(ExecInfoError) as error:
        shared_host_keys(path)
    assert error.value.field == "known_hosts" and path in str(error.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_is_an_error_naming_known_hosts(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    path.write_text(line("node1", A))
    path.chmod(0)
    with pytest.raises(ExecInfoError, match="known_hosts"):
        shared_host_keys(str(path))


def test_the_key_types_known_for_a_host_are_asked_for_first() -> None:
    keys = known(line("node1", RSA))
    left, right = socket.socketpair()
    with left, right:
        transport = Transport(left)
        prefer_key_types(transport, keys.key_types("node1"))
        offered: List[str] = list(transport.get_security_options().key_types)
    assert offered[:2] == ["rsa-sha2-512", "rsa-sha2-256"]
    assert "ssh-ed25519" in offered[2:]
