"""invoke's runners, changed where they fall short for cluster work.

invoke's `Runner` reads 1,000 bytes at a time, joins the whole output so far
after every chunk for its watchers, decodes each chunk on its own and sleeps
10 ms per turn of its wait loop (see DESIGN.md). We keep its life cycle
(``run`` -> ``start`` -> IO threads -> ``wait`` -> ``_finish``) and replace only
the steps that cost: reading goes to a `Tee` in large chunks, waiting blocks
instead of polling, and ``kill`` ends the whole process tree. A local stream
that only feeds one regular file is not read at all: the command gets the file
(see `Wiring` in tee.py).
"""

from __future__ import annotations

import fcntl
import os
import re
import selectors
import shlex
import subprocess
import tempfile
import threading
from types import SimpleNamespace
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from fabric.runners import Remote
from invoke import Config, Local, Responder
from invoke.util import ExceptionHandlingThread
from paramiko.ssh_exception import SSHException

from .command import SUDO_PROMPT, remote_line, sudo_line
from .connections import HostConnection
from .errors import HostError
from .reaper import kill_local, remote_kill_script
from .stdin import StdinReader, callers_stdin
from .tee import Tee, WatchWindow, Wiring

#: Bytes per read. A pipe holds 64 KiB; asking for more costs nothing.
CHUNK = 256 * 1024

#: Linux's fcntl to resize a pipe (named in the fcntl module from Python 3.10).
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)

#: A pipe's size as the kernel makes it.
SMALL_PIPE = 64 * 1024

#: A local pipe's size once output pours: a 64 KiB pipe costs the command a
#: wake-up of ours per 64 KiB; 1 MiB is the kernel's default bound
#: (/proc/sys/fs/pipe-max-size) and leaves little to gain.
BIG_PIPE = 1 << 20

#: Longest script given to a local bash as its ``-c`` argument; a longer one
#: is read from a file. Linux caps one argument at 128 KiB (MAX_ARG_STRLEN) and
#: all of them with the environment at a quarter of the stack limit (E2BIG),
#: where a file has no cap; ``bash -c`` is kept for the common small script,
#: which it starts fastest.
ARGUMENT_MAX = 64 * 1024

#: How a local bash reads a long script: from descriptor {fd} (a memfd), whole,
#: by its own ``read`` (a regular file is read in blocks, not a byte per call),
#: which then closes it, so that the command's processes do not inherit it.
READ_SCRIPT = 'IFS= read -r -d "" -u {fd} __fabexec_script; exec {fd}<&-; eval "$__fabexec_script"'

#: How long the remote reaper may take before we give up on a host.
KILL_TIMEOUT = 10.0

#: A bound on each wait for channel data (the channel's pipe normally wakes us).
SELECT_TIMEOUT = 1.0

#: How long, once the reaper is done, the command's exit status may take to arrive.
EXIT_STATUS_WAIT = 1.0


