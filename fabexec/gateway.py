"""A gateway: the ordinary fan-out, run on a host between the client and its targets.

Started by the client (`fabexec.tree`) over SSH as ``python3 -I`` with fabexec
on its path (see `fabexec.bundle`), it reads one ``job`` frame on stdin (the
command, the login and run settings that make sense here, its targets, key and
known_hosts bytes, stdin bytes), runs a `PsshExecutor` on its targets (or, for
a `Put`, unpacks the sources that follow in ``data`` frames and runs the
ordinary `Put` from there; for a `Get`, runs the ordinary `Get` into a folder
and sends each target's files back as a tar stream in ``data`` frames), and
writes frames on stdout as things happen: ``out`` per chunk of output, ``end``
per target with its exit code and typed error, ``done`` at the end. Its own
keepalives, timeouts and reaper serve its targets exactly as they serve a client's.

A ``kill`` frame, its stdin closing (the client is gone) or SIGTERM/SIGHUP end
every command through the usual kill path; the key and every file it was given
live in its temporary folder, which goes with it.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import tarfile
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from .connections import close_connections
from .errors import FabexecError, HostError
from .fanout import FanOut
from .frames import PROTOCOL, Frame, FrameError, Parser, encode
from .info import ExecInfo, PsshExecInfo
from .pssh import PsshExecutor
from .results import HostResult
from .tarstream import add, unpack
from .tee import Tee

#: The ExecInfo keywords a job carries as they are (files and stdin go as bytes).
SETTINGS = ("user", "port", "strict_ssh", "connect_timeout", "keepalive_interval",
            "keepalive_count", "max_parallel", "env", "cwd", "sudo", "sudoenv",
            "sudo_password", "pkey_passphrase", "timeout", "forward_agent")

#: Bytes read from stdin at once.
CHUNK = 256 * 1024

#: Bytes of copied files per ``data`` frame.
DATA_CHUNK = 1 << 20

#: How long frames are gathered before they go while the client prints output as it
#: comes (ClusterShell's gateways: 0.25 s too), and how many bytes send at once. Each
#: packet the client reads costs it about 0.1 ms of paramiko (more on a loaded machine)
#: and a wake of its reading thread: gathered for 20 ms, a target's frames still came in
#: two packets, 0.2 to 0.3 ms a target.
FLUSH_SECONDS = 0.25
FLUSH_BYTES = 256 * 1024

#: How long they are gathered when nobody watches them come (output hidden: collected,
#: written to files): the first within a second, then twice as long after each sending
#: up to `QUIET_LONGEST_SECONDS`, so that a long run's results (1,024 targets through 32
#: gateways come over half a minute) cost the client few packets, and a short one's
#: still come at once (the end is sent as it comes). The job says which (``watched``):
#: client and gateway run the same fabexec, so these figures are the client's too.
QUIET_FLUSH_SECONDS = 1.0
QUIET_LONGEST_SECONDS = 4.0

#: The job field of the protocol-only mode (bench/tree.py, see `fabexec.tree`): every
#: target is answered at once with an empty result (0, no output), none connected to.
ANSWER_ONLY = "answer_only"


class Writer:
    """Frames to a descriptor, whole, gathered for at most ``gather`` seconds, which
    doubles after each sending up to ``longest``.

    Every host's thread sends. Written one by one, each small frame (a
    target's output, its end) would cross the client's SSH link as a packet of
    its own, which costs the client paramiko's per-packet work in Python: the
    cost per target the tree is there to remove. Gathered, many go in one
    packet (ClusterShell merges its gateways' messages every 0.25 s).
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._lock = threading.Lock()
        self._pending = bytearray()
        self._due = threading.Event()
        self.broken: Optional[OSError] = None
        self.gather = self.longest = FLUSH_SECONDS
        threading.Thread(target=self._flush_often, daemon=True, name="fabexec-gw-out").start()

    def send(self, header: Dict[str, Any], payload: bytes = b"") -> None:
        data = encode(header, payload)
        with self._lock:
            if self.broken is not None:
                raise self.broken
            self._pending += data
            full = len(self._pending) >= FLUSH_BYTES
        if full:
            self.flush()
        else:
            self._due.set()

    def flush(self) -> None:
        """Write what is gathered, now (the client is gone: OSError)."""
        with self._lock:
            if self.broken is not None:
                raise self.broken
            data, self._pending = memoryview(bytes(self._pending)), bytearray()
            try:
                while data:
                    data = data[os.write(self.fd, data):]
            except OSError as e:
                self.broken = e
                raise

    def _flush_often(self) -> None:
        while True:
            self._due.wait()
            time.sleep(self.gather)
            self._due.clear()
            self.gather = min(self.gather * 2, self.longest)
            try:
                self.flush()
            except OSError:
                return  # the client is gone: stdin's end tells the gateway too


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
    """`PsshExecutor` that says how each target's command ended as it ends."""

    def __init__(self, cmd: Any, info: ExecInfo, hosts: List[str], writer: Writer,
                 tag: str) -> None:
        super().__init__(cmd, info, hosts)
        # The client's: should this gateway die, it ends these commands through another.
        self.tag = tag
        self.fanout = ReportingFanOut(hosts, info, writer)


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


def first_frame(parser: Parser) -> Tuple[Optional[Frame], List[Frame]]:
    """The first frame on stdin (None at its end), and those that came with it."""
    while True:
        chunk = os.read(0, CHUNK)
        if not chunk:
            parser.close()
            return None, []
        frames = parser.feed(chunk)
        if frames:
            return frames[0], frames[1:]


def serve(folder: str) -> int:
    """Run one job from stdin to stdout (see the module's docstring); the exit status."""
    writer = Writer(1)
    parser = Parser()
    try:
        job, early = first_frame(parser)
        if job is None:
            return 0  # the client left before sending work
        if job.kind != "job" or job.header.get("protocol") != PROTOCOL:
            raise FrameError(f"expected a job of protocol {PROTOCOL}, got {job.header!r:.200}")
        if job.header.get("watched") is False:  # nobody sees the output as it comes
            writer.gather, writer.longest = QUIET_FLUSH_SECONDS, QUIET_LONGEST_SECONDS
        if job.header.get(ANSWER_ONLY) is True:
            return answer_only(list(job.header["targets"]), writer)
        info = job_info(job, folder)
        tag = str(job.header["tag"])
        if not re.fullmatch(r"[0-9a-z-]+", tag):
            raise FrameError(f"a job's tag is letters, digits and '-', not {tag!r:.80}")
        gets = job.header.get("gets")
        if gets is not None:
            return _serve_get(list(job.header["targets"]), info, [str(g) for g in gets],
                              parser, writer)
        copies = job.header.get("copies")
        if copies is not None:
            return _serve_put(list(job.header["targets"]), info, copies, early, parser,
                              writer, folder)
        if early:
            raise FrameError("a second frame came before the job started")
        executor = GatewayExecutor(job.header["cmd"], info, list(job.header["targets"]), writer,
                                   tag)
    except (FabexecError, KeyError, TypeError, ValueError) as e:
        writer.send({"kind": "fatal", "message": f"{type(e).__name__}: {e}"})
        writer.flush()
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
        writer.flush()
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
    writer.flush()
    return 0


class StoppableCopy:
    """The ordinary copy (`Put` or `Get`), which a ``kill`` frame or the client's
    leaving reaches whenever it comes: before the copy starts, or while it runs."""

    def __init__(self) -> None:
        self.transfer: Any = None
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True
        if self.transfer is not None:
            self.transfer.kill()

    def run(self, plan: Dict[str, Any], put: bool, info: ExecInfo) -> Any:
        from .transfer import Transfer
        copy = self

        class Reachable(Transfer):
            def _run(self) -> Dict[str, HostResult]:
                copy.transfer = self
                if copy.stopped:
                    self.kill()
                return super()._run()

        return Reachable(plan, put, info)


def _serve_put(targets: List[str], info: ExecInfo, copies: List[Dict[str, Any]],
               early: List[Frame], parser: Parser, writer: Writer, folder: str) -> int:
    """A `Put` to the targets: the sources come as a tar stream in ``data`` frames,
    are unpacked into ``folder`` and copied from there by the ordinary `Put`."""
    from .transfer import Copy
    sources = os.path.join(folder, "src")
    os.mkdir(sources, 0o700)
    read_end, write_end = os.pipe()
    copy = StoppableCopy()
    threading.Thread(target=_feed_sources, args=(early, parser, write_end, copy.stop),
                     daemon=True, name="fabexec-gw-stdin").start()
    try:
        with os.fdopen(read_end, "rb") as stream:
            unpack(stream, sources)
    except (tarfile.TarError, OSError, ValueError) as e:
        writer.send({"kind": "fatal", "message": f"the sources did not arrive whole: {e}"})
        writer.flush()
        return 1

    paths = [os.path.join(sources, str(k), c["name"]) + ("/" if c["slash"] else "")
             for k, c in enumerate(copies)]
    plan = {host: [Copy(path, str(c["dst"]), c["into"]) for path, c in zip(paths, copies)]
            for host in targets}
    try:
        done = copy.run(plan, True, info)
        for k, host in enumerate(targets):
            writer.send({"kind": "end", "h": k, "code": done.exit_codes[host],
                         "error": error_fields(done.errors.get(host)),
                         "copied": done.copied[host]})
        writer.send({"kind": "done"})
        writer.flush()
    except OSError:
        pass  # the client is gone
    finally:
        close_connections()
    return 0


def _serve_get(targets: List[str], info: ExecInfo, sources: List[str], parser: Parser,
               writer: Writer) -> int:
    """A `Get` from the targets: the ordinary one into a folder on this host's disk (not
    /dev/shm: files may be large), then per target, in turn, its files as a tar stream
    in ``data`` frames (bounded memory), ``data-end``, and its ``end``."""
    import tempfile

    from .transfer import Copy
    copy = StoppableCopy()
    threading.Thread(target=_listen, args=(parser, copy.stop), daemon=True,
                     name="fabexec-gw-stdin").start()
    stage = tempfile.mkdtemp(prefix="fabexec-gw-")
    try:
        plan = {host: [Copy(src, os.path.join(stage, host), True) for src in sources]
                for host in targets}
        done = copy.run(plan, False, info)
        for k, host in enumerate(targets):
            staged = os.path.join(stage, host)
            if os.path.isdir(staged):
                writer.send({"kind": "get", "h": k})
                send_tree(writer, staged)
                remove_tree(staged)
            writer.send({"kind": "end", "h": k, "code": done.exit_codes[host],
                         "error": error_fields(done.errors.get(host)), "staged": staged})
        writer.send({"kind": "done"})
        writer.flush()
    except OSError:
        pass  # the client is gone
    finally:
        remove_tree(stage)
        close_connections()
    return 0


def send_tree(writer: Any, folder: str) -> None:
    """``folder``'s entries (not itself) as a tar stream (`fabexec.tarstream`) in
    ``data`` frames, then ``data-end``."""
    stream = FrameWriter(writer.send)
    with tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(os.listdir(folder)):
            add(tar, os.path.join(folder, name), name)
    stream.flush()
    writer.send({"kind": "data-end"})


class FrameWriter:
    """A file to write a tar stream to, sent as ``data`` frames of at most `DATA_CHUNK`."""

    def __init__(self, send: Any) -> None:
        self.send, self._pending = send, bytearray()

    def write(self, data: bytes) -> int:
        self._pending += data
        while len(self._pending) >= DATA_CHUNK:
            self.send({"kind": "data"}, bytes(self._pending[:DATA_CHUNK]))
            del self._pending[:DATA_CHUNK]
        return len(data)

    def flush(self) -> None:
        if self._pending:
            self.send({"kind": "data"}, bytes(self._pending))
            self._pending = bytearray()


def remove_tree(folder: str) -> None:
    """``rm -rf``, read-only folders too (a copy keeps a source's 0500)."""
    import shutil

    def writable(function: Any, path: str, _: Any) -> None:
        parent = os.path.dirname(path)
        try:
            os.chmod(parent, 0o700)
            if os.path.isdir(path) and not os.path.islink(path):
                os.chmod(path, 0o700)
            function(path)
        except OSError:
            pass

    shutil.rmtree(folder, onerror=writable)


def _feed_sources(early: List[Frame], parser: Parser, pipe: int, stop: Any) -> None:
    """``data`` frames into ``pipe`` until ``data-end``; a ``kill`` or stdin's end stops."""
    ended = False

    def take(frames: List[Frame]) -> None:
        nonlocal ended
        for frame in frames:
            if frame.kind == "data" and not ended:
                data = memoryview(frame.payload)
                while data:
                    data = data[os.write(pipe, data):]
            elif frame.kind == "data-end" and not ended:
                ended = True
                os.close(pipe)
            elif frame.kind == "kill":
                stop()
    try:
        take(early)
        while True:
            chunk = os.read(0, CHUNK)
            if not chunk:
                break
            take(parser.feed(chunk))
    except (OSError, FrameError):
        pass
    if not ended:
        os.close(pipe)  # cut short: the unpacking fails
    stop()


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
