"""The output fan-out: bytes in; terminal, memory, file and watchers out.

A runner hands each chunk it reads to one `Tee` per host and stream. Files get
the exact bytes; the terminal and watchers get text decoded incrementally, so a
UTF-8 character cut by a chunk boundary stays whole and an invalid byte becomes
U+FFFD instead of an exception. Collected output is kept as bytes and decoded
once, when asked for: the same text, without a decoder call per chunk. Nothing
is kept unless collected, and no step grows with the output already seen.

Before a local command starts, its runner asks each Tee once how the stream is
`Wiring`: discarded (``/dev/null``), handed over (the command gets the output
file's descriptor as its stdout or stderr, exactly as a shell's ``> file``
does; stdout and stderr to one file share one open file description, as
``> file 2>&1``), or piped through the Tee. A file is handed over only when it
is a regular file, not shared with another host, and nothing else wants the
bytes. Devices, FIFOs and terminals go through the pipe, so that their write
errors are met by fabexec as they happen: ``/dev/full`` refuses the first
write, the command is ended and an `OutputWriteError` names file and host.

A handed-over file's write errors happen in the command, not in fabexec: a
full disk gives the command ENOSPC, as under ``> file``, and most commands then
fail; the command is not ended for it. When a command whose file was handed
over ends with a nonzero status (and was not ended by fabexec), the file's
filesystem is checked: with no free block left, the file gets the
`OutputWriteError` it would have had through the pipe. A command that ignores
its write errors and exits 0, or a quota (EDQUOT) rather than a full disk, is
not reported; a command that failed for another reason while the disk happened
to be full is reported as a write error.
"""

from __future__ import annotations

import codecs
import enum
import errno
import os
import stat
import threading
import time
from typing import IO, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from .errors import OutputWriteError, PathNotFoundError

AnyStr = Union[str, bytes]

#: How much recent text a watcher (e.g. invoke's Responder) is shown.
WATCH_WINDOW = 64 * 1024


class LineJoiner:
    """Whole lines out of arbitrary chunks, each line prefixed.

    Several hosts writing to one terminal or file must never cut into each
    other's lines; a partial line waits (as a list of pieces, so that a 10 MiB
    line is joined once, not once per chunk) until its newline arrives.
    """

    def __init__(self, prefix: AnyStr, newline: AnyStr) -> None:
        self.prefix, self.newline = prefix, newline
        self._pending: List[AnyStr] = []

    def feed(self, chunk: AnyStr) -> AnyStr:
        head, sep, tail = chunk.rpartition(self.newline)
        if not sep:
            self._pending.append(chunk)
            return chunk[:0]
        lines = chunk[:0].join([*self._pending, head])
        self._pending = [tail] if tail else []
        joiner = self.newline + self.prefix
        return self.prefix + lines.replace(self.newline, joiner) + self.newline

    def flush(self) -> AnyStr:
        """The last line, ended with a newline even if the output had none."""
        if not self._pending:
            return self.newline[:0]
        rest = self.newline[:0].join(self._pending)
        self._pending = []
        return self.prefix + rest + self.newline


class Terminal:
    """Live output to our own stdout or stderr, ``[host] ``-prefixed when several hosts."""

    _lock = threading.Lock()  # one terminal, shared by every host's threads

    def __init__(self, stream: IO[str], host: Optional[str]) -> None:
        self.stream = stream
        self._lines = LineJoiner(f"[{host}] ", "\n") if host is not None else None
        #: A terminal that cannot show every character (PYTHONIOENCODING=ascii,
        #: a C locale) gets "?" for those: a strict stream would raise, and the
        #: run would lose its results for a character it printed.
        encoding = getattr(stream, "encoding", None) or "utf-8"
        strict = getattr(stream, "errors", "strict") == "strict"
        self._narrow = encoding if strict and codecs.lookup(encoding).name != "utf-8" else None

    def write(self, text: str) -> None:
        if self._lines is not None:
            text = self._lines.feed(text)
            if not text:
                return
        if self._narrow is not None:
            text = text.encode(self._narrow, "replace").decode(self._narrow)
        with self._lock:
            self.stream.write(text)
            self.stream.flush()

    def close(self) -> None:
        if self._lines is not None:
            rest = self._lines.flush()
            if rest:
                self._lines = None
                self.write(rest)


