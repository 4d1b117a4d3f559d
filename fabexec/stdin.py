"""What every host reads on stdin: the caller's data, whole, from where it started.

A file object has one read position. Handed to several hosts as it is, each
host's feeder read the next chunk, so the data was split between the hosts
(8 MiB to four hosts arrived as 0, 2.25, 2.25 and 3.5 MiB, exit code 0), and an
`ExecInfo` reused for a second `Exec` gave it nothing. Here each host gets a
reader of its own over the same data:

- ``str`` and ``bytes``: a view of them, per host (no copy per host).
- A seekable file (an open file, ``BytesIO``): read from the position it had
  when a run first used it, by every host of every run, each with its own
  position. A local command is handed a fresh descriptor of a regular file
  and reads it itself, as ``cmd < file`` does.
- A stream that cannot seek (a pipe, a socket, ``sys.stdin`` on a pipe):
  read once into a temporary file as it arrives; every host reads that
  file whole at its own pace, waiting for more until the stream ends, so a
  slow host never holds the data in memory. A run on one host reads the
  stream directly, as a shell's command would: what it leaves is the next
  reader's.

Given no ``stdin``, a local command we wait for reads the caller's own
(descriptor 0), as a bash script's commands do: ``read`` and prompts get what
the caller's stdin holds. An async one and a remote one get an empty stdin:
two readers of one stream (the caller and an async command, or hosts at once)
would each get an unpredictable part of it, and a remote host reads nothing
unless told, as ``ssh -n`` and pdsh do.
"""

from __future__ import annotations

import fcntl
import io
import os
import stat
import subprocess
import tempfile
import threading
import weakref
from typing import IO, Any, Optional

from .errors import ExecInfoError
from .info import StdinLike

#: Bytes per read from the caller's stream.
CHUNK = 256 * 1024

_lock = threading.Lock()
#: Where each seekable file started (its position when a run first used it),
#: and each spooled stream's copy, by the caller's object.
_starts: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
_spools: weakref.WeakKeyDictionary[Any, _Spool] = weakref.WeakKeyDictionary()


class StdinReader:
    """One host's reader: ``read(n)`` gives bytes, ``b''`` at the end."""

    def read(self, size: int) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the reader holds (a descriptor handed to a child)."""


class _BytesReader(StdinReader):
    def __init__(self, data: bytes) -> None:
        self._view, self._pos = memoryview(data), 0

    def read(self, size: int) -> bytes:
        chunk = self._view[self._pos:self._pos + size]
        self._pos += len(chunk)
        return bytes(chunk)


class _SeekingReader(StdinReader):
    """A position of its own in a seekable file shared with other readers."""

    def __init__(self, source: IO[Any], start: int, lock: threading.Lock) -> None:
        self._source, self._pos, self._lock = source, start, lock

    def read(self, size: int) -> bytes:
        with self._lock:
            self._source.seek(self._pos)
            chunk = self._source.read(size)
            self._pos = self._source.tell()
        return chunk.encode() if isinstance(chunk, str) else chunk


class _FileHandover(_SeekingReader):
    """A regular file a local command may read itself, from a descriptor of its own."""

    def __init__(self, source: IO[Any], start: int, lock: threading.Lock, fd: int) -> None:
        super().__init__(source, start, lock)
        self._fd: Optional[int] = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY)
        os.lseek(self._fd, start, os.SEEK_SET)

    def fileno(self) -> int:
        if self._fd is None:
            raise ValueError("closed")
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class _StreamReader(StdinReader):
    """The caller's stream itself, for a run on one host."""

    def __init__(self, stream: IO[Any]) -> None:
        self._stream = stream

    def read(self, size: int) -> bytes:
        chunk = self._stream.read(size)
        return chunk.encode() if isinstance(chunk, str) else chunk

    def fileno(self) -> int:
        fileno = getattr(self._stream, "fileno", None)
        if fileno is None:
            raise io.UnsupportedOperation("fileno")
        return fileno()