class TeeRunner:
    """The part shared by our local and remote runners: output goes to Tees.

    Mixed in before an invoke runner class; replaces its IO threads, whose
    ``handle_stdout``/``handle_stderr`` buffer, decode and re-join everything.
    """

    #: Ends the command at its ``timeout`` (invoke's own timer is not started).
    timer: Optional[threading.Timer] = None

    #: Why the caller's stdin could not be read to its end, if it could not.
    stdin_error: Optional[str] = None

    def setup_io(self, tees: Dict[str, Tee], tag: str, stdin: Optional[StdinReader],
                 watchers: Optional[list], sudo_password: Optional[str],
                 sudo: bool = False) -> None:
        self.tees, self.tag, self.stdin_data = tees, tag, stdin
        self.sudo, self.sudo_password = sudo, sudo_password
        self.killed = False
        answers = list(watchers or [])
        if sudo_password is not None:
            # Typed on the command's stdin only, never into any output.
            answers.append(Responder(re.escape(SUDO_PROMPT), sudo_password + "\n"))
        self.watching = bool(answers)
        self.wants_stdin = self.watching or stdin is not None
        if answers:
            for tee in tees.values():
                tee.add_watch(WatchWindow(answers, self.write_proc_stdin))

    def create_io_threads(self) -> Tuple[Dict[Callable, Any], List[str], List[str]]:
        """No thread for a run we wait for (``wait`` reads); one for an async run.

        invoke starts a thread per stream and host; starting threads costs
        more than running ``true``, and 256 hosts would hold 512 of them.
        """
        threads: Dict[Callable, Any] = {}
        if self.opts["asynchronous"]:
            threads[self.read_output] = ExceptionHandlingThread(target=self.read_output)
        return threads, [], []

    def read_output(self) -> None:
        """Both streams, until both end, into their Tees."""
        raise NotImplementedError

    def send_interrupt(self, interrupt: KeyboardInterrupt) -> None:
        # invoke forwards ^C as a byte on stdin and keeps waiting; we end the
        # command's whole tree and let the interrupt go on to the caller.
        self.kill()
        raise interrupt

    def start_timer(self, timeout: Optional[float]) -> None:
        # invoke infers a timeout from its Timer thread having ended, which
        # races with a kill that is still waiting for the tree to go.
        self.timer_fired = False
        if timeout is not None:
            self.timer = threading.Timer(timeout, self._time_out)
            self.timer.daemon = True
            self.timer.start()

    def stop_timer(self) -> None:
        """No timeout from now on; one that fired is waited for until its kill is done.

        The timer is a daemon thread: a result given while its kill still
        waits out the grace would let the program exit, and the SIGKILL for a
        process that ignores SIGTERM would never come.
        """
        timer = self.timer
        if timer is not None:
            timer.cancel()
            if timer is not threading.current_thread():
                timer.join()

    def _time_out(self) -> None:
        self.timer_fired = True
        self.kill()

    @property
    def timed_out(self) -> bool:
        return self.timer_fired

    def feed_stdin(self) -> None:
        """Write the caller's stdin in a thread, then close it (EOF to the command).

        Closed whatever happens: a ``read()`` that raises must not leave the
        command waiting for more. Its error is kept in ``stdin_error``.
        """
        data = self.stdin_data
        if data is None:
            return

        def feed() -> None:
            try:
                while True:
                    try:
                        chunk = data.read(CHUNK)
                    except Exception as e:  # noqa: BLE001 - the caller's object: anything
                        self.stdin_error = f"stdin could not be read: {type(e).__name__}: {e}"
                        return
                    if not chunk:
                        return
                    self._write_proc_stdin(chunk)
            except OSError:  # the command exited without reading it all
                pass
            finally:
                try:
                    self.close_proc_stdin()
                except (OSError, ValueError):
                    pass

        threading.Thread(target=feed, daemon=True, name="fabexec-stdin").start()


def grow_pipe(fd: int) -> int:
    """Pipe ``fd`` made `BIG_PIPE` large; its size (as it was, if refused)."""
    try:
        return fcntl.fcntl(fd, F_SETPIPE_SZ, BIG_PIPE)
    except OSError:  # over the user's pipe budget, or not Linux
        return SMALL_PIPE


