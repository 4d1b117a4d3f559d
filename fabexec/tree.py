"""Fanning out through gateways: the client's side of a tree.

The targets are shared among gateways (`fabexec.topology`). On each gateway,
over its pooled connection, the client asks Python what it can run, brings
fabexec if needed (`fabexec.bundle`; once per connection, kept by `Library`),
starts `fabexec.gateway` with the job and reads its frames (`fabexec.frames`)
into the same Tees and results as a direct fan-out: live ``[host]`` lines,
``{host}`` files, ``collect_output`` and per-host results do not know the
output came through a gateway.

Faults. A gateway that cannot be reached or cannot run fabexec, or whose link
breaks before it has the whole job, hands its targets to a peer gateway still
alive (its topology line, or any of the list). Once it has the job, a target it
has not reported is never sent elsewhere, since its command may have started
(a gateway's word that it did would cost a packet a target to send in time,
and could still come too late): when its link breaks or its keepalives go
unanswered, what it started is ended through a live peer (the reaper, looking
for the tag the client gave that gateway's commands), and the target ends with
255 and a `GatewayError` naming the gateway, as does a target no live gateway
is left for. ``kill()``, a timeout's
kill and Ctrl-C send each gateway a ``kill`` frame (closing the channel does
the same); the gateway ends its targets' commands through the usual reaper and
reports them. What a SIGKILLed gateway leaves (its temporary folder) is removed
by the client over a new connection.
"""

from __future__ import annotations

import errno
import os
import re
import shlex
import socket
import stat
import sys
import tarfile
import tempfile
import threading
from typing import Any, Dict, List, Optional, Tuple

from . import errors
from .bundle import (
    GatewayUnusableError,
    bundle,
    can_run_its_own,
    check_python,
    holder_line,
    own_hash,
    preamble,
    probe_failure,
    read_probe,
    stage2_line,
)
from .channel_buffer import BatchingPipe, PokingPipe
from .command import Command, new_tag, remote_line, shell_script
from .connections import HostConnection, pool
from .errors import (
    ExecInfoError,
    GatewayError,
    HostError,
    KillFailedError,
    TransferFailedError,
    reason,
)
from .fanout import LINK_ERRORS
from .frames import MAX_PAYLOAD, PROTOCOL, Frame, FrameError, Parser, encode
from .gateway import (
    ANSWER_ONLY,
    SETTINGS,
    FrameWriter,
    remove_tree,
)
from .hostkeys import SSH_PORT, shared_host_keys
from .info import ExecInfo
from .reaper import remote_kill_script
from .results import HostResult
from .runners import CHUNK, KILL_TIMEOUT
from .seams import replace_channel_buffer
from .stdin import StdinSource
from .tarstream import add, unpack
from .tee import Outputs
from .topology import Plan
from .transfer import LOCAL, Copy, _Copier, _Stopped

#: How long a gateway may take to answer the probe, on top of ``connect_timeout``.
PROBE_TIMEOUT = 30.0

#: A temporary folder of a gateway, as `fabexec.bundle.STAGE2` names it.
GATEWAY_FOLDER = re.compile(r"^/[A-Za-z0-9_./-]*/fabexec-gw-[A-Za-z0-9_]+$")

#: A gateway's kept copy of fabexec, as `fabexec.bundle.HOLDER` names it.
LIBRARY_FOLDER = re.compile(r"^/[A-Za-z0-9_./-]*/fabexec-lib-[A-Za-z0-9_]+$")

#: Most bytes of stdin sent through gateways (the job frame carries it whole).
MAX_STDIN = MAX_PAYLOAD // 2

#: Test and benchmark only (bench/tree.py): when set, gateways answer every target with
#: an empty result without connecting to it, so that the root's cost per target is
#: measured alone, at any number of targets.
ANSWER_ONLY_VAR = "FABEXEC_GATEWAY_ANSWER_ONLY"

#: Most bytes of a gateway's own stderr kept to explain its end.
STDERR_KEPT = 4096


class Lost(Exception):
    """A gateway session ended before its targets did; says why."""


