"""Getting fabexec onto a gateway that has only Python 3: asked, then brought.

The gateway's ``python3`` (`STAGE2`, one session a run) first says on a line of
its own (`PROBE`) its version, platform and whether it can import this very
fabexec (same source, found by a hash of its files) with its dependencies, then
waits to be told which fabexec to run. If it can import this one, it runs that.
If not, the client's own packages (fabexec and the installed closure of its
requirements, found through `importlib.metadata`) travel once per connection as a
gzipped tar to a small keeper (`HOLDER`) on a session of their own, are unpacked
into a folder of ``mktemp -d``'s kind (0700; under /dev/shm where it may hold
programs, since a disk's /tmp takes seconds to write 20 MB of small files to), and
put first on ``sys.path`` of each run's ``python3 -I`` (`STAGE2`) until the
connection closes, which ends the keeper and removes the folder.
Compiled packages (cryptography, bcrypt, ...) travel only to a Python of the
client's implementation, minor version and platform; otherwise
`GatewayUnusableError` says which and why.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import inspect
import io
import json
import os
import re
import shlex
import struct
import sys
import sysconfig
import tarfile
import textwrap
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple

from .errors import HostError

#: The interpreter started on gateways (the login PATH's), unless `PYTHON_VAR` names one
#: (as ClusterShell's CLUSTERSHELL_GW_PYTHON_EXECUTABLE does).
GATEWAY_PYTHON = "python3"
PYTHON_VAR = "FABEXEC_GATEWAY_PYTHON"


def gateway_python() -> str:
    return os.environ.get(PYTHON_VAR) or GATEWAY_PYTHON

#: What fabexec needs when its own distribution metadata cannot say (run from a clone).
REQUIRES = ("fabric", "invoke", "paramiko", "cryptography")

#: Modules the gateway must find besides fabexec to run the one it has.
NEEDED_MODULES = ("fabric", "invoke", "paramiko", "cryptography", "nacl", "bcrypt")

#: The suffixes of compiled extension modules.
COMPILED = (".so", ".pyd")


class GatewayUnusableError(HostError):
    """A gateway's Python cannot run fabexec: too old, or compiled packages that do not fit."""


def package_hash(folder: str) -> str:
    """sha256 over a package's ``.py`` files (relative names and contents), sorted."""
    digest = hashlib.sha256()
    for top, dirs, names in sorted(os.walk(folder)):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(n for n in names if n.endswith(".py")):
            path = os.path.join(top, name)
            digest.update(os.path.relpath(path, folder).encode() + b"\0")
            with open(path, "rb") as f:
                digest.update(f.read() + b"\0")
    return digest.hexdigest()


_PROBE_BODY = """
import importlib.util, json, sysconfig
def found(name):
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
spec = found("fabexec") and importlib.util.find_spec("fabexec")
ours = None
if spec and spec.submodule_search_locations:
    ours = package_hash(list(spec.submodule_search_locations)[0])
print(json.dumps({"python": list(sys.version_info[:3]), "impl": sys.implementation.name,
                  "platform": sysconfig.get_platform(), "cache_tag": sys.implementation.cache_tag,
                  "fabexec": ours, "missing": [m for m in NEEDED if not found(m)],
                  "folder": folder}),
      flush=True)
"""

#: What a gateway's Python says first: what it is and what it can import, and the
#: temporary ``folder`` it made (the client removes it should the gateway be SIGKILLed),
#: as a JSON line.
PROBE = ("import hashlib, os\n" + inspect.getsource(package_hash)
         + f"NEEDED = {list(NEEDED_MODULES)!r}\n" + _PROBE_BODY)


_COMMON = r"""
import io, os, shutil, signal, struct, sys, tarfile, tempfile
def take(n):
    data = bytearray()
    while len(data) < n:
        chunk = os.read(0, n - len(data))
        if not chunk:
            sys.exit(3)
        data += chunk
    return bytes(data)
def where():
    try:  # memory, when it can hold programs: a disk's tmp costs seconds to unpack to
        flags = os.statvfs("/dev/shm").f_flag
        if os.access("/dev/shm", os.W_OK) and not flags & (os.ST_NOEXEC | os.ST_RDONLY):
            return "/dev/shm"
    except (OSError, AttributeError):
        pass
    return None
"""

#: What keeps the brought fabexec on a gateway as long as the client's connection: the
#: bundle (its size, then the tar) comes on stdin and is unpacked into a folder, whose
#: name is written on stdout; the folder is removed when stdin ends (the channel or the
#: connection closed, sshd ending the session as a lost link is noticed) or on SIGHUP or
#: SIGTERM.
HOLDER = _COMMON + r"""
folder = tempfile.mkdtemp(prefix="fabexec-lib-", dir=where())
def gone(*_):
    shutil.rmtree(folder, ignore_errors=True)
    os._exit(0)
signal.signal(signal.SIGHUP, gone)
signal.signal(signal.SIGTERM, gone)
try:
    size, = struct.unpack(">Q", take(8))
    with tarfile.open(fileobj=io.BytesIO(take(size)), mode="r:gz") as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(folder, filter="data")
        else:
            tar.extractall(folder)
    os.write(1, (folder + "\n").encode())
    while os.read(0, 65536):
        pass
finally:
    gone()
"""

