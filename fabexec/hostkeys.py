"""Host keys checked the way OpenSSH checks them, parsed once per process.

Fabric never reads known_hosts (its client uses ``AutoAddPolicy``), and paramiko's
`HostKeys` knows plain and hashed names only: a line ``127.0.2.* <key>`` was ignored,
and an ``@revoked`` or ``@cert-authority`` line made its parser raise at every
connection. Here a file is read as sshd(8) describes it ("SSH_KNOWN_HOSTS FILE
FORMAT") and a host's key is judged as OpenSSH's client judges it:

- a line's names are a comma list of patterns (``*``, ``?``, ``!`` to exclude),
  compared without case, or one hashed name ``|1|salt|hmac``; a host on a port
  other than 22 is looked up as ``[host]:port`` and, if no line names it so, by
  its bare name (a key found there is accepted, nothing else);
- the key is known if any matching line holds it, CHANGED if matching lines hold
  only other keys (of any type), NEW if no line matches, and REVOKED if a matching
  ``@revoked`` line holds it, whatever the other lines say;
- ``@cert-authority`` lines are skipped, with one warning per file: paramiko's
  client never asks for host certificates, so servers show plain keys, which
  OpenSSH too checks against plain lines only.

Every connection to hosts of one file shares one parse, read again only when the
file changes: paramiko parsed the file per connection, comparing each line with
all earlier ones (5 ms a host at 64 hosts, growing with the square of the file).
Lines naming plain hosts are found through a dict; hashed and wildcard lines can
only be found by trying them, as OpenSSH tries every line.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import logging
import os
import re
import stat
import struct
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

from paramiko import MissingHostKeyPolicy, PKey, SSHClient, Transport

from .errors import ExecInfoError, HostKeyError

log = logging.getLogger(__name__)

#: SSH's port: known_hosts names a host on any other as ``[host]:port``.
SSH_PORT = 22

_lock = threading.Lock()
_parsed: Dict[str, Tuple[Tuple[int, int], KnownHosts]] = {}
_warned: Set[str] = set()  # files whose @cert-authority lines were reported


def file_stamp(path: str) -> Tuple[int, int]:
    """What tells that a file changed: modification time and size; zeros if absent."""
    try:
        st = os.stat(path)
    except OSError:
        return (0, 0)
    return (st.st_mtime_ns, st.st_size)


class Status(enum.Enum):
    """What known_hosts says of a host's key (OpenSSH's ``HOST_OK``, ``HOST_NEW``, ...)."""

    KNOWN = "known"
    NEW = "new"
    CHANGED = "changed"
    REVOKED = "revoked"


@dataclass(frozen=True)
class KnownKey:
    """One key line: where it is, the key (as the wire blob), and whether it is revoked."""

    line: int
    names: str
    key_type: str
    blob: bytes
    revoked: bool = False


@dataclass(frozen=True)
class Verdict:
    status: Status
    #: The line that decided: the one holding the key, or one holding another.
    found: Optional[KnownKey] = None


Matcher = Callable[[str], bool]


class KnownHosts:
    """The lines of one known_hosts file, indexed so that a look-up does not grow with it."""

    def __init__(self, path: str, text: str = "") -> None:
        self.path = path
        self.cert_authorities = 0  # @cert-authority lines skipped
        self._by_name: Dict[str, List[KnownKey]] = {}
        self._tried: List[Tuple[Matcher, KnownKey]] = []  # hashed and wildcard lines
        self._lock = threading.Lock()  # `remember` may add while others look up
        self._text = text.splitlines()
        for number, line in enumerate(self._text, 1):
            self._add_line(number, line)

    def check(self, name: str, key: PKey) -> Verdict:
        """What this file says of ``key`` shown by the host looked up as ``name``
        (``host``, or ``[host]:port`` off port 22, as paramiko names it)."""
        verdict = self._check(name, key.asbytes())
        bare = _bare_host(name)
        if verdict.status is Status.NEW and bare is not None:
            # OpenSSH tries the name without its port before calling a host new.
            without_port = self._check(bare, key.asbytes())
            if without_port.status is Status.KNOWN:
                return without_port
        return verdict

    def key_types(self, name: str) -> List[str]:
        """The types of the plain keys known for ``name``, first line first."""
        types: List[str] = []
        for entry in self.lookup(name):
            if not entry.revoked and entry.key_type not in types:
                types.append(entry.key_type)
        return types

    def lookup(self, name: str) -> List[KnownKey]:
        """Every key line whose names match ``name``, in file order."""
        name = name.lower()
        with self._lock:
            found = list(self._by_name.get(name, ()))
            found += [entry for matches, entry in self._tried if matches(name)]
        return sorted(found, key=lambda entry: entry.line)

    def remember(self, name: str, key: PKey) -> None:
        """Append ``key`` for ``name`` to the file (if its folder exists) and to this parse."""
        name = name.lower()
        line = f"{name} {key.get_name()} {key.get_base64()}"
        if os.path.isdir(os.path.dirname(self.path) or "."):  # else for this process only
            with open(self.path, "ab+") as f:
                f.seek(max(f.seek(0, os.SEEK_END) - 1, 0))
                ended = f.read(1) in (b"", b"\n")  # never onto a last line without its newline
                f.write((("" if ended else "\n") + line + "\n").encode())
        with self._lock:
            self._text.append(line)
            self._add_line(len(self._text), line)

    def excerpt(self, hosts: Iterable[Tuple[str, int]]) -> str:
        """The lines that may name one of ``hosts`` (name, port): every hashed or wildcard
        line, and the plain lines naming one, in file order.

        A gateway checks its targets' keys against these as against the whole file,
        without being sent a site's other lines (130 KB for 1,000 nodes, to each gateway).
        """
        names = {name.lower() for host, port in hosts for name in (host, _lookup_name(host, port))}
        with self._lock:
            numbers = {entry.line for name in names for entry in self._by_name.get(name, ())}
            numbers.update(entry.line for _, entry in self._tried)
            return "".join(self._text[number - 1] + "\n" for number in sorted(numbers))

    def _check(self, name: str, blob: bytes) -> Verdict:
        plain = []
        for entry in self.lookup(name):
            if entry.revoked and entry.blob == blob:
                return Verdict(Status.REVOKED, entry)
            if not entry.revoked:
                plain.append(entry)
        for entry in plain:
            if entry.blob == blob:
                return Verdict(Status.KNOWN, entry)
        return Verdict(Status.CHANGED, plain[0]) if plain else Verdict(Status.NEW)

    def _add_line(self, number: int, line: str) -> None:
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            return
        marker = fields.pop(0) if fields[0].startswith("@") else None
        if marker == "@cert-authority":
            self.cert_authorities += 1
            return
        if marker not in (None, "@revoked") or len(fields) < 3:
            return  # OpenSSH skips what it cannot read
        names, key_type, blob = fields[0], fields[1], _blob(fields[2])
        matcher = _matcher(names)
        if blob is None or _blob_type(blob) != key_type or matcher is None:
            return
        entry = KnownKey(number, names, key_type, blob, revoked=marker is not None)
        if isinstance(matcher, tuple):
            for name in matcher:
                self._by_name.setdefault(name, []).append(entry)
        else:
            self._tried.append((matcher, entry))


def _blob(text: str) -> Optional[bytes]:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _blob_type(blob: bytes) -> Optional[str]:
    """The key type a wire blob starts with (a string: 4-byte length, then the name)."""
    if len(blob) < 4:
        return None
    (length,) = struct.unpack(">I", blob[:4])
    try:
        return blob[4:4 + length].decode("ascii")
    except UnicodeDecodeError:
        return None


def _matcher(names: str) -> Union[Matcher, Tuple[str, ...], None]:
    """How a line's names field is matched: the plain names themselves (for the index),
    a function (hashed names, patterns), or None when the field cannot be read."""
    if names.startswith("|"):
        return _hashed(names)
    patterns = [p for p in names.lower().split(",") if p]
    if not any(p.startswith("!") or "*" in p or "?" in p for p in patterns):
        return tuple(patterns) or None
    compiled = [(p.startswith("!"), _pattern(p.lstrip("!"))) for p in patterns]

    def matches(name: str) -> bool:
        positive = False
        for negated, pattern in compiled:
            if pattern(name):
                if negated:
                    return False  # an excluded name wins over every other pattern
                positive = True
        return positive
    return matches


def _pattern(pattern: str) -> Matcher:
    """OpenSSH's patterns: ``*`` any run of characters, ``?`` one, nothing else special."""
    if "*" not in pattern and "?" not in pattern:
        return pattern.__eq__
    regex = re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c)
                               for c in pattern), re.DOTALL)
    return lambda name: regex.fullmatch(name) is not None