def script_file(command: str) -> Optional[int]:
    """A descriptor of an unnamed file holding ``command`` if it is too long for ``-c``."""
    script = command.encode()
    if len(script) <= ARGUMENT_MAX:
        return None
    try:
        fd = os.memfd_create("fabexec-script", os.MFD_CLOEXEC)
    except (AttributeError, OSError):  # not Linux, or too old a kernel
        fd, path = tempfile.mkstemp(prefix="fabexec-script-")
        os.unlink(path)
    data = memoryview(script)
    while data:
        data = data[os.write(fd, data):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


class LocalRunner(TeeRunner, Local):
    """invoke's `Local`, in its own session so that the whole tree can be ended."""

    #: What `kill_local` could not end, if anything (see `RemoteRunner`).
    reap_error: Optional[str] = None
    #: The command is a launcher that ends its job elsewhere itself (see `kill_local`).
    launcher: bool = False

    #: Given no stdin, the command reads ours (see `callers_stdin`), not an empty one.
    inherit_stdin = False

    def stream_target(self, name: str) -> Any:
        """What the command gets as stream ``name``, as its Tee says it is wired."""
        tee = self.tees[name]
        wiring = tee.wiring()
        if wiring is Wiring.DISCARD:
            return subprocess.DEVNULL
        if wiring is Wiring.HANDOVER:
            self.handed_over.setdefault(tee.file, tee)  # one file for both: one check
            return tee.file.fileno()
        return subprocess.PIPE

    def start(self, command: str, shell: str, env: Dict[str, Any]) -> None:
        # A file the command may read itself, unless watchers must answer on its stdin.
        handed = None
        if (self.stdin_data is not None and hasattr(self.stdin_data, "fileno")
                and not self.watching):
            try:
                stdin: Any = self.stdin_data.fileno()
                handed, self.stdin_data = self.stdin_data, None  # the command reads it itself
            except (OSError, ValueError):
                stdin = subprocess.PIPE
        elif self.wants_stdin:
            stdin = subprocess.PIPE
        else:
            stdin = callers_stdin() if self.inherit_stdin else subprocess.DEVNULL
        self.handed_over: Dict[Any, Tee] = {}
        out, err = self.stream_target("stdout"), self.stream_target("stderr")
        script = script_file(command) if len(command) > ARGUMENT_MAX // 4 else None
        try:
            self.process = subprocess.Popen(
                [shell, "-c", command if script is None else READ_SCRIPT.format(fd=script)],
                env=env or None,  # None inherits ours without re-encoding it
                stdin=stdin,
                stdout=out,
                stderr=err,
                start_new_session=True,
                pass_fds=() if script is None else (script,),
            )
        finally:
            if script is not None:
                os.close(script)
        if handed is not None:
            handed.close()  # the command holds its own copy of the descriptor
        self.feed_stdin()

    def read_output(self) -> None:
        """The piped streams, until both end, through one selector.

        A pipe found full (a read as large as the kernel's default pipe) is
        grown to `BIG_PIPE`, once: output that pours then costs a read per MiB
        instead of per 64 KiB, and a command that prints little keeps a small
        pipe (an unprivileged user's pipes share a budget, 64 MiB by default).
        """
        try:
            self._read_pipes()
        except Exception:
            # Nothing drains the pipes any more: the command would block on
            # them forever. It is ended, and the error reaches the caller.
            if not self.killed:
                self.kill()
            raise

    def _read_pipes(self) -> None:
        pipes = {pipe.fileno(): self.tees[name]
                 for name, pipe in (("stdout", self.process.stdout),
                                    ("stderr", self.process.stderr)) if pipe is not None}
        if not pipes:
            return
        size = dict.fromkeys(pipes, SMALL_PIPE)  # bytes per read: the pipe's size
        grown: Set[int] = set()
        with selectors.DefaultSelector() as selector:
            for fd in pipes:
                selector.register(fd, selectors.EVENT_READ)
            while pipes:
                for key, _ in selector.select():
                    tee = pipes[key.fd]
                    data = os.read(key.fd, size[key.fd])
                    if not data:
                        selector.unregister(key.fd)
                        del pipes[key.fd]
                        continue
                    if len(data) == SMALL_PIPE and key.fd not in grown:
                        grown.add(key.fd)
                        size[key.fd] = grow_pipe(key.fd)
                    tee.write(data)
                    if tee.error is not None and not self.killed:
                        self.kill()  # its file cannot be written

    def _write_proc_stdin(self, data: bytes) -> None:
        if self.process.stdin is not None:
            try:
                self.process.stdin.write(data)
                self.process.stdin.flush()
            except (BrokenPipeError, ValueError):
                pass  # the command closed its stdin, or we did (a watcher answering late)

    def close_proc_stdin(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()

    def wait(self) -> None:
        # Blocks (in select, then waitpid; signals still arrive), where invoke
        # polls every 10 ms.
        if not self.opts["asynchronous"]:
            self.read_output()
        self.process.wait()
        if self.process.returncode and not self.killed:
            for tee in self.handed_over.values():
                tee.blame_full_disk()  # what the command met writing its file itself

    def kill(self) -> None:
        self.killed = True
        if getattr(self, "process", None) is None:
            return  # it never started (start() raised): nothing to end
        # Once reaped, the group's number may belong to someone else: tag only.
        pgid = self.process.pid if self.process.returncode is None else None
        left = kill_local(pgid, self.tag, reap=self.process.poll, launcher=self.launcher)
        if left:
            self.reap_error = "still running after SIGKILL: " + " ".join(map(str, left))

    def stop(self) -> None:
        self.stop_timer()
        if getattr(self, "process", None) is None:
            return  # start() raised: its error goes on to the caller, unhidden
        super().stop()
        for pipe in (self.process.stdout, self.process.stderr, self.process.stdin):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass


_context: Optional[SimpleNamespace] = None


def local_context() -> Any:
    """What a runner reads of its invoke Context, snapshotted once per process.

    invoke reads its layered `Config` through proxies on every run, which
    costs a third of a millisecond; every value we rely on is passed to
    ``run()`` explicitly anyway.
    """
    global _context
    if _context is None:
        config = Config()
        _context = SimpleNamespace(config=SimpleNamespace(
            run=dict(config.run), timeouts=SimpleNamespace(command=None)))
    return _context


class RemoteRunner(TeeRunner, Remote):
    """Fabric's `Remote`, fed to Tees, and able to end what it started.

    Fabric's ``kill`` closes the channel, which leaves the remote command
    running; ours runs `remote_kill_script` on a second channel first, and
    keeps in ``reap_error`` why it could not, if it could not.
    """

    reap_error: Optional[str] = None
    _reaped = False

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self._kill_lock = threading.Lock()

    def start(self, command: str, shell: str, env: Dict[str, Any]) -> None:
        # ``command`` is complete (env exported and quoted by command.py), so
        # Fabric's unquoted inline env is not used.
        self.channel = self.context.create_session()
        if self.killed:  # stopped while the session was being opened
            self.channel.close()
            raise HostError(self.context.original_host, "not started: the run was stopped")
        script = command.encode()
        self.channel.exec_command(remote_line(script, self.tag))
        self._write_proc_stdin(script)  # read by the remote bash before the caller's stdin
        if self.stdin_data is not None:
            self.feed_stdin()
        elif not self.wants_stdin:
            self.channel.shutdown_write()  # EOF at once: nothing waits on stdin

    def _write_proc_stdin(self, data: bytes) -> None:
        # paramiko's ``sendall`` spins forever once our EOF was sent (``send``
        # returns 0), and raises once the channel closed: a watcher may answer
        # that late, and its answer has nowhere to go. A view, so that what is
        # left is never copied (50 MB of bytes took 15 s that way).
        view = memoryview(data)
        while view:
            try:
                sent = self.channel.send(view)
            except OSError:
                return
            if not sent:
                return
            view = view[sent:]

    def deliver(self, tee: Tee, data: bytes) -> None:
        """One chunk to its Tee; a file that cannot be written ends the command."""
        tee.write(data)
        if tee.error is not None and not self.killed:
            self.kill()

    def read_output(self) -> None:
        """stdout and stderr of the channel, in the thread that waits for it.

        paramiko's ``fileno()`` is readable while either stream has data, and
        for good once the channel reaches EOF or closes.
        """
        channel = self.channel
        streams = ((channel.recv_ready, channel.recv, self.tees["stdout"]),
                   (channel.recv_stderr_ready, channel.recv_stderr, self.tees["stderr"]))
        with selectors.DefaultSelector() as selector:
            selector.register(channel.fileno(), selectors.EVENT_READ)
            while True:
                # Seen before draining: data that came with the EOF is read below.
                ended = channel.eof_received or channel.closed
                moved = False
                for ready, recv, tee in streams:
                    if ready():
                        data = recv(CHUNK)
                        if data:
                            moved = True
                            self.deliver(tee, data)
                if not moved:
                    if ended:
                        return
                    try:
                        selector.select(SELECT_TIMEOUT)
                    except (OSError, ValueError):
                        # kill() closed the channel, and its pipe, under us: what
                        # was received is read above on the next turn.
                        if not channel.closed:
                            raise

    def wait(self) -> None:
        # Fabric polls exit_status_ready() every 10 ms; the channel's own
        # event is set on an exit status and when the channel closes.
        if not self.opts["asynchronous"]:
            self.read_output()
        self.channel.status_event.wait()

    def returncode(self) -> Optional[int]:
        """The remote exit status; None when the connection ended without one."""
        status = self.channel.exit_status if self.channel.status_event.is_set() else -1
        return None if status == -1 else status

    def kill(self) -> None:
        """End the command and all it started on the host; keep the reaper's verdict.

        Once the tree is gone the login shell reports 128+SIGTERM (see
        `command.remote_line`) and the channel ends by itself, so the reader
        drains it; a channel that gets no status (a host gone) is closed.
        """
        self.killed = True
        channel = getattr(self, "channel", None)
        if channel is None:
            return  # not started yet: start() sees `killed` and does not run it
        with self._kill_lock:  # a timeout and a kill() may come at once: one reaper
            if self.reap_error is None and not self._reaped:
                self.reap_error = self._reap()
                self._reaped = True
        if not channel.status_event.wait(EXIT_STATUS_WAIT):
            channel.close()

    def _reap(self) -> Optional[str]:
        """Run the reaper on a channel of its own; None when nothing of ours is left.

        Over the run's connection while it works; once it went (the pool closed
        it, or the link broke), over a new connection of the reaper's own,
        closed afterwards: processes left on the host need one to be ended, and
        reopening the run's instead would leave a connection the pool may have
        dropped open where `close_connections` cannot reach it. No pool lock is
        taken: the SIGTERM handler reaps while the main thread may hold it.
        """
        cxn = self.context
        if cxn.transport is not None and cxn.transport.is_active():
            return self._reap_over(cxn)
        own = HostConnection(cxn.original_host, cxn.hop_info, cxn.config)
        try:
            own.open()
            return self._reap_over(own)
        except HostError as e:
            return f"cannot reconnect to end the command: {e}"
        finally:
            own.close()

    def _reap_over(self, cxn: HostConnection) -> Optional[str]:
        script = remote_kill_script(self.tag)
        try:
            reaper = cxn.transport.open_session(timeout=KILL_TIMEOUT)
            if self.sudo:  # root's processes take root to end
                reaper.exec_command(sudo_line(script, self.sudo_password is not None))
                if self.sudo_password is not None:
                    reaper.sendall((self.sudo_password + "\n").encode())
            else:
                reaper.exec_command(f"bash -c {shlex.quote(script)}")
            ended = reaper.status_event.wait(KILL_TIMEOUT)
            said = reaper.recv_stderr(4096).decode(errors="replace").strip() \
                if reaper.recv_stderr_ready() else ""
            reaper.close()
        except (SSHException, OSError, EOFError) as e:
            return f"the command could not be ended: {type(e).__name__}: {e}"
        if not ended:
            return f"the command could not be ended: no answer within {KILL_TIMEOUT:g} s"
        if reaper.exit_status != 0:
            return f"the command could not be ended: {said or f'exit {reaper.exit_status}'}"
        return None

    def stop(self) -> None:
        self.stop_timer()
        if hasattr(self, "channel"):  # start() may have failed before opening it
            self.channel.close()
