"""Host keys checked the way OpenSSH checks them, parsed once per process.

Fabric never reads known_hosts (its client uses ``AutoAddPolicy``). Here every
client of one known_hosts file shares one parsed `HostKeys`: paramiko's
parser compares each line with all earlier ones, so parsing it per connection
costs 5 ms a host at 64 hosts and grows with the square of the file.
"""

from __future__ import annotations

import os
import threading
from typing import Dict, Tuple

from paramiko import HostKeys, MissingHostKeyPolicy, PKey, SSHClient

from .errors import HostKeyError

_lock = threading.Lock()
_parsed: Dict[str, Tuple[Tuple[int, int], HostKeys]] = {}


def _stamp(path: str) -> Tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (0, 0)
    return (st.st_mtime_ns, st.st_size)


def shared_host_keys(path: str) -> HostKeys:
    """The parsed keys of ``path``, parsed again only when the file changed."""
    stamp = _stamp(path)
    with _lock:
        cached = _parsed.get(path)
        if cached is None or cached[0] != stamp:
            keys = HostKeys(path) if os.path.exists(path) else HostKeys()
            _parsed[path] = cached = (stamp, keys)
        return cached[1]


def _remember(path: str, hostname: str, key: PKey, keys: HostKeys) -> None:
    """Add ``key`` to the shared keys and to the file, without a new parse."""
    with _lock:
        keys.add(hostname, key.get_name(), key)
        if not os.path.isdir(os.path.dirname(path) or "."):
            return  # remembered for this process only
        with open(path, "a") as f:
            f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        if path in _parsed:
            _parsed[path] = (_stamp(path), keys)


class KnownHostsClient(SSHClient):
    """paramiko's `SSHClient` whose known keys are those of one shared file."""

    def __init__(self, known_hosts: str) -> None:
        super().__init__()
        # SSHClient has no setter for the keys it checks against.
        self._host_keys = shared_host_keys(known_hosts)
        self.known_hosts = known_hosts


class AcceptNewPolicy(MissingHostKeyPolicy):
    """OpenSSH's ``StrictHostKeyChecking=accept-new``: trust and remember a new key."""

    def missing_host_key(self, client: SSHClient, hostname: str, key: PKey) -> None:
        assert isinstance(client, KnownHostsClient)
        _remember(client.known_hosts, hostname, key, client.get_host_keys())


class RefusePolicy(MissingHostKeyPolicy):
    """``strict_ssh=True``: an unknown host key is refused."""

    def missing_host_key(self, client: SSHClient, hostname: str, key: PKey) -> None:
        path = getattr(client, "known_hosts", "known_hosts")
        raise HostKeyError(hostname, f"unknown host key ({key.get_name()}) not in {path} "
                           "and strict_ssh=True refuses it")
