"""A gateway: the ordinary fan-out, run on a host between the client and its targets.

Started by the client (`fabexec.tree`) over SSH as ``python3 -I`` with fabexec
on its path (see `fabexec.bundle`), it reads one ``job`` frame on stdin (the
command, the login and run settings that make sense here, its targets, key and
known_hosts bytes, stdin bytes), runs a `PsshExecutor` on its targets, and
writes frames on stdout as things happen: ``start`` when a target's command is
about to be sent, ``out`` per chunk of output, ``end`` per target with its exit
code and typed error, ``done`` at the end. Its own keepalives, timeouts and
reaper serve its targets exactly as they serve a client's.

A ``kill`` frame, its stdin closing (the client is gone) or SIGTERM/SIGHUP end
every command through the usual kill path; the key and every file it was given
live in its temporary folder, which goes with it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any, Dict, List, Optional

from .connections import HostConnection, close_connections
from .errors import FabexecError, HostError
from .fanout import FanOut
from .frames import PROTOCOL, Frame, FrameError, Parser, encode
from .info import ExecInfo, PsshExecInfo
from .pssh import PsshExecutor
from .results import HostResult
from .tee import Tee

#: The ExecInfo keywords a job carries as they are (files and stdin go as bytes).
SETTINGS = ("user", "port", "strict_ssh", "connect_timeout", "keepalive_interval",
            "keepalive_count", "max_parallel", "env", "cwd", "sudo", "sudoenv",
            "sudo_password", "pkey_passphrase", "timeout", "forward_agent")

#: Bytes read from stdin at once.
CHUNK = 256 * 1024

#: The job field of the protocol-only mode (bench/tree.py, see `fabexec.tree`): every
#: target is answered at once with an empty result (0, no output), none connected to.
ANSWER_ONLY = "answer_only"


class Writer:
    """Frames to a descriptor, whole, one at a time (every host's thread writes)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._lock = threading.Lock()

    def send(self, header: Dict[str, Any], payload: bytes = b"") -> None:
        data = memoryview(encode(header, payload))
        with self._lock:
            while data:
                data = data[os.write(self.fd, data):]


class FrameSink:
    """A Tee's file that is a stream of ``out`` frames for one host."""

    path = "<gateway stdout>"

    def __init__(self, writer: Writer, index: int, stream: str) -> None:
        self.writer, self.header = writer, {"kind": "out", "h": index, "s": stream}

    def write(self, data: bytes) -> None:
        self.writer.send(self.header, data)

    def close(self) -> None:
        pass


class FrameOutputs:
    """Every target's stdout and stderr Tees, each writing frames."""

    def __init__(self, hosts: List[str], writer: Writer) -> None:
        self.tees = {host: {name: Tee(host, file=FrameSink(writer, i, name[3]))
                            for name in ("stdout", "stderr")}
                     for i, host in enumerate(hosts)}


def error_fields(error: Optional[HostError]) -> Optional[Dict[str, Any]]:
    """A host's error as a frame carries it: its type's name and its words."""
    if error is None:
        return None
    return {"type": type(error).__name__, "message": str(error)}


class ReportingFanOut(FanOut):
    """The fan-out, sending each target's result as it is recorded."""

    def __init__(self, hosts: List[str], info: ExecInfo, writer: Writer) -> None:
        super().__init__(hosts, info)
        self.writer = writer
        self.index = {h: i for i, h in enumerate(hosts)}

    def end(self, host: str, result: HostResult) -> None:
        super().end(host, result)
        self.writer.send({"kind": "end", "h": self.index[host], "code": result.exit_code,
                          "error": error_fields(result.error)})


class GatewayExecutor(PsshExecutor):
    """`PsshExecutor` that says when each target's command is sent and how it ended."""

    def __init__(self, cmd: Any, info: ExecInfo, hosts: List[str], writer: Writer) -> None:
        super().__init__(cmd, info, hosts)
        self.writer = writer
        self.fanout = ReportingFanOut(hosts, info, writer)

    def _run_host(self, host: str, cxn: HostConnection) -> Optional[HostResult]:
        self.writer.send({"kind": "start", "h": self.fanout.index[host]})  # type: ignore
        return super()._run_host(host, cxn)


def job_info(job: Frame, folder: str) -> ExecInfo:
    """The job's settings as a `PsshExecInfo`; its files written privately in ``folder``."""
    settings = {k: v for k, v in job.header.get("settings", {}).items() if k in SETTINGS}
    offset = 0
    blobs: Dict[str, bytes] = {}
    for name, size in job.header.get("files", {}).items():
        blobs[name] = job.payload[offset:offset + int(size)]
        offset += int(size)
    for name, field in (("pkey", "pkey"), ("known_hosts", "known_hosts"),
                        ("ssh_config", "ssh_config")):
        if name in blobs:
            path = os.path.join(folder, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(blobs[name])
            settings[field] = path
    if "stdin" in blobs:
        settings["stdin"] = blobs["stdin"]
    return PsshExecInfo(hosts=list(job.header["targets"]), forward_env=False,
                        collect_output=False, hide_output=True, **settings)


def read_frames(parser: Parser) -> Optional[Frame]:
    """The next frame on stdin, None at its end."""
    while True:
        chunk = os.read(0, CHUNK)
        if not chunk:
            parser.close()
            return None
        frames = parser.feed(chunk)
        if frames:
            if len(frames) > 1:
                raise FrameError("a second frame came before the job started")
            return frames[0]


def serve(folder: str) -> int:
    """Run one job from stdin to stdout (see the module's docstring); the exit status."""
    writer = Writer(1)
    writer.send({"kind": "ready", "protocol": PROTOCOL, "pid": os.getpid(), "folder": folder})
    parser = Parser()
    try:
        job = read_frames(parser)
        if job is None:
            return 0  # the client left before sending work
        if job.kind != "job" or job.header.get("protocol") != PROTOCOL:
            raise FrameError(f"expected a job of protocol {PROTOCOL}, got {job.header!r:.200}")
        if job.header.get(ANSWER_ONLY) is True:
            return answer_only(list(job.header["targets"]), writer)
        info = job_info(job, folder)
        executor = GatewayExecutor(job.header["cmd"], info, list(job.header["targets"]), writer)
    except (FabexecError, KeyError, TypeError, ValueError) as e:
        writer.send({"kind": "fatal", "message": f"{type(e).__name__}: {e}"})
        return 1
    stop = threading.Event()

    def end_all(*_: Any) -> None:
        if not stop.is_set():
            stop.set()
            threading.Thread(target=executor.kill, daemon=True, name="fabexec-gw-kill").start()

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, end_all)
    executor.start(FrameOutputs(executor.hosts, writer))  # type: ignore[arg-type]
    threading.Thread(target=_listen, args=(parser, end_all), daemon=True,
                     name="fabexec-gw-stdin").start()
    try:
        executor.wait()
        writer.send({"kind": "done"})
    except OSError:
        pass  # the client is gone; what ran has been ended
    finally:
        close_connections()
    return 0


def answer_only(targets: List[str], writer: Writer) -> int:
    """The protocol-only mode: what the client pays per target, with no target's cost."""
    for index in range(len(targets)):
        writer.send({"kind": "end", "h": index, "code": 0, "error": None})
    writer.send({"kind": "done"})
    return 0


def _listen(parser: Parser, end_all: Any) -> None:
    """A ``kill`` frame or the end of stdin (the client is gone) ends every command."""
    try:
        while True:
            chunk = os.read(0, CHUNK)
            if not chunk or any(f.kind == "kill" for f in parser.feed(chunk)):
                break
    except (OSError, FrameError):
        pass
    end_all()


def main() -> int:
    """``python3 -m fabexec.gateway`` where fabexec is installed: a folder of its own."""
    import shutil
    import tempfile
    folder = tempfile.mkdtemp(prefix="fabexec-gw-")
    try:
        return serve(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