class TreeExecutor:
    """One command on ``hosts``, each through the gateway the plan gives it."""

    def __init__(self, cmd: Optional[Command], info: ExecInfo, hosts: List[str], plan: Plan,
                 stdin: StdinSource, copies: Optional[List[Any]] = None,
                 gets: Optional[Tuple[List[str], Dict[str, str]]] = None) -> None:
        if info.watchers:
            raise ExecInfoError("watchers", "cannot answer a command's output through gateways")
        self.info, self.hosts, self.plan = info, hosts, plan
        self.cmd_given = cmd
        self.cmd = "" if cmd is None else shell_script(
            cmd, info.env, info.cwd, info.sudo, info.sudoenv, info.sudo_password is not None)
        #: A `Put`'s copies (`fabexec.transfer.Copy`), the same for every host, instead
        #: of a command; what each host got lands in ``copied``.
        self.copies = copies
        self.copied: Dict[str, List[str]] = {}
        #: A `Get`'s sources, the same on every host, and where each host's files land here.
        self.gets = gets
        self.stop_placing = threading.Event()
        reader = stdin.reader()
        self.stdin = None if reader is None else _read_all(reader)
        if self.stdin is not None and len(self.stdin) > MAX_STDIN:
            raise ExecInfoError("stdin", f"at most {MAX_STDIN} bytes go through gateways")
        self.tag = new_tag()
        #: Nobody can look at a result before the end (output hidden, no files, no
        #: ``exec_async``, a command): each gateway's frames are read in batches.
        self.unwatched = bool(info.hide_output and info.pipe_stdout is None
                              and info.pipe_stderr is None and not info.exec_async
                              and copies is None and gets is None)
        self.results: Dict[str, HostResult] = {}
        self.sessions: List[Session] = []
        self.failed: Dict[str, str] = {}  # gateway -> why
        self.load = {g: len(t) for g, t in plan.shares.items()}
        self.stopping = False
        self._lock = threading.Lock()
        self._all_ended = threading.Event()

    def start(self, outputs: Outputs) -> None:
        self.outputs = outputs
        if not self.hosts:
            self._all_ended.set()
        for gateway, targets in self.plan.shares.items():
            self._launch(gateway, targets)

    def _launch(self, gateway: str, targets: List[str]) -> None:
        with self._lock:  # numbered under the lock: each session's tag is its own
            session = Session(self, gateway, targets, len(self.sessions))
            self.sessions.append(session)
        threading.Thread(target=session.run, daemon=True, name=f"fabexec-gw-{gateway}").start()

    # --- results

    def end(self, host: str, result: HostResult) -> None:
        with self._lock:
            if host in self.results:
                return
            self.results[host] = result
            if len(self.results) == len(self.hosts):
                self._all_ended.set()

    def live_peers(self, gateway: str) -> List[str]:
        """The gateways that may stand in for ``gateway`` and have not failed."""
        with self._lock:
            return [g for g in self.plan.peers.get(gateway, []) if g not in self.failed]

    def mark_failed(self, gateway: str, why: str) -> None:
        """No more work goes to ``gateway`` in this run."""
        with self._lock:
            self.failed[gateway] = why

    def hand_over(self, gateway: str, why: str, targets: List[str]) -> None:
        """``gateway`` failed (``why``) before sending these targets' commands."""
        self.mark_failed(gateway, why)
        with self._lock:
            stopping = self.stopping
        peers = self.live_peers(gateway)
        if not targets:
            return
        if stopping or not peers:
            note = "the run was stopped" if stopping else "no other gateway is left"
            for host in targets:
                self.end(host, HostResult.of(GatewayError(host, gateway, f"{why}; {note}")))
            return
        peer = min(peers, key=lambda g: self.load.get(g, 0))
        self.load[peer] = self.load.get(peer, 0) + len(targets)
        self._launch(peer, targets)

    def progress(self) -> Tuple[int, int, int]:
        with self._lock:
            codes = [r.exit_code for r in self.results.values()]
        return len(codes), sum(1 for c in codes if c), len(self.hosts)

    def ended(self) -> Dict[str, HostResult]:
        with self._lock:
            return dict(self.results)

    def wait(self) -> Dict[str, HostResult]:
        # In slices, so that ^C and SIGTERM reach this thread at once.
        while not self._all_ended.wait(1.0):
            pass
        # Then the gateways' own end (connections closed, folder removed), bounded:
        # a gateway that reported every target is done with them.
        with self._lock:
            sessions = list(self.sessions)
        for session in sessions:
            session.finished.wait(KILL_TIMEOUT)
        return self.ended()

    def kill(self) -> None:
        """End every target's command through its gateway; stop the rest starting."""
        self.stop_placing.set()
        with self._lock:
            self.stopping = True
            sessions = list(self.sessions)
        for session in sessions:
            session.kill()
        bound = self.info.connect_timeout + KILL_TIMEOUT + PROBE_TIMEOUT
        if not self._all_ended.wait(bound):
            for session in sessions:
                for host in session.targets:
                    self.end(host, HostResult.of(KillFailedError(
                        host, f"gateway {session.gateway} did not report the command's end "
                        f"within {bound:g} s")))