def check_output_path(path: str, field: str) -> None:
    """Raise what opening ``path`` for writing would, without creating or truncating it."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise PathNotFoundError(field, path, f"folder {folder!r} does not exist")
    there = os.path.exists(path)
    if not os.access(path if there else folder, os.W_OK):
        where = "the file" if there else f"folder {folder!r}"
        raise OutputWriteError("localhost", path, f"{where} is not writable")


#: How often a FIFO without a reader is tried again.
FIFO_RETRY_SECONDS = 0.05


def open_writer(path: str, flags: int, timeout: Optional[float]) -> int:
    """Open ``path`` for writing; a FIFO waits for its reader, within ``timeout``.

    A plain open of a FIFO blocks until a reader comes, which may be never,
    and cannot be interrupted by the run's ``timeout``. Without a timeout it
    waits as a shell's ``> fifo`` does.
    """
    try:
        fifo = stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        fifo = False
    if not fifo:
        return os.open(path, flags, 0o666)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            fd = os.open(path, flags | os.O_NONBLOCK)
            break
        except OSError as e:
            if e.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
        if deadline is not None and time.monotonic() >= deadline:
            raise OSError(errno.ENXIO, f"no reader opened this FIFO within the "
                                       f"timeout ({timeout:g} s)")
        time.sleep(FIFO_RETRY_SECONDS)
    os.set_blocking(fd, True)
    return fd


class OutputFile:
    """One file that receives bytes, byte for byte, unbuffered.

    Unbuffered, so that what a host sent before it crashed is on disk.
    ``hosts`` > 1 means several hosts share it: then it receives whole lines,
    each prefixed with its host, through one `SharedView` per host.
    """

    def __init__(self, path: str, field: str, timeout: Optional[float] = None) -> None:
        self.path = path
        check_output_path(path, field)
        try:
            self._file = open(path, "wb", buffering=0,  # noqa: SIM115 (closed by close())
                              opener=lambda p, flags: open_writer(p, flags, timeout))
        except OSError as e:
            raise OutputWriteError("localhost", path, e.strerror or str(e)) from None
        self._lock = threading.Lock()
        self._users = 0
        #: Only a regular file may be handed to a command (see `Wiring`).
        self.regular = stat.S_ISREG(os.fstat(self._file.fileno()).st_mode)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        with self._lock:
            while view:  # a raw write may take fewer bytes than given
                view = view[self._file.write(view):]

    def attach(self) -> None:
        self._users += 1

    def fileno(self) -> int:
        return self._file.fileno()

    def close(self) -> None:
        self._users -= 1
        if self._users <= 0:
            self._file.close()


class SharedView:
    """One host's side of an `OutputFile` shared by several hosts."""

    def __init__(self, file: OutputFile, host: str) -> None:
        self.file, self.path = file, file.path
        self._lines = LineJoiner(f"[{host}] ".encode(), b"\n")
        file.attach()

    def write(self, data: bytes) -> None:
        lines = self._lines.feed(data)
        if lines:
            self.file.write(lines)

    def close(self) -> None:
        try:
            rest = self._lines.flush()
            if rest:
                self.file.write(rest)
        finally:
            self.file.close()


class Wiring(enum.Enum):
    """How a local command's stream reaches what wants it, decided once before it starts."""

    #: Nothing wants it: the command writes to /dev/null.
    DISCARD = "discard"
    #: Its only destination is one regular file: the command writes it itself.
    HANDOVER = "handover"
    #: Read by the runner and written to the Tee.
    PIPE = "pipe"


