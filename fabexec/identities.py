"""Private keys read once per process, not once per connection.

Given ``key_filename``, paramiko reads and parses the file at every connection,
trying one key class after another (RSA first). A fan-out to 256 hosts with one
``IdentityFile`` read it 256 times: 0.2 to 0.3 ms a host.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Dict, Optional, Tuple

from paramiko import PKey, SSHException

from .hostkeys import file_stamp

_lock = threading.Lock()
_loaded: Dict[str, Tuple[Tuple[int, int], PKey]] = {}


def loaded_key(path: str) -> Optional[PKey]:
    """The key at ``path``, parsed again only when the file changed.

    None when paramiko must read the file itself: a passphrase is needed, a
    certificate goes with the key, or the file cannot be read or parsed (paramiko
    then reports why, as it always did).
    """
    if os.path.exists(f"{path}-cert.pub"):
        return None
    stamp = file_stamp(path)
    with _lock:
        hit = _loaded.get(path)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    try:
        key = PKey.from_path(path)
    except (SSHException, OSError, ValueError, TypeError):
        return None
    with _lock:
        _loaded[path] = (stamp, key)
    return key


def preload_first_key(connect_kwargs: Dict[str, Any]) -> None:
    """Hand paramiko its first key file already parsed, as ``pkey``.

    paramiko tries ``pkey`` before the files of ``key_filename``, so the order in
    which keys are offered to the server stays the same.
    """
    files = connect_kwargs.get("key_filename")
    if isinstance(files, str):
        files = [files]
    if not files or "pkey" in connect_kwargs or connect_kwargs.get("passphrase"):
        return
    key = loaded_key(files[0])
    if key is not None:
        connect_kwargs.update(pkey=key, key_filename=files[1:])
