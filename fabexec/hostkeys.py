"""Host keys checked the way OpenSSH checks them, parsed once per process.

Fabric never reads known_hosts (its client uses ``AutoAddPolicy``). Here every
client of one known_hosts file shares one parsed `HostKeys`: paramiko's
parser compares each line with all earlier ones, so parsing it per connection
costs 5 ms a host at 64 hosts and grows with the square of the file. Look-ups
go through an index of plain host names, so they do not grow with the file.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Dict, List, Optional, Tuple

from paramiko import HostKeys, MissingHostKeyPolicy, PKey, SSHClient

from .errors import HostKeyError
from .seams import NarrowedHostKeys, use_host_keys

_lock = threading.Lock()
_parsed: Dict[str, Tuple[Tuple[int, int], HostKeys]] = {}


def file_stamp(path: str) -> Tuple[int, int]:
    """What tells that a file changed: modification time and size; zeros if absent."""
    try:
        st = os.stat(path)
    except OSError:
        return (0, 0)
    return (st.st_mtime_ns, st.st_size)


class IndexedHostKeys(NarrowedHostKeys):
    """paramiko's `HostKeys`, finding a host without comparing it with every line.

    paramiko's ``lookup`` walks all entries (0.6 ms a host with 256 of them).
    Here plain names lead through a dict to their entries; hashed ones
    (``|1|salt|hash``) can only be found by hashing, so they are all tried, as
    OpenSSH tries them. Entries keep their file order.
    """

    def __init__(self, filename: Optional[str] = None) -> None:
        self._index: Optional[Tuple[List[Any], int, Dict[str, List[int]], List[int]]] = None
        self._index_lock = threading.Lock()  # every connection of a fan-out looks up at once
        super().__init__(filename)

    def candidates(self, hostname: str) -> List[Any]:
        with self._index_lock:
            by_name, hashed = self._names()
            entries = self.entries()
            return [entries[i] for i in sorted(by_name.get(hostname, []) + hashed)]

    def _names(self) -> Tuple[Dict[str, List[int]], List[int]]:
        """The index, brought up to date: entries are appended (paramiko's ``load``
        looks up every line before appending it), or else it is built anew."""
        if self._index is None or self._index[0] is not self.entries():
            self._index = (self.entries(), 0, {}, [])
        entries, indexed, by_name, hashed = self._index
        for i in range(indexed, len(entries)):
            names = entries[i].hostnames
            if any(name.startswith("|1|") for name in names):
                hashed.append(i)
            for name in set(names):
                by_name.setdefault(name, []).append(i)
        self._index = (entries, len(entries), by_name, hashed)
        return by_name, hashed

    def __delitem__(self, key: str) -> None:
        with self._index_lock:
            super().__delitem__(key)
            self._index = None  # entries moved: index them again


def shared_host_keys(path: str) -> HostKeys:
    """The parsed keys of ``path``, parsed again only when the file changed."""
    stamp = file_stamp(path)
    with _lock:
        cached = _parsed.get(path)
        if cached is None or cached[0] != stamp:
            keys = IndexedHostKeys(path if os.path.exists(path) else None)
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
        if _parsed.get(path, (None, None))[1] is keys:  # not if parsed anew since
            _parsed[path] = (file_stamp(path), keys)


class KnownHostsClient(SSHClient):
    """paramiko's `SSHClient` whose known keys are those of one shared file."""

    def __init__(self, known_hosts: str) -> None:
        super().__init__()
        use_host_keys(self, shared_host_keys(known_hosts))
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
