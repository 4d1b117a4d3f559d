"""The private names fabexec relies on still exist and still work, on the installed versions.

``fabexec/seams.py`` lists every private name of paramiko, invoke and Fabric
that fabexec uses. Here each one is checked as the library has it now (it
exists, takes the parameters we pass, and the library still goes through it
where we rely on that), and the rest of fabexec is searched for a private
name the list misses. ``inv test`` runs this file on the newest and on the
oldest versions setup.cfg allows.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
import socket
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Set, Tuple

import pytest
from invoke.config import DataProxy
from invoke.runners import Runner
from paramiko import (
    Channel,
    Message,
    SFTPAttributes,
    SFTPClient,
    SFTPFile,
    SSHConfig,
    Transport,
)
from paramiko.sftp import SFTP_EOF, SFTP_NO_SUCH_FILE, SFTP_OK, BaseSFTP

import fabexec
from fabexec import connections, seams
from fabexec.channel_buffer import GatheringPipe
from fabexec.sandbox import SandboxCluster
from tests.clusters import ssh_info

LIBRARIES = ("paramiko", "invoke", "fabric")
PRIVATE = re.compile(r"_[a-z]\w*")
#: Submodules whose names the libraries document without exporting them at the top.
DOCUMENTED = {"invoke.util", "paramiko.ssh_exception", "paramiko.buffered_pipe"}


def parameters(function: Callable[..., Any]) -> str:
    """``function``'s parameters as written, annotations left out."""
    sig = inspect.signature(function)
    bare = [p.replace(annotation=p.empty) for p in sig.parameters.values()]
    return str(sig.replace(parameters=bare, return_annotation=sig.empty))


def source(obj: Any) -> str:
    return inspect.getsource(obj)


def listed() -> Dict[str, str]:
    """Each private name seams.py's docstring lists, with the text of its entry."""
    entries: Dict[str, str] = {}
    for paragraph in (seams.__doc__ or "").split("\n\n"):
        lines = paragraph.strip("\n").splitlines()
        names = [m.group(1) for m in map(re.compile(r"``((?:paramiko|invoke|fabric)\.\S+)``")
                                         .fullmatch, lines) if m]
        for name in names:
            entries[name] = paragraph
    return entries


def _status_raises(code: int, error: Any) -> bool:
    """Whether paramiko's ``_convert_status`` raises ``error`` (None: nothing) at
    a status answer of ``code``."""
    msg = Message()
    msg.add_int(code)
    msg.add_string("a status")
    msg.add_string("")
    msg.rewind()
    client = SFTPClient.__new__(SFTPClient)  # the method reads only the message
    try:
        client._convert_status(msg)  # type: ignore[attr-defined]
    except Exception as raised:  # noqa: BLE001 - which one is the question
        return error is not None and isinstance(raised, error)
    return error is None


def _probed_by_data_proxy(name: str) -> Callable[[], bool]:
    return lambda: f'attr(self, "{name}"' in source(DataProxy)  # hasattr / getattr