def _hashed(field: str) -> Optional[Matcher]:
    """``|1|salt|hmac``: HMAC-SHA1 of the host name keyed by the salt (OpenSSH's HashKnownHosts)."""
    parts = field.split("|")
    if len(parts) != 4 or parts[1] != "1":
        return None
    salt, digest = _blob(parts[2]), _blob(parts[3])
    if salt is None or digest is None or len(salt) != hashlib.sha1().digest_size:
        return None
    return lambda name: hmac.compare_digest(
        hmac.new(salt, name.encode(), hashlib.sha1).digest(), digest)


_PORTED = re.compile(r"\[(.+)\]:(\d+)")


def _bare_host(name: str) -> Optional[str]:
    """``host`` of ``[host]:port`` (a port other than 22), else None."""
    found = _PORTED.fullmatch(name)
    return found.group(1) if found and int(found.group(2)) != SSH_PORT else None


def _read(path: str) -> str:
    """The file's text: empty if absent; a typed error naming ``known_hosts`` if it is no
    file that can be read (a directory, a device such as /dev/full, a fifo)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return ""
    except OSError as e:
        raise ExecInfoError("known_hosts", f"{path!r}: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ExecInfoError("known_hosts", f"{path!r} is a directory, not a known_hosts file")
    if not stat.S_ISREG(st.st_mode):
        if _is_devnull(st):
            return ""  # "UserKnownHostsFile /dev/null": nothing known, nothing kept
        raise ExecInfoError("known_hosts", f"{path!r} is not a regular file (a device, fifo "
                            "or socket); give a known_hosts file, or /dev/null for none")
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", errors="replace")
    except OSError as e:
        raise ExecInfoError("known_hosts", f"cannot read {path!r}: {e.strerror}") from None


def _is_devnull(st: os.stat_result) -> bool:
    null = os.stat(os.devnull)
    return (st.st_dev, st.st_ino, st.st_rdev) == (null.st_dev, null.st_ino, null.st_rdev)


def shared_host_keys(path: str) -> KnownHosts:
    """The parsed lines of ``path``, parsed again only when the file changed.

    Raises `ExecInfoError` naming ``known_hosts`` when ``path`` cannot be a
    known_hosts file, so that a bad file fails before any host is dialled.
    """
    stamp = file_stamp(path)
    with _lock:
        cached = _parsed.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        keys = KnownHosts(path, _read(path))
        _parsed[path] = (stamp, keys)
        if keys.cert_authorities and path not in _warned:
            _warned.add(path)
            log.warning("%s: %d @cert-authority line(s) ignored: paramiko cannot check host "
                        "certificates, so hosts are checked against plain keys only",
                        path, keys.cert_authorities)
        return keys


def _remember(keys: KnownHosts, name: str, key: PKey) -> None:
    """Add ``key`` to the file and to its shared parse, without parsing it again."""
    with _lock:
        keys.remember(name, key)
        if _parsed.get(keys.path, (None, None))[1] is keys:  # not if parsed anew since
            _parsed[keys.path] = (file_stamp(keys.path), keys)


def prefer_key_types(transport: Transport, known: Sequence[str]) -> None:
    """Ask the server first for the key types known_hosts holds for it, as OpenSSH does:
    a host known by its RSA key must not show its Ed25519 key, which would be CHANGED."""
    offered = transport.get_security_options().key_types
    first = [alg for alg in offered if _key_type_of(alg) in known]
    transport.get_security_options().key_types = first + [a for a in offered if a not in first]


def _key_type_of(algorithm: str) -> str:
    """The key type a host key algorithm signs with (RSA keys sign with SHA-2 too)."""
    return "ssh-rsa" if algorithm in ("rsa-sha2-256", "rsa-sha2-512") else algorithm


class KnownHostsClient(SSHClient):
    """paramiko's `SSHClient` whose host keys are judged against one shared file.

    paramiko's own check (``_host_keys``) stays empty, so every server key reaches
    the policy, which asks `KnownHosts` as OpenSSH would.
    """

    def __init__(self, known_hosts: str) -> None:
        super().__init__()
        self.known_hosts = known_hosts
        shared_host_keys(known_hosts)  # a file that cannot be read fails here, before dialling

    def connect(self, hostname: str, port: int = SSH_PORT, *args: Any, **kwargs: Any) -> Any:
        known = shared_host_keys(self.known_hosts).key_types(_lookup_name(hostname, port))
        make = kwargs.pop("transport_factory", None) or Transport
        # paramiko gives the key exchange 15 s after the banner, whatever the caller's
        # timeouts: with a thousand handshakes at once on a loaded machine sshd took
        # longer, and the host was lost to a bare EOFError. It gets as long as the banner.
        handshake = kwargs.get("banner_timeout")

        def transport(*a: Any, **kw: Any) -> Transport:
            made = make(*a, **kw)
            prefer_key_types(made, known)
            if handshake is not None:
                made.handshake_timeout = max(made.handshake_timeout, handshake)
            return made
        return super().connect(hostname, port, *args, transport_factory=transport, **kwargs)


def _lookup_name(hostname: str, port: int) -> str:
    return hostname if port == SSH_PORT else f"[{hostname}]:{port}"


def _judge(client: SSHClient, hostname: str, key: PKey, strict: bool) -> None:
    """Accept ``key`` or raise `HostKeyError`; remember it when new and not ``strict``."""
    assert isinstance(client, KnownHostsClient)
    keys = shared_host_keys(client.known_hosts)
    verdict = keys.check(hostname, key)
    where = f"{keys.path}:{verdict.found.line}" if verdict.found else keys.path
    shown = f"{key.get_name()} {key.fingerprint}"
    if verdict.status is Status.KNOWN:
        return
    if verdict.status is Status.REVOKED:
        raise HostKeyError(hostname, f"host key {shown} is marked @revoked at {where}; "
                           "refusing it")
    if verdict.status is Status.CHANGED:
        raise HostKeyError(hostname, f"host key CHANGED: got {shown}, {where} has another "
                           f"({verdict.found.names} {verdict.found.key_type}); refusing "
                           "(possible man-in-the-middle)")
    if strict:
        raise HostKeyError(hostname, f"unknown host key ({shown}) not in {keys.path} and "
                           "strict_ssh=True refuses it")
    _remember(keys, hostname, key)


class AcceptNewPolicy(MissingHostKeyPolicy):
    """OpenSSH's ``StrictHostKeyChecking=accept-new``: trust and remember a new key;
    a changed or revoked one is refused."""

    def missing_host_key(self, client: SSHClient, hostname: str, key: PKey) -> None:
        _judge(client, hostname, key, strict=False)


class RefusePolicy(MissingHostKeyPolicy):
    """``strict_ssh=True``: only a key known_hosts holds is accepted."""

    def missing_host_key(self, client: SSHClient, hostname: str, key: PKey) -> None:
        _judge(client, hostname, key, strict=True)
