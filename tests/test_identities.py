"""Private keys are parsed once, again when the file changes, and never when paramiko must."""

import os
import shutil
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fabexec.identities import loaded_key, preload_first_key


def _write_key(path: Path, password: bytes = b"") -> Path:
    encryption = (serialization.BestAvailableEncryption(password) if password
                  else serialization.NoEncryption())
    path.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, encryption))
    path.chmod(0o600)
    return path


def test_a_key_is_parsed_once(tmp_path: Path) -> None:
    path = str(_write_key(tmp_path / "id"))
    assert loaded_key(path) is loaded_key(path)


def test_a_changed_key_file_is_parsed_again(tmp_path: Path) -> None:
    path = _write_key(tmp_path / "id")
    first = loaded_key(str(path))
    _write_key(tmp_path / "other")
    shutil.move(tmp_path / "other", path)
    os.utime(path, ns=(1, 1))  # a different stamp, even within the same clock tick
    second = loaded_key(str(path))
    assert second is not None and first is not None
    assert second.get_base64() != first.get_base64()


def test_keys_paramiko_must_read_itself_are_left_to_it(tmp_path: Path) -> None:
    encrypted = _write_key(tmp_path / "encrypted", password=b"secret")
    certified = _write_key(tmp_path / "certified")
    (tmp_path / "certified-cert.pub").write_text("ssh-ed25519-cert-v01@openssh.com AAAA\n")
    garbage = tmp_path / "garbage"
    garbage.write_text("not a key\n")
    for path in (encrypted, certified, garbage, tmp_path / "missing"):
        assert loaded_key(str(path)) is None, path


def test_the_first_key_file_becomes_pkey_and_the_rest_stay_files(tmp_path: Path) -> None:
    first, second = _write_key(tmp_path / "a"), _write_key(tmp_path / "b")
    kwargs = {"key_filename": [str(first), str(second)], "look_for_keys": False}
    preload_first_key(kwargs)
    assert kwargs["pkey"] is loaded_key(str(first))
    assert kwargs["key_filename"] == [str(second)]
    assert kwargs["look_for_keys"] is False


def test_an_unreadable_first_key_leaves_the_files_as_they_were(tmp_path: Path) -> None:
    encrypted = _write_key(tmp_path / "a", password=b"secret")
    kwargs = {"key_filename": [str(encrypted)]}
    preload_first_key(kwargs)
    assert kwargs == {"key_filename": [str(encrypted)]}


def test_a_given_pkey_or_passphrase_is_left_alone(tmp_path: Path) -> None:
    path = str(_write_key(tmp_path / "a"))
    for kwargs in ({"key_filename": [path], "pkey": "given"},
                   {"key_filename": [path], "passphrase": "pw"}):
        before = dict(kwargs)
        preload_first_key(kwargs)
        assert kwargs == before
