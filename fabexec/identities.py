"""Private keys read once per process, not once per connection.

Given ``key_filename``, paramiko reads and parses the file at every connection,
trying one key class after another (RSA first). A fan-out to 256 hosts with one
``IdentityFile`` read it 256 times: 0.2 to 0.3 ms a host.
"""

from __future__ import annotations

import os
import stat
import threading
from typing import Any, Dict, Optional, Tuple

from paramiko import PKey, SSHException

from .errors import ExecInfoError
from .hostkeys import file_stamp

_lock = threading.Lock()
_loaded: Dict[Tuple[str, Optional[str]], Tuple[Tuple[int, int], PKey]] = {}

#: How the public halves begin (OpenSSH's ``.pub`` files, RFC 4716's format).
_PUBLIC = (b"ssh-", b"ecdsa-", b"sk-", b"---- BEGIN SSH2 PUBLIC KEY")


def private_key(path: str, passphrase: Optional[str] = None) -> PKey:
    """The private key at ``path``, parsed again only when the file changed.

    Raises `ExecInfoError` naming ``pkey`` when the file is missing, a
    directory, a device, a public key or nothing paramiko can read, or is
    encrypted and no ``passphrase`` is given; naming ``pkey_passphrase`` when
    the passphrase does not decrypt it. A passphrase given for a key that has
    none is not needed and not an error, as with ``ssh``.
    """
    stamp = file_stamp(path)
    with _lock:
        hit = _loaded.get((path, passphrase))
    if hit is not None and hit[0] == stamp:
        return hit[1]
    key = _parse(path, passphrase)
    with _lock:
        _loaded[(path, passphrase)] = (stamp, key)
    return key


def _parse(path: str, passphrase: Optional[str]) -> PKey:
    def bad(why: str) -> ExecInfoError:
        return ExecInfoError("pkey", f"{path!r} {why}")
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise bad("is a directory, not a private key")
        if not stat.S_ISREG(st.st_mode):
            raise bad("is not a regular file (a device, fifo or socket)")
        with open(path, "rb") as f:
            start = f.read(64).lstrip()
    except OSError as e:
        raise bad(f"cannot be read: {e.strerror}") from None
    if start.startswith(_PUBLIC):
        raise bad("holds a public key: give the private one (the file without .pub)")
    try:
        return PKey.from_path(path)
    except TypeError:  # cryptography's word for "encrypted, and no password given"
        pass
    except (SSHException, ValueError, OSError) as e:
        raise bad(f"is not a private key paramiko can read ({e})") from None
    if passphrase is None:
        raise bad("is encrypted: give its passphrase as pkey_passphrase=..., or load it "
                  "into ssh-agent and give no pkey")
    try:
        return PKey.from_path(path, passphrase.encode())
    except (SSHException, ValueError, TypeError, OSError):
        raise ExecInfoError("pkey_passphrase", f"does not decrypt {path!r}") from None


def loaded_key(path: str, passphrase: Optional[str] = None) -> Optional[PKey]:
    """The key at ``path``, parsed once; None when paramiko must read the file itself.

    paramiko reads it itself when a certificate goes with the key, or when the
    file cannot be used (it then reports why, as it always did: ssh_config's
    IdentityFile lines name files that may not exist).
    """
    if os.path.exists(f"{path}-cert.pub"):
        return None
    try:
        return private_key(path, passphrase)
    except ExecInfoError:
        return None


def preload_first_key(connect_kwargs: Dict[str, Any]) -> None:
    """Hand paramiko its first key file already parsed, as ``pkey``.

    paramiko tries ``pkey`` before the files of ``key_filename``, so the order in
    which keys are offered to the server stays the same.
    """
    files = connect_kwargs.get("key_filename")
    if isinstance(files, str):
        files = [files]
    if not files or "pkey" in connect_kwargs:
        return
    key = loaded_key(files[0], connect_kwargs.get("passphrase"))
    if key is not None:
        connect_kwargs.update(pkey=key, key_filename=files[1:])