#: Each listed seam: what must hold on the installed version for it to buy what
#: seams.py says, and that condition in words.
CHECKS: Dict[str, Tuple[Callable[[], bool], str]] = {
    "paramiko.Transport._active_check_timeout": (lambda: (
        isinstance(Transport._active_check_timeout, float)  # type: ignore[attr-defined]
        and "settimeout(self._active_check_timeout)" in source(Transport.__init__)),
        "Transport's socket times out at _active_check_timeout"),
    "paramiko.Transport._send_user_message": (lambda: (
        parameters(Transport._send_user_message) == "(self, data)"),  # type: ignore[attr-defined]
        "Transport._send_user_message(data) sends a message"),
    "paramiko.common.cMSG_GLOBAL_REQUEST": (lambda: (
        importlib.import_module("paramiko.common").cMSG_GLOBAL_REQUEST == bytes([80])),
        "cMSG_GLOBAL_REQUEST is SSH_MSG_GLOBAL_REQUEST (80) as a byte"),
    "paramiko.Transport._parse_request_success": (lambda: (
        parameters(Transport._parse_request_success) == "(self, m)"  # type: ignore[attr-defined]
        and "self._parse_request_success" in source(Transport.__init__)),
        "a success reply goes to the transport's own _parse_request_success(m)"),
    "paramiko.Transport._parse_request_failure": (lambda: (
        parameters(Transport._parse_request_failure) == "(self, m)"  # type: ignore[attr-defined]
        and "self._parse_request_failure" in source(Transport.__init__)),
        "a failure reply goes to the transport's own _parse_request_failure(m)"),
    "paramiko.SSHConfig._config": (lambda: (
        SSHConfig()._config == [] and "self._config" in source(SSHConfig._lookup)),
        "SSHConfig keeps its blocks in a list, _config, which _lookup walks"),
    "paramiko.SSHConfig._lookup": (lambda: (
        parameters(SSHConfig._lookup)
        == "(self, hostname, options=None, canonical=False, final=False)"
        and "self._lookup(" in source(SSHConfig.lookup)),
        "lookup makes each pass through _lookup(hostname, options, canonical, final)"),
    "paramiko.SSHConfig._does_match": (lambda: (
        parameters(SSHConfig._does_match)
        == "(self, match_list, target_hostname, canonical, final, options)"
        and "self._does_match(" in source(SSHConfig._lookup)),
        "_lookup asks _does_match(match_list, ...) of each block"),
    "paramiko.SFTPClient._async_request": (lambda: (
        parameters(SFTPClient._async_request) == "(self, fileobj, t, *args)"
        and "self._expecting[num] = fileobj" in source(SFTPClient._async_request)
        and "self.sftp._async_request(" in source(SFTPFile)),
        "_async_request(fileobj, t, *args) sends a request and registers who gets its answer,"
        " as SFTPFile does"),
    "paramiko.SFTPClient._read_response": (lambda: (
        parameters(SFTPClient._read_response) == "(self, waitfor=None)"
        and "fileobj._async_response(t, msg, num)" in source(SFTPClient._read_response)),
        "_read_response() reads one answer and hands it to _async_response(t, msg, num)"),
    "paramiko.SFTPClient._convert_status": (lambda: (
        parameters(SFTPClient._convert_status) == "(self, msg)"
        and _status_raises(SFTP_EOF, EOFError) and _status_raises(SFTP_NO_SUCH_FILE, OSError)
        and _status_raises(SFTP_OK, None)),
        "_convert_status(msg) raises EOFError at the end, OSError for a failure"),
    "paramiko.SFTPFile._async_response": (lambda: (
        parameters(SFTPFile._async_response) == "(self, t, msg, num)"
        and "fileobj._async_response(t, msg, num)" in source(SFTPClient._read_response)),
        "the answer to an asynchronous request goes to the asker's _async_response(t, msg, num)"),
    "paramiko.sftp.CMD_READ": (lambda: importlib.import_module("paramiko.sftp").CMD_READ == 5,
                               "CMD_READ is SSH_FXP_READ (5)"),
    "paramiko.sftp.CMD_DATA": (lambda: importlib.import_module("paramiko.sftp").CMD_DATA == 103,
                               "CMD_DATA is SSH_FXP_DATA (103)"),
    "paramiko.sftp.CMD_STATUS": (lambda: (
        importlib.import_module("paramiko.sftp").CMD_STATUS == 101),
        "CMD_STATUS is SSH_FXP_STATUS (101)"),
    "paramiko.sftp.int64": (lambda: (
        issubclass(importlib.import_module("paramiko.sftp").int64, int)
        and "isinstance(item, int64)" in source(SFTPClient._async_request)),
        "an int64 argument of _async_request is sent as 64 bits (a file offset)"),
    "paramiko.sftp.CMD_WRITE": (lambda: (
        importlib.import_module("paramiko.sftp").CMD_WRITE == 6
        and "CMD_WRITE" in source(SFTPFile._write)),  # type: ignore[attr-defined]
        "CMD_WRITE is SSH_FXP_WRITE (6), which SFTPFile's writes send"),
    "paramiko.Channel.out_max_packet_size": (lambda: (
        "self.out_max_packet_size - 64" in source(
            Channel._wait_for_send_window)),  # type: ignore[attr-defined]
        "Channel sends at most out_max_packet_size - 64 bytes of data a packet"),
    "paramiko.SFTPClient._request": (lambda: (
        parameters(SFTPClient._request) == "(self, t, *args)"  # type: ignore[attr-defined]
        and "self._request(CMD_OPEN, filename, imode, attrblock)" in source(SFTPClient.open)
        and "self.st_mode is not None" in source(SFTPAttributes._pack)),  # type: ignore
        "open sends _request(CMD_OPEN, name, flags, attributes), whose st_mode is sent as "
        "the permissions"),
    "paramiko.sftp.CMD_OPEN": (lambda: importlib.import_module("paramiko.sftp").CMD_OPEN == 3,
                               "CMD_OPEN is SSH_FXP_OPEN (3)"),
    "paramiko.sftp.CMD_HANDLE": (lambda: (
        importlib.import_module("paramiko.sftp").CMD_HANDLE == 102),
        "CMD_HANDLE is SSH_FXP_HANDLE (102)"),
    "paramiko.sftp.SFTP_FLAG_WRITE": (lambda: (
        importlib.import_module("paramiko.sftp").SFTP_FLAG_WRITE == 0x2),
        "SFTP_FLAG_WRITE is SSH_FXF_WRITE (0x2)"),
    "paramiko.sftp.SFTP_FLAG_CREATE": (lambda: (
        importlib.import_module("paramiko.sftp").SFTP_FLAG_CREATE == 0x8),
        "SFTP_FLAG_CREATE is SSH_FXF_CREAT (0x8)"),
    "paramiko.sftp.SFTP_FLAG_EXCL": (lambda: (
        importlib.import_module("paramiko.sftp").SFTP_FLAG_EXCL == 0x20),
        "SFTP_FLAG_EXCL is SSH_FXF_EXCL (0x20)"),
    "paramiko.Channel.in_buffer": (lambda: (
        "self.in_buffer = BufferedPipe()" in source(Channel.__init__)
        and "self.in_buffer.read(nbytes, self.timeout)" in source(Channel.recv)
        and "self.in_buffer.feed(" in source(Channel._feed)  # type: ignore[attr-defined]
        and set(re.findall(r"self\.in_buffer\.(\w+)\(", source(Channel)))
        <= {name for name in dir(GatheringPipe) if not name.startswith("_")}
        and "self.sock.recv(n)" in source(BaseSFTP._read_all)),  # type: ignore[attr-defined]
        "Channel keeps received data in in_buffer (fed by _feed, read by recv) and calls "
        "no method of it that GatheringPipe lacks; SFTP asks it for whole messages"),
    "paramiko.Channel.in_stderr_buffer": (lambda: (
        "self.in_stderr_buffer = BufferedPipe()" in source(Channel.__init__)
        and "self.in_stderr_buffer.read(nbytes, self.timeout)" in source(Channel.recv_stderr)
        and "self.in_stderr_buffer.feed(" in source(
            Channel._feed_extended)),  # type: ignore[attr-defined]
        "Channel keeps received stderr in in_stderr_buffer, a BufferedPipe (which PokingPipe "
        "is), fed by _feed_extended and read by recv_stderr"),
    "invoke.config.DataProxy._root": (
        _probed_by_data_proxy("_root"), "DataProxy probes _root with hasattr/getattr"),
    "invoke.config.DataProxy._keypath": (
        _probed_by_data_proxy("_keypath"), "DataProxy probes _keypath with hasattr/getattr"),
    "invoke.config.DataProxy._modify": (
        _probed_by_data_proxy("_modify"), "DataProxy probes _modify with hasattr/getattr"),
    "invoke.runners.Runner._write_proc_stdin": (lambda: (
        parameters(Runner._write_proc_stdin) == "(self, data)"
        and "self._write_proc_stdin(" in source(Runner.write_proc_stdin)),
        "write_proc_stdin goes through _write_proc_stdin(data)"),
}