class Session:
    """One gateway serving some targets: connect, bring fabexec, run, read frames."""

    def __init__(self, tree: TreeExecutor, gateway: str, targets: List[str], number: int) -> None:
        self.tree, self.gateway, self.targets = tree, gateway, targets
        self.tag = f"{tree.tag}-gw{number}"
        self.job_sent = False  # from then on, the gateway may start its targets' commands
        self.receiving: Optional[Receiving] = None  # a `Get`'s files of one target
        self.placed: Dict[str, Tuple[List[str], Optional[HostError]]] = {}
        self.folder: Optional[str] = None
        self.channel: Any = None
        self.done = False
        self._lock = threading.Lock()
        self._killed = False
        #: Set once the gateway's program has ended (or could not start).
        self.finished = threading.Event()

    def run(self) -> None:
        try:
            self._run()
        finally:
            self.finished.set()

    def _run(self) -> None:
        info = self.tree.info
        cxn = pool.connection(self.gateway, info)
        pool.hold(cxn)
        try:
            self._serve(cxn)
        except HostError as e:  # refused, unusable: nothing was sent
            self._lost(cxn, str(e), dead=False)
        except (Lost, FrameError) as e:
            self._lost(cxn, str(e), dead=True)
        except LINK_ERRORS as e:
            self._lost(cxn, f"connection lost: {reason(e)}", dead=True)
        finally:
            pool.release(cxn, info.max_parallel)

    def _serve(self, cxn: HostConnection) -> None:
        if self.tree.stopping:
            raise HostError(self.gateway, "not started: the run was stopped")
        cxn.open()
        channel = cxn.create_session()
        frames = BatchingPipe()
        replace_channel_buffer(channel, frames, PokingPipe(frames))
        script = stage2_line().encode()
        try:
            channel.exec_command(remote_line(script, self.tag))
            channel.sendall(script)
            probe, early = self._probe(channel)
            folder = probe.get("folder")
            self.folder = folder if isinstance(folder, str) and GATEWAY_FOLDER.match(folder) \
                else None
            lib = ""
            if not can_run_its_own(probe):
                check_python(self.gateway, probe)
                lib = library(cxn, self.gateway, str(probe.get("cache_tag", "")),
                              self.tree.info.connect_timeout + PROBE_TIMEOUT)
            with self._lock:  # from here on, kill() sends the gateway a kill frame
                self.channel = channel
                killed = self._killed
            if killed:
                raise HostError(self.gateway, "not started: the run was stopped")
        except HostError:
            channel.close()  # the gateway's Python, waiting for its orders, ends
            raise
        channel.sendall(preamble(lib.encode()) + self._job(cxn))  # one packet where they fit
        self.job_sent = True  # whole: a job cut short starts nothing
        if self.tree.unwatched:
            frames.batch(CHUNK)
        if self.tree.copies is not None:
            self._send_sources(channel)
        self._read(channel, cxn, early)

    def _send_sources(self, channel: Any) -> None:
        """The copies' sources as a tar stream in ``data`` frames, then ``data-end``."""
        stream = FrameWriter(lambda header, payload: channel.sendall(encode(header, payload)))
        with tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for number, copy in enumerate(self.tree.copies or []):
                add(tar, copy.src, f"{number}/{_name(copy.src)}")
        stream.flush()
        channel.sendall(encode({"kind": "data-end"}))

    def _probe(self, channel: Any) -> Tuple[Dict[str, Any], bytes]:
        """The gateway's first word (`fabexec.bundle.PROBE`): what its Python is and can
        import, on a line after whatever a login script printed; and what came after it."""
        channel.settimeout(self.tree.info.connect_timeout + PROBE_TIMEOUT)
        out = bytearray()
        while True:
            chunk = channel.recv(CHUNK)
            if not chunk:
                break
            out += chunk
            lines = bytes(out).split(b"\n")
            for number, line in enumerate(lines[:-1]):  # whole lines
                probe = read_probe(line)
                if probe is not None:
                    channel.settimeout(None)
                    return probe, b"\n".join(lines[number + 1:])
        err = bytearray()
        while channel.recv_stderr_ready():
            err += channel.recv_stderr(CHUNK)
        raise probe_failure(self.gateway, (out + err).decode(errors="replace"))

    def _job(self, cxn: HostConnection) -> bytes:
        """The job frame: settings, targets, and the key, known_hosts and stdin as bytes."""
        tree, info = self.tree, self.tree.info
        settings = {name: getattr(info, name) for name in SETTINGS}
        settings["cwd"] = None if info.cwd is None else os.fspath(info.cwd)
        settings["user"] = info.user or cxn.user
        files: List[Tuple[str, bytes]] = []
        key = _key_file(info, cxn)
        if key is not None:
            files.append(("pkey", _read_file(key)))
        config = pool.ssh_config(info)
        routes = {target: config.route(target) for target in self.targets}
        known_hosts = os.path.expanduser(cxn.known_hosts)
        if os.path.isfile(known_hosts):
            files.append(("known_hosts", _known_lines(known_hosts, routes, info)))
        ssh_config = _ssh_routes(routes)
        if ssh_config:
            files.append(("ssh_config", ssh_config))
        if tree.stdin is not None:
            files.append(("stdin", tree.stdin))
        payload = b"".join(data for _, data in files)
        gets = None if tree.gets is None else tree.gets[0]
        copies = None if tree.copies is None else [
            {"name": _name(c.src), "slash": c.src.endswith("/"), "dst": c.dst, "into": c.into}
            for c in tree.copies]
        header = {"kind": "job", "protocol": PROTOCOL, "cmd": tree.cmd_given,
                  "watched": not info.hide_output,
                  "tag": self.tag, "copies": copies, "gets": gets,
                  "targets": self.targets, "settings": settings,
                  "files": {name: len(data) for name, data in files}}
        if os.environ.get(ANSWER_ONLY_VAR):
            header[ANSWER_ONLY] = True
        return encode(header, payload)

    def _read(self, channel: Any, cxn: HostConnection, early: bytes) -> None:
        parser, tees = Parser(), self.tree.outputs.tees
        stderr = bytearray()
        for frame in parser.feed(early):
            self._handle(frame, tees)
        while True:
            try:
                data: Optional[bytes] = channel.recv(CHUNK)
            except socket.timeout:  # a batch's reader woken by stderr, read below
                data = None
            while channel.recv_stderr_ready():
                stderr += channel.recv_stderr(CHUNK)
                del stderr[:-STDERR_KEPT]
            if data is None:
                continue
            if not data:
                break
            for frame in parser.feed(data):
                self._handle(frame, tees)
        parser.close()
        channel.status_event.wait(KILL_TIMEOUT)  # the gateway's program has ended
        if not self.done:
            why = cxn.dead_reason or (stderr.decode(errors="replace").strip()[-300:]
                                      or "connection lost")
            raise Lost(why)

    def _handle(self, frame: Frame, tees: Dict[str, Dict[str, Any]]) -> None:
        kind, header = frame.kind, frame.header
        if kind == "out":
            host = self.targets[header["h"]]
            tees[host]["stdout" if header["s"] == "o" else "stderr"].write(frame.payload)
        elif kind == "end":
            host = self.targets[header["h"]]
            if isinstance(header.get("copied"), list):
                self.tree.copied[host] = [str(path) for path in header["copied"]]
            self.tree.end(host, self._got(host, header) if self.tree.gets is not None
                          else HostResult(int(header["code"]),
                                          _rebuild(host, header.get("error"))))
        elif kind == "get" and self.tree.gets is not None and self.receiving is None:
            host = self.targets[header["h"]]
            self.receiving = Receiving(host, self.tree.gets[1][host])
        elif kind == "data" and self.receiving is not None:
            self.receiving.write(frame.payload)
        elif kind == "data-end" and self.receiving is not None:
            receiving, self.receiving = self.receiving, None
            self.placed[receiving.host] = receiving.place(self.tree.stop_placing)
        elif kind == "fatal":
            message = str(header.get("message"))
            for host in self.targets:
                self.tree.end(host, HostResult.of(GatewayError(host, self.gateway, message)))
            self.done = True
        elif kind == "done":
            self.done = True

    def _got(self, host: str, header: Dict[str, Any]) -> HostResult:
        """A `Get`'s result for ``host``: the gateway's, with its folder's name told as
        ours, unless placing the files here failed where the gateway's copy did not."""
        copied, failed = self.placed.pop(host, ([], None))
        self.tree.copied[host] = copied
        fields = header.get("error")
        if isinstance(fields, dict) and isinstance(header.get("staged"), str):
            here = LOCAL.path(self.tree.gets[1][host])  # type: ignore[index]
            fields = {**fields, "message": str(fields.get("message", "")).replace(
                header["staged"], here)}
        code = int(header["code"])
        if failed is not None and code == 0:
            return HostResult.of(failed)
        return HostResult(code, _rebuild(host, fields))

    def _lost(self, cxn: HostConnection, why: str, dead: bool) -> None:
        """The gateway is gone: clean after it, hand over or end its unfinished targets."""
        if self.receiving is not None:  # a Get's files cut short: none of them is placed
            self.receiving.abandon()
            self.receiving = None
        if dead:
            frozen = cxn.dead_reason is not None  # before the close, which may take a while
            pool.drop(cxn)
            self._clean(cxn, frozen)
        self.tree.mark_failed(self.gateway, why)
        ended = self.tree.ended()
        unfinished = [h for h in self.targets if h not in ended]
        unsent, started = ([], unfinished) if self.job_sent else (unfinished, [])
        if started:
            how = self._reap(started)
            for host in started:
                self.tree.end(host, HostResult.of(GatewayError(
                    host, self.gateway, f"{why}; the command may have run there in part, "
                    f"{how.get(host, 'and may still run')}")))
        self.tree.hand_over(self.gateway, why, unsent)

    def _reap(self, hosts: List[str]) -> Dict[str, str]:
        """End, through a live peer, what this gateway started on ``hosts``; how it went.

        The reaper looks for this session's tag at any position (it reads the tag as
        an extended regular expression), run as the command was (sudo included).
        """
        peers = self.tree.live_peers(self.gateway)
        if not peers:
            return {}
        peer = peers[0]
        info = self.tree.info.mod(
            hosts=hosts, gateways=[peer], topology=None, env={}, forward_env=False, cwd=None,
            stdin=None, timeout=None, collect_output=True, hide_output=True, pipe_stdout=None,
            pipe_stderr=None, exec_async=False, sleep_ms=0, watchers=None)
        from .exec import Exec
        reap = Exec(remote_kill_script(f"{self.tag}-[0-9]+"), info)
        return {host: f"ended through gateway {peer}" if not code
                else f"and could not be ended through gateway {peer}: "
                     f"{reap.errors.get(host) or reap.stderr[host].strip() or code}"
                for host, code in reap.exit_codes.items()}

    def _clean(self, cxn: HostConnection, frozen: bool) -> None:
        """Remove the temporary folder of a gateway that could not (SIGKILLed), if it is
        reachable; a frozen one removes it itself once it runs again (its stdin closed)."""
        if self.folder is None or frozen:
            return
        # A connection of its own: the pool dropped (closed) the session's, and a
        # closed Fabric connection cannot be opened again.
        own = HostConnection(cxn.original_host, cxn.hop_info, cxn.config)
        try:
            own.open()
            channel = own.create_session()
            channel.exec_command(f"rm -rf -- {shlex.quote(self.folder)}")
            channel.status_event.wait(KILL_TIMEOUT)
            channel.close()
        except (HostError, *LINK_ERRORS):
            pass
        finally:
            own.close()

    def kill(self) -> None:
        """Ask the gateway to end every command it started."""
        with self._lock:
            self._killed = True
            channel = self.channel
        if channel is not None and not self.done:
            try:
                channel.sendall(encode({"kind": "kill"}))
            except LINK_ERRORS:
                pass


