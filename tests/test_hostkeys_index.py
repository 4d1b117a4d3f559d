"""IndexedHostKeys answers exactly as paramiko's HostKeys, through every kind of change."""

import base64
from pathlib import Path
from typing import List

import pytest
from paramiko import HostKeys, RSAKey
from paramiko.ed25519key import Ed25519Key

from fabexec.hostkeys import IndexedHostKeys

ED_A = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
ED_B = "AAAAC3NzaC1lZDI1NTE5AAAAIHHdMQ9rzu47Ui7gXuWkHjP5DJDhAjSwJhAtP3lf5lLP"
RSA_A = RSAKey.generate(1024).get_base64()

KNOWN_HOSTS = f"""\
node1 ssh-ed25519 {ED_A}
node2,10.0.0.2 ssh-ed25519 {ED_B}
[node3]:2222 ssh-ed25519 {ED_A}
node1 ssh-rsa {RSA_A}
# a comment, then a duplicate line that paramiko folds into the first
node1 ssh-ed25519 {ED_A}
"""

NAMES = ["node1", "node2", "10.0.0.2", "[node3]:2222", "node3", "hashed", "[hashed]:22",
         "nowhere"]


def _both(tmp_path: Path, text: str) -> List[HostKeys]:
    path = tmp_path / "known_hosts"
    path.write_text(text)
    return [HostKeys(str(path)), IndexedHostKeys(str(path))]


def _view(keys: HostKeys, name: str) -> object:
    found = keys.lookup(name)
    return None if found is None else sorted((t, found[t].get_base64()) for t in found)


def _hashed_line(name: str, key: str) -> str:
    return f"{HostKeys.hash_host(name)} ssh-ed25519 {key}\n"


@pytest.mark.parametrize("name", NAMES)
def test_lookup_matches_paramiko(tmp_path: Path, name: str) -> None:
    text = KNOWN_HOSTS + _hashed_line("hashed", ED_B) + _hashed_line("[hashed]:22", ED_A)
    theirs, ours = _both(tmp_path, text)
    assert _view(ours, name) == _view(theirs, name)


def test_added_key_is_found_and_replaces_the_same_type(tmp_path: Path) -> None:
    theirs, ours = _both(tmp_path, KNOWN_HOSTS)
    _view(ours, "node1")  # the index exists before the additions
    for keys in (theirs, ours):
        keys.add("new", "ssh-ed25519", Ed25519Key(data=_blob(ED_A)))
        keys.add("node2", "ssh-ed25519", Ed25519Key(data=_blob(ED_A)))
    for name in ("new", "node2", "10.0.0.2"):
        assert _view(ours, name) == _view(theirs, name)


def test_key_set_through_a_lookup_is_kept(tmp_path: Path) -> None:
    theirs, ours = _both(tmp_path, KNOWN_HOSTS)
    for keys in (theirs, ours):
        keys.lookup("node2")["ssh-rsa"] = RSAKey(data=_blob(RSA_A))
    assert _view(ours, "node2") == _view(theirs, "node2")
    assert len(ours) == len(theirs)


def test_deleted_then_added_entries_are_found(tmp_path: Path) -> None:
    theirs, ours = _both(tmp_path, KNOWN_HOSTS)
    _view(ours, "node2")
    for keys in (theirs, ours):
        del keys["node1"]
        keys.add("later", "ssh-ed25519", Ed25519Key(data=_blob(ED_B)))
    for name in NAMES + ["later"]:
        assert _view(ours, name) == _view(theirs, name)


def test_cleared_keys_find_nothing(tmp_path: Path) -> None:
    _, ours = _both(tmp_path, KNOWN_HOSTS)
    _view(ours, "node1")
    ours.clear()
    assert ours.lookup("node1") is None


def _blob(text: str) -> bytes:
    return base64.b64decode(text)