def test_every_listed_seam_is_checked_and_every_check_is_listed() -> None:
    assert sorted(listed()) == sorted(CHECKS)


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_seam_holds_on_the_installed_version(name: str) -> None:
    holds, condition = CHECKS[name]
    versions = ", ".join(f"{lib} {importlib.import_module(lib).__version__}"
                         for lib in LIBRARIES)
    assert holds(), f"{name}: no longer true on {versions}: {condition}"


# --------------------------------------------------------------------------- what the seams do


def test_a_host_transport_wakes_once_a_second_and_paramikos_ten_times() -> None:
    ours, theirs = socket.socketpair()
    try:
        assert connections.HostTransport(ours).sock.gettimeout() == connections.IDLE_WAKEUP
        assert Transport(theirs).sock.gettimeout() == seams.idle_wakeup(Transport) == 0.1
    finally:
        ours.close()
        theirs.close()


@pytest.mark.timeout(20)
def test_a_keepalive_reply_resets_the_unanswered_count(cluster: SandboxCluster) -> None:
    host = cluster.hosts[0]
    cxn = connections.connection_for(host, ssh_info(cluster, host, keepalive_interval=0))
    cxn.open()
    transport = cxn.transport
    transport.unanswered = 5
    transport.probe()  # the sixth, which OpenSSH answers (with a failure)
    while transport.unanswered:  # pytest-timeout ends a reply that never comes
        time.sleep(0.01)
    assert transport.is_active()


# --------------------------------------------------------------------------- nothing unlisted