class Library:
    """fabexec brought to a gateway, kept there by `fabexec.bundle.HOLDER` on a session
    of the gateway's connection, which closes it (its folder goes) as it closes."""

    def __init__(self, channel: Any, folder: str) -> None:
        self.channel, self.folder = channel, folder

    @property
    def alive(self) -> bool:
        return not self.channel.closed and not self.channel.exit_status_ready()

    def close(self) -> None:
        """End the keeper and wait until it has removed the folder (a dead link: sshd
        ends the session once it notices, and the keeper removes it then)."""
        transport = self.channel.get_transport()
        healthy = transport is not None and transport.is_active() and \
            getattr(transport, "dead_reason", None) is None
        try:
            if healthy:  # a frozen or lost host would only make the close wait
                self.channel.shutdown_write()
                self.channel.status_event.wait(KILL_TIMEOUT)
        except LINK_ERRORS:
            pass
        finally:
            self.channel.close()


def library(cxn: HostConnection, gateway: str, cache_tag: str, timeout: float) -> str:
    """The folder of fabexec on ``gateway``: the one this connection brought there
    before, else the bundle pushed now (once per connection, not per run)."""
    name = f"library-{cache_tag}-{own_hash()[:16]}"
    with cxn.kept_lock:
        kept = cxn.kept.get(name)
        if kept is not None and kept.alive:
            return kept.folder
        if kept is not None:
            kept.close()
        data = bundle(cache_tag)
        channel = cxn.create_session()
        channel.settimeout(timeout)
        channel.exec_command(holder_line())
        channel.sendall(preamble(data))
        line = bytearray()
        while not line.endswith(b"\n"):
            chunk = channel.recv(CHUNK)
            if not chunk:
                break
            line += chunk
        folder = line.decode(errors="replace").strip()
        if not LIBRARY_FOLDER.match(folder):
            why = bytearray()
            while channel.recv_stderr_ready():
                why += channel.recv_stderr(CHUNK)
            channel.close()
            said = why.decode(errors="replace").strip() or folder or "no answer"
            raise GatewayUnusableError(gateway, f"fabexec could not be unpacked there: "
                                       f"{said[-300:]}")
        channel.settimeout(None)
        cxn.kept[name] = Library(channel, folder)
        return folder