class _Spool:
    """A stream copied once, as it arrives, into a temporary file that many read."""

    def __init__(self, stream: IO[Any]) -> None:
        self._file = tempfile.TemporaryFile(prefix="fabexec-stdin-")
        self.size, self.ended = 0, False
        self.error: Optional[BaseException] = None
        self._arrived = threading.Condition()
        threading.Thread(target=self._copy, args=(stream,), daemon=True,
                         name="fabexec-stdin-spool").start()

    def _copy(self, stream: IO[Any]) -> None:
        try:
            while True:
                chunk = stream.read(CHUNK)
                if not chunk:
                    break
                data = chunk.encode() if isinstance(chunk, str) else chunk
                os.pwrite(self._file.fileno(), data, self.size)
                with self._arrived:
                    self.size += len(data)
                    self._arrived.notify_all()
        except BaseException as e:  # noqa: BLE001 - the readers say it
            self.error = e
        finally:
            with self._arrived:
                self.ended = True
                self._arrived.notify_all()

    def read_at(self, offset: int, size: int) -> bytes:
        with self._arrived:
            self._arrived.wait_for(lambda: self.size > offset or self.ended)
            available = self.size - offset
        if available <= 0:
            if self.error is not None:
                raise OSError(f"stdin could not be read: {self.error}")
            return b""
        return os.pread(self._file.fileno(), min(size, available), offset)


class _SpoolReader(StdinReader):
    def __init__(self, spool: _Spool) -> None:
        self._spool, self._pos = spool, 0

    def read(self, size: int) -> bytes:
        chunk = self._spool.read_at(self._pos, size)
        self._pos += len(chunk)
        return chunk


def _seekable(stream: Any) -> bool:
    try:
        return bool(stream.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _regular_fd(stream: Any) -> Optional[int]:
    try:
        fd = stream.fileno()
        return fd if stat.S_ISREG(os.fstat(fd).st_mode) else None
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None


def callers_stdin() -> Any:
    """Our descriptor 0 for a child to inherit (``None`` to `subprocess`), or
    ``DEVNULL`` where it is closed or cannot be read (a CI job may start us so)."""
    try:
        flags = fcntl.fcntl(0, fcntl.F_GETFL)
    except OSError:
        return subprocess.DEVNULL
    return None if (flags & os.O_ACCMODE) in (os.O_RDONLY, os.O_RDWR) else subprocess.DEVNULL


class StdinSource:
    """The caller's ``stdin`` for one run on ``hosts`` hosts: `reader` gives each its own."""

    def __init__(self, given: StdinLike, hosts: int) -> None:
        if getattr(given, "closed", False) is True:
            raise ExecInfoError("stdin", "the file is closed: open it, or pass its data")
        self.given, self.hosts = given, hosts
        self._lock = threading.Lock()
        if isinstance(given, str):
            self._data: Optional[bytes] = given.encode()
        else:
            self._data = given if isinstance(given, bytes) else None
        self._start: Optional[int] = None
        self._spool: Optional[_Spool] = None
        if self._data is None and given is not None:
            if _seekable(given):
                with _lock:
                    if given not in _starts:
                        _starts[given] = given.tell()
                    self._start = _starts[given]
            elif hosts > 1 or given in _spools:
                with _lock:
                    if given not in _spools:
                        _spools[given] = _Spool(given)
                    self._spool = _spools[given]

    def reader(self, local: bool = False) -> Optional[StdinReader]:
        """A reader of the whole data for one host; ``local`` readers may hand a file over."""
        given = self.given
        if given is None:
            return None
        if self._data is not None:
            return _BytesReader(self._data)
        if self._start is not None:
            fd = _regular_fd(given) if local else None
            if fd is not None:
                return _FileHandover(given, self._start, self._lock, fd)
            return _SeekingReader(given, self._start, self._lock)
        if self._spool is not None:
            return _SpoolReader(self._spool)
        return _StreamReader(given)