def _fabexec_modules() -> Iterator[Tuple[str, Any, ast.Module]]:
    """Every module of fabexec, its subpackages' too, named by its path in the package."""
    root = Path(fabexec.__file__).parent
    for info in pkgutil.walk_packages([str(root)], prefix="fabexec."):
        if info.name.rsplit(".", 1)[-1] not in ("seams", "__main__"):
            module = importlib.import_module(info.name)
            path = Path(module.__file__)
            yield str(path.relative_to(root)), module, ast.parse(path.read_text())


def _from_library(cls: type) -> bool:
    return cls.__module__.split(".")[0] in LIBRARIES


def _library_names(classes: Set[type]) -> Set[str]:
    """Private names the library classes among ``classes`` define or set on their objects."""
    names: Set[str] = set()
    for cls in filter(_from_library, classes):
        names.update(n for n in vars(cls) if PRIVATE.fullmatch(n))
        try:
            names.update(re.findall(r"self\.(_[a-z]\w*)\s*=", source(cls)))
        except (OSError, TypeError):
            pass
    return names


def _related(cls: type) -> Set[type]:
    """``cls``'s bases and those of its subclasses: a mixin meets its library there."""
    classes, todo = set(cls.__mro__), [cls]
    while todo:
        for sub in todo.pop().__subclasses__():
            classes.update(sub.__mro__)
            todo.append(sub)
    return classes


def _names_in_class(node: ast.ClassDef) -> Set[str]:
    """Private names a class defines, or reaches through ``self`` / ``super()``."""
    names = {n.name for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    for statement in node.body:
        targets = statement.targets if isinstance(statement, ast.Assign) else (
            [statement.target] if isinstance(statement, ast.AnnAssign) else [])
        names.update(t.id for t in targets if isinstance(t, ast.Name))
    for sub in ast.walk(node):
        if isinstance(sub, ast.Attribute) and _is_self(sub.value):
            names.add(sub.attr)
    return {n for n in names if PRIVATE.fullmatch(n)}


def _is_self(value: ast.expr) -> bool:
    return (isinstance(value, ast.Name) and value.id in ("self", "cls")) or (
        isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
        and value.func.id == "super")


def _all_library_names() -> Set[str]:
    """Every private name the libraries' sources define or assign."""
    names: Set[str] = set()
    for lib in LIBRARIES:
        for path in Path(importlib.import_module(lib).__file__).parent.rglob("*.py"):
            names.update(re.findall(r"(?:def |self\.|^\s*)(_[a-z]\w*)\b", path.read_text(),
                                    re.M))
    return names


def private_uses() -> Set[Tuple[str, str]]:
    """(file, name) for each private name of the libraries used outside seams.py:
    overridden or reached through ``self`` in a class that meets a library class,
    reached on any other object, or imported from a module the library keeps
    internal (what its top level does not export)."""
    modules = list(_fabexec_modules())
    uses: Set[Tuple[str, str]] = set()
    own: Set[str] = set()  # private names fabexec gives its own classes
    for filename, module, tree in modules:
        for node in ast.walk(tree):
            cls = getattr(module, node.name, None) if isinstance(node, ast.ClassDef) else None
            if isinstance(cls, type):
                names = _names_in_class(node)
                theirs = names & _library_names(_related(cls))
                uses.update((filename, name) for name in theirs)
                own.update(names - theirs)
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in LIBRARIES:
                top = importlib.import_module(node.module.split(".")[0])
                uses.update((filename, f"{node.module}.{alias.name}") for alias in node.names
                            if not hasattr(top, alias.name) and node.module not in DOCUMENTED)
    theirs = _all_library_names() - own
    for filename, _, tree in modules:
        uses.update((filename, node.attr) for node in ast.walk(tree)
                    if isinstance(node, ast.Attribute) and not _is_self(node.value)
                    and node.attr in theirs)
    return uses


def test_no_private_name_of_the_libraries_outside_seams_unless_listed_there() -> None:
    """A private name used elsewhere must be listed in seams.py, which names its file."""
    entries = listed()
    unlisted: List[str] = []
    for filename, name in sorted(private_uses()):
        entry = next((text for listed_name, text in entries.items()
                      if listed_name == name or listed_name.endswith(f".{name}")), None)
        if entry is None or filename not in entry:
            unlisted.append(f"{filename}: {name}")
    assert not unlisted, f"private names used outside seams.py and not listed there: {unlisted}"


def test_the_search_finds_an_override_of_a_private_hook() -> None:
    """So that the search above passing means something."""
    assert ("runners.py", "_write_proc_stdin") in private_uses()