class Receiving:
    """One target's files of a `Get`, as a tar stream in ``data`` frames: unpacked as they
    come (through a pipe: a frame at a time in memory) into a private folder on the
    filesystem of their destination ``dst``, then placed from there by the ordinary
    copy, as a direct `Get` places them, each file moved rather than written again."""

    def __init__(self, host: str, dst: str) -> None:
        self.host, self.dst = host, dst
        self.folder = _beside(dst)
        read_end, self._pipe = os.pipe()
        self.error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._unpack, args=(read_end,), daemon=True,
                                        name=f"fabexec-get-{host}")
        self._thread.start()

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._pipe, view):]

    def _unpack(self, read_end: int) -> None:
        with os.fdopen(read_end, "rb") as stream:
            try:
                unpack(stream, self.folder)
            except (tarfile.TarError, OSError, ValueError) as e:
                self.error = e
                while stream.read(CHUNK):  # the frames still coming go nowhere
                    pass

    def abandon(self) -> None:
        os.close(self._pipe)
        self._thread.join()
        remove_tree(self.folder)

    def place(self, stop: threading.Event) -> Tuple[List[str], Optional[HostError]]:
        """Put the files where a direct `Get` puts them; what was written and what failed."""
        os.close(self._pipe)
        self._thread.join()
        copied: List[str] = []
        try:
            if self.error is not None:
                return copied, TransferFailedError(
                    self.host, f"the files did not arrive whole from the gateway: {self.error}")
            mover = _Mover(self.host, LOCAL, LOCAL, stop, copied)
            mover.run([Copy(os.path.join(self.folder, name), self.dst, True)
                       for name in sorted(os.listdir(self.folder))])
            return copied, None
        except TransferFailedError as e:
            return copied, e
        except _Stopped:
            return copied, TransferFailedError(self.host, "stopped before the copy completed")
        except OSError as e:
            return copied, TransferFailedError(self.host, f"cannot place the files in "
                                               f"{self.dst}: {e.strerror or e}")
        finally:
            remove_tree(self.folder)


