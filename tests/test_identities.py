"""Private keys are parsed once, again when the file changes, and never when paramiko must."""

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fabexec.errors import ExecInfoError
from fabexec.identities import loaded_key, preload_first_key, private_key


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


def test_a_given_pkey_is_left_alone(tmp_path: Path) -> None:
    path = str(_write_key(tmp_path / "a"))
    kwargs = {"key_filename": [path], "pkey": "given"}
    preload_first_key(kwargs)
    assert kwargs == {"key_filename": [path], "pkey": "given"}


def test_an_encrypted_first_key_is_preloaded_with_its_passphrase(tmp_path: Path) -> None:
    encrypted = str(_write_key(tmp_path / "a", password=b"secret"))
    kwargs = {"key_filename": [encrypted], "passphrase": "secret"}
    preload_first_key(kwargs)
    assert kwargs["pkey"] is private_key(encrypted, "secret")
    assert kwargs["key_filename"] == []


def _public(path: Path) -> Path:
    public = path.with_name(path.name + ".pub")
    key = serialization.load_ssh_private_key(path.read_bytes(), None)
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                     serialization.PublicFormat.OpenSSH))
    return public


@pytest.mark.parametrize("make, says", [
    (lambda d: d / "missing", "No such file"),
    (lambda d: d, "directory"),
    (lambda d: Path("/dev/full"), "not a regular file"),
    (lambda d: _public(_write_key(d / "id")), "public key"),
    (lambda d: _garbage(d / "garbage"), "not a private key"),
    (lambda d: _write_key(d / "encrypted", password=b"secret"), "pkey_passphrase"),
], ids=["missing", "directory", "device", "public", "garbage", "encrypted"])
def test_a_key_that_cannot_be_used_is_an_error_naming_pkey(tmp_path: Path, make: Any,
                                                           says: str) -> None:
    path = str(make(tmp_path))
    with pytest.raises(ExecInfoError) as error:
        private_key(path)
    assert error.value.field == "pkey"
    assert path in str(error.value) and says in str(error.value)


def _garbage(path: Path) -> Path:
    path.write_text("not a key\n")
    return path


def test_a_wrong_passphrase_is_an_error_naming_pkey_passphrase(tmp_path: Path) -> None:
    encrypted = str(_write_key(tmp_path / "a", password=b"secret"))
    with pytest.raises(ExecInfoError) as error:
        private_key(encrypted, "Xq7-guess")
    assert error.value.field == "pkey_passphrase" and "Xq7-guess" not in str(error.value)


def test_a_passphrase_for_a_key_without_one_is_not_needed(tmp_path: Path) -> None:
    path = str(_write_key(tmp_path / "a"))
    assert private_key(path, "unneeded").get_base64() == private_key(path).get_base64()