class Tee:
    """One stream (stdout or stderr) of one host, fanned out to its sinks."""

    def __init__(
        self,
        host: str,
        *,
        file: Any = None,
        terminal: Optional[Terminal] = None,
        collect: bool = False,
        watch: Optional[Callable[[str], None]] = None,
        encoding: str = "utf-8",
    ) -> None:
        self.host = host
        self.file, self.terminal, self.watch = file, terminal, watch
        self._collected: Optional[bytearray] = bytearray() if collect else None
        self._text: Optional[str] = None
        self.encoding = encoding
        wants_text = terminal is not None or watch is not None
        self._decoder = codecs.getincrementaldecoder(encoding)("replace") if wants_text else None
        self.error: Optional[OutputWriteError] = None

    def write(self, data: bytes) -> None:
        """Hand one chunk to every sink; a file that fails is recorded and dropped."""
        if self.file is not None:
            try:
                self.file.write(data)
            except OSError as e:
                self.fail(e)
        if self._collected is not None:
            self._collected += data
        if self._decoder is not None:
            self._show(self._decoder.decode(data))

    def _show(self, text: str) -> None:
        if not text:
            return
        if self.terminal is not None:
            try:
                self.terminal.write(text)
            except (OSError, ValueError):
                # Closed, or a reader gone (``| head -1``): the run goes on,
                # its other sinks complete; only the terminal stops showing it.
                self.terminal = None
        if self.watch is not None:
            self.watch(text)

    def add_watch(self, watch: Callable[[str], None]) -> None:
        """Feed ``watch`` the decoded text too (invoke watchers, the sudo prompt)."""
        self.watch = watch
        if self._decoder is None:
            self._decoder = codecs.getincrementaldecoder(self.encoding)("replace")

    def wiring(self) -> Wiring:
        """How a local command's stream should reach this Tee (see the module's docstring)."""
        if self._decoder is not None or self._collected is not None:
            return Wiring.PIPE
        if self.file is None:
            return Wiring.DISCARD
        if isinstance(self.file, OutputFile) and self.file.regular:
            return Wiring.HANDOVER
        return Wiring.PIPE

    def blame_full_disk(self) -> None:
        """After a command failed writing this handed-over file itself: a full disk is ours.

        The command met the error, not us: with no free block left on the
        file's filesystem, ENOSPC on this file is the likely reason it failed.
        """
        try:
            full = os.fstatvfs(self.file.fileno()).f_bavail == 0
        except OSError:
            return
        if full:
            self.fail(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))

    def fail(self, e: OSError) -> None:
        """The file cannot be written: record it, and write nothing more there."""
        self.error = OutputWriteError(self.host, self.file.path, e.strerror or str(e))
        file, self.file = self.file, None
        try:
            file.close()
        except OSError:
            pass

    def close(self) -> None:
        if self._decoder is not None:
            self._show(self._decoder.decode(b"", final=True))
        if self.terminal is not None:
            try:
                self.terminal.close()
            except (OSError, ValueError):
                pass  # as in _show
        if self.file is not None:
            file, self.file = self.file, None
            try:
                file.close()
            except OSError as e:  # recorded; a second close would release a shared file twice
                self.error = OutputWriteError(self.host, file.path, e.strerror or str(e))

    @property
    def text(self) -> str:
        """What was collected, decoded once ('' when ``collect_output`` is off).

        Read once the stream ended: decoding the whole output at once gives
        exactly the text an incremental decoder would, character cuts included.
        """
        if self._text is None:
            collected, self._collected = self._collected, None
            self._text = collected.decode(self.encoding, "replace") if collected else ""
        return self._text