def _beside(dst: str) -> str:
    """A private folder on the filesystem where ``dst`` is, or will be made: in the
    nearest folder of its path that exists (a hidden name, removed once the files are
    placed), else, where that one cannot be written, the system's (placing says why)."""
    above = os.path.abspath(LOCAL.path(dst))
    while not os.path.isdir(above):
        above = os.path.dirname(above)
    try:
        return tempfile.mkdtemp(prefix=".fabexec-get-", dir=above)
    except OSError:
        return tempfile.mkdtemp(prefix="fabexec-get-")


class _Mover(_Copier):
    """The ordinary copy out of a folder of ours (`Receiving`'s) on the destination's
    filesystem: each file is renamed to its temporary name there (`_Copier._place`)
    rather than written again, and copied only where a rename cannot reach (a
    filesystem mounted below the destination)."""

    def _tree(self, src: str, target: str, attrs: Any) -> None:
        if stat.S_ISDIR(attrs.st_mode) and not os.path.islink(src):
            os.chmod(src, 0o700)  # ours: its files leave it whatever mode it keeps
        super()._tree(src, target, attrs)

    def _fill(self, src: str, tmp: str, attrs: Any, mode: int) -> None:
        if stat.S_ISREG(mode):
            if self.stop.is_set():
                raise _Stopped()
            try:
                os.rename(src, tmp)  # it has its mode and size; its times come next
                return
            except OSError as e:
                if e.errno != errno.EXDEV:
                    raise
        super()._fill(src, tmp, attrs, mode)