#: The gateway's program: once it has made its folder and said what it is (`PROBE`), the
#: folder of the fabexec to run (its length, then its name; empty when the gateway's own
#: fabexec serves) comes first on stdin, then the frames.
STAGE2 = _COMMON + r"""
folder = tempfile.mkdtemp(prefix="fabexec-gw-", dir=where())
code = 1
try:
""" + textwrap.indent(PROBE, "    ") + r"""
    size, = struct.unpack(">Q", take(8))
    if size:
        sys.path.insert(0, take(size).decode())
    from fabexec.gateway import serve
    code = serve(folder)
finally:
    shutil.rmtree(folder, ignore_errors=True)
sys.exit(code)
"""

#: Marks the gateway's processes in ``ps`` on its host.
GATEWAY_MARK = "fabexec-gateway"


#: Marks the process that keeps a gateway's copy of fabexec.
HOLDER_MARK = "fabexec-library"


def stage2_line() -> str:
    return f"{shlex.quote(gateway_python())} -I -c {shlex.quote(STAGE2)} {GATEWAY_MARK}"


def holder_line() -> str:
    return f"{shlex.quote(gateway_python())} -I -c {shlex.quote(HOLDER)} {HOLDER_MARK}"


def can_run_its_own(probe: Dict[str, Any]) -> bool:
    """Whether the gateway imports this very fabexec, with what it needs."""
    return probe.get("fabexec") == own_hash() and not probe.get("missing")


_own_hash: List[str] = []


def own_hash() -> str:
    if not _own_hash:
        _own_hash.append(package_hash(str(Path(__file__).parent)))
    return _own_hash[0]


def check_python(gateway: str, probe: Dict[str, Any]) -> None:
    """Raise `GatewayUnusableError` if the gateway's Python cannot take our packages."""
    version = tuple(probe.get("python") or ())
    if version < (3, 9):
        raise GatewayUnusableError(gateway, f"its {gateway_python()} is "
                                   f"{'.'.join(map(str, version)) or 'unknown'}; fabexec "
                                   "needs Python 3.9 or later")
    ours = (sys.implementation.name, sys.version_info[:2], sysconfig.get_platform())
    theirs = (probe.get("impl"), version[:2], probe.get("platform"))
    if ours != theirs and compiled_packages():
        raise GatewayUnusableError(gateway, (
            f"its {gateway_python()} is {theirs[0]} {'.'.join(map(str, theirs[1]))} on "
            f"{theirs[2]}, this one {ours[0]} {'.'.join(map(str, ours[1]))} on {ours[2]}: "
            f"the compiled packages ({', '.join(compiled_packages())}) cannot be brought "
            "there; install fabexec on the gateway"))


def requirements() -> List[metadata.Distribution]:
    """The installed distributions fabexec needs, closed over their own requirements."""
    try:
        roots = [_name(r) for r in metadata.distribution("fabexec").requires or []
                 if "extra ==" not in r]
    except metadata.PackageNotFoundError:
        roots = list(REQUIRES)
    found: Dict[str, metadata.Distribution] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in found:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # a requirement for another Python (its marker is false here)
        found[key] = dist
        todo += [_name(r) for r in dist.requires or [] if "extra ==" not in r]
    return sorted(found.values(), key=lambda d: d.metadata["Name"].lower())


def _name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    return match[1] if match else requirement


def compiled_packages() -> List[str]:
    return [d.metadata["Name"] for d in requirements()
            if any(str(f).endswith(COMPILED) for f in d.files or [])]


_bundles: Dict[str, bytes] = {}
_bundle_lock = threading.Lock()


def bundle(cache_tag: str) -> bytes:
    """This fabexec and its requirements as a gzipped tar (made once per process).

    Compiled bytecode goes along when the gateway's Python reads it (same cache
    tag; a file's time is kept, so it stays valid), sparing each gateway the
    compilation of some 20 MB of sources.
    """
    with _bundle_lock:
        if cache_tag not in _bundles:
            _bundles[cache_tag] = _make_bundle(cache_tag)
        return _bundles[cache_tag]


def _make_bundle(cache_tag: str) -> bytes:
    members: List[Tuple[Path, str]] = []
    own = Path(__file__).parent
    members += [(path, f"fabexec/{path.relative_to(own)}") for path in sorted(own.rglob("*"))
                if path.is_file() and "__pycache__" not in path.parts]
    for dist in requirements():
        for entry in dist.files or []:
            name = str(entry)
            if name.startswith("..") or os.path.isabs(name):
                continue  # scripts and data outside site-packages
            if "__pycache__" in Path(name).parts and f".{cache_tag}." not in name:
                continue
            path = Path(dist.locate_file(entry))
            if path.is_file():
                members.append((path, name))
    out = io.BytesIO()
    seen: Set[str] = set()
    with tarfile.open(fileobj=out, mode="w:gz", compresslevel=1) as tar:
        for path, name in members:
            if name not in seen:
                seen.add(name)
                tar.add(str(path), arcname=name, recursive=False)
    return out.getvalue()


def preamble(data: bytes) -> bytes:
    """What `HOLDER` and `STAGE2` read first: a size, then as many bytes."""
    return struct.pack(">Q", len(data)) + data


def read_probe(line: bytes) -> Optional[Dict[str, Any]]:
    """The probe's answer if ``line`` is one (a login script may print lines before it)."""
    try:
        answer = json.loads(line)
    except ValueError:
        return None
    return answer if isinstance(answer, dict) and "python" in answer else None


def probe_failure(gateway: str, text: str) -> GatewayUnusableError:
    """What the gateway said instead of answering the probe (``text``: its output)."""
    return GatewayUnusableError(gateway, f"{gateway_python()} did not answer as expected: "
                                f"{text.strip()[-300:] or 'no output'}")