class WatchWindow:
    """Feeds invoke `StreamWatcher`s a bounded window of recent output.

    invoke's ``Runner.respond`` joins the *whole* output for every chunk
    (quadratic). We keep only the last `WATCH_WINDOW` characters and shift the
    watchers' read positions (``index``/``failure_index`` of invoke's
    ``Responder``/``FailingResponder``) when the window slides.
    """

    def __init__(self, watchers: Sequence[Any], respond: Callable[[str], None]) -> None:
        self.watchers, self.respond = list(watchers), respond
        self._window = ""

    def __call__(self, text: str) -> None:
        window = self._window + text
        if len(window) > 2 * WATCH_WINDOW:
            dropped = len(window) - WATCH_WINDOW
            window = window[dropped:]
            for watcher in self.watchers:
                for attr in ("index", "failure_index"):
                    if isinstance(getattr(watcher, attr, None), int):
                        setattr(watcher, attr, max(0, getattr(watcher, attr) - dropped))
        self._window = window
        for watcher in self.watchers:
            for response in watcher.submit(window):
                self.respond(response)


class Outputs:
    """Every host's Tees for one `Exec`, opened before anything runs."""

    def __init__(
        self,
        hosts: Sequence[str],
        *,
        collect: bool,
        hide: bool,
        pipe_stdout: Optional[str],
        pipe_stderr: Optional[str],
        stdout: IO[str],
        stderr: IO[str],
        timeout: Optional[float] = None,
    ) -> None:
        self.hosts = list(hosts)
        self.timeout = timeout  # also for opening a FIFO (see `open_writer`)
        several = len(self.hosts) > 1
        self.tees: Dict[str, Dict[str, Tee]] = {h: {} for h in self.hosts}
        opened: Dict[Tuple[int, int], OutputFile] = {}
        for pipe, field in ((pipe_stdout, "pipe_stdout"), (pipe_stderr, "pipe_stderr")):
            for path in self._paths(pipe):  # every one, before any is opened (truncated)
                check_output_path(path, field)
        try:
            for name, pipe, stream in (("stdout", pipe_stdout, stdout),
                                       ("stderr", pipe_stderr, stderr)):
                files = self._files(pipe, f"pipe_{name}", opened)
                for host in self.hosts:
                    self.tees[host][name] = Tee(
                        host,
                        file=files(host),
                        terminal=None if hide else Terminal(stream, host if several else None),
                        collect=collect,
                    )
        except BaseException:
            for f in opened.values():
                f._file.close()
            raise

    def _paths(self, pipe: Optional[str]) -> List[str]:
        """The files ``pipe`` names for this run's hosts."""
        if pipe is None:
            return []
        return [pipe.replace("{host}", host) for host in self.hosts] if "{host}" in pipe else [pipe]

    def _files(self, pipe: Optional[str], field: str,
               opened: Dict[Tuple[int, int], OutputFile]) -> Callable[[str], Any]:
        if pipe is None:
            return lambda host: None
        if "{host}" in pipe:
            def per_host(host: str) -> OutputFile:
                f = self._open(pipe.replace("{host}", host), field, opened)
                f.attach()
                return f
            return per_host
        shared = self._open(pipe, field, opened)
        if len(self.hosts) == 1:
            shared.attach()
            return lambda host: shared
        return lambda host: SharedView(shared, host)

    def _open(self, path: str, field: str,
              opened: Dict[Tuple[int, int], OutputFile]) -> OutputFile:
        """The file at ``path``, opened once even when stdout and stderr both go there.

        Two opens would keep two write offsets, and each stream would overwrite
        the other's bytes (as ``>log 2>log`` does in a shell, not ``>log 2>&1``).
        Files are known by device and inode, so that any path to one is found.
        """
        try:
            st = os.stat(path)
            if (st.st_dev, st.st_ino) in opened:
                return opened[(st.st_dev, st.st_ino)]
        except OSError:
            pass  # not there yet: OutputFile creates it (or says why it cannot)
        f = OutputFile(path, field, self.timeout)
        st = os.fstat(f.fileno())
        opened[(st.st_dev, st.st_ino)] = f
        return f

    def close(self) -> List[OutputWriteError]:
        """Close every sink; the write errors met on the way, one per host at most."""
        errors = []
        for streams in self.tees.values():
            for tee in streams.values():
                tee.close()
                if tee.error is not None:
                    errors.append(tee.error)
        return errors