def _name(path: str) -> str:
    """A source's name as a copy keeps it (``cp``'s: the last part, slashes aside)."""
    return os.path.basename(os.path.normpath(path)) or "root"


def copy_through(transfer: Any) -> Dict[str, HostResult]:
    """A `Put` or `Get` (``transfer``) through the gateways of its info.

    A `Put`'s sources go once to each gateway, which copies them to its targets with
    the ordinary `Put`. A `Get`: each gateway runs the ordinary `Get` into a folder of
    its own and sends each target's files back as a tar stream in frames, which are
    unpacked here beside their destination and moved into place by the ordinary copy's
    rules (`Receiving`), as a direct `Get` places them.
    """
    info = transfer.exec_info
    field = "gateways" if info.gateways else "topology"
    plans = transfer.plan
    first = next(iter(plans.values()), [])
    copies: Optional[List[Any]] = None
    gets: Optional[Tuple[List[str], Dict[str, str]]] = None
    if transfer.push:
        copies = first
        if any(plan != copies for plan in plans.values()):
            raise ExecInfoError(field, "through gateways every host gets the same copies")
    else:
        sources = [c.src for c in first]
        if any([c.src for c in plan] != sources or any(c.into is not True or c.dst != plan[0].dst
                                                      for c in plan)
               for plan in plans.values()):
            raise ExecInfoError(field, "through gateways a Get takes the same sources from "
                                "every host, each host's into a folder of its own")
        gets = (sources, {host: plan[0].dst for host, plan in plans.items() if plan})
    from .results import split_local
    from .topology import plan as make_plan
    here, remote = split_local(transfer.hosts, info)
    plan = make_plan(remote, info.gateways or (), info.topology)
    if here or plan.direct:
        raise ExecInfoError(field, f"{(here + plan.direct)[0]} is on no gateway's route: a "
                            "copy through gateways reaches every host through one")
    tree = TreeExecutor(None, info, remote, plan, StdinSource(None, len(remote)), copies, gets)
    outputs = Outputs(remote, collect=False, hide=True, pipe_stdout=None, pipe_stderr=None,
                      stdout=sys.stdout, stderr=sys.stderr)
    tree.start(outputs)
    try:
        results = tree.wait()
    except BaseException:
        tree.kill()
        raise
    finally:
        outputs.close()
    transfer.copied.update(tree.copied)
    return results


def _rebuild(host: str, fields: Any) -> Optional[HostError]:
    """A host's error as the gateway recorded it, as the same type (never anything else)."""
    if not isinstance(fields, dict):
        return None
    cls = getattr(errors, str(fields.get("type")), None)
    if not (isinstance(cls, type) and issubclass(cls, HostError)):
        cls = HostError
    error = cls.__new__(cls)
    errors.FabexecError.__init__(error, str(fields.get("message", "")))
    error.host = host
    return error


def _ssh_routes(routes: Dict[str, Dict[str, str]]) -> bytes:
    """An ssh_config for the gateway: each target's HostName, Port and User as ours says
    (``routes``, `fabexec.sshconfig.SshConfigFile.route`).

    Only these: paths (keys, known_hosts) and hops are this machine's, not the gateway's.
    """
    blocks = []
    for target, found in routes.items():
        lines = [f"    {name} {found[key]}" for name, key in (("HostName", "hostname"),
                 ("Port", "port"), ("User", "user"))
                 if key in found and found[key] != target and PLAIN.fullmatch(found[key])]
        if lines:
            blocks.append(f"Host {target}\n" + "\n".join(lines) + "\n")
    return "".join(blocks).encode()


def _known_lines(path: str, routes: Dict[str, Dict[str, str]], info: ExecInfo) -> bytes:
    """The lines of the known_hosts file ``path`` that may name one of the targets, under
    its name or its HostName, on its port or the one ``info`` gives."""
    hosts = {(name, int(port)) for target, found in routes.items()
             for name in (target, found.get("hostname", target))
             for port in (found.get("port") or SSH_PORT, info.port or SSH_PORT)}
    return shared_host_keys(path).excerpt(hosts).encode()


#: A value that cannot reach the gateway's ssh_config as more than one word.
PLAIN = re.compile(r"[A-Za-z0-9_.:@%+-]+")


def _key_file(info: ExecInfo, cxn: HostConnection) -> Optional[str]:
    """The key the gateway logs in with: ``pkey``, else ssh_config's first for the gateway."""
    if info.pkey is not None:
        return os.path.expanduser(os.fspath(info.pkey))
    for path in cxn.ssh_config.get("identityfile", []):
        if os.path.isfile(os.path.expanduser(path)):
            return os.path.expanduser(path)
    return None


def _read_file(path: str) -> bytes:
    with open(os.path.expanduser(path), "rb") as f:
        return f.read()


def _read_all(reader: Any) -> bytes:
    chunks = []
    while True:
        chunk = reader.read(CHUNK)
        if not chunk:
            break
        chunks.append(chunk)
    reader.close()
    return b"".join(chunks)


def tree_executors(cmd: Command, info: ExecInfo, hosts: List[str],
                   stdin: StdinSource) -> List[Any]:
    """The executors of a run through gateways: the tree, and the targets no route names
    (reached directly)."""
    from .pssh import PsshExecutor
    from .topology import plan as make_plan
    plan = make_plan(hosts, info.gateways or (), info.topology)
    direct = set(plan.direct)
    routed = [h for h in hosts if h not in direct]
    parts: List[Any] = []
    if routed:
        parts.append(TreeExecutor(cmd, info, routed, plan, stdin))
    if plan.direct:
        parts.append(PsshExecutor(cmd, info, plan.direct, stdin))
    return parts
