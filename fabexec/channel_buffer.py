"""Receive buffers of channels: chunks kept as they came, the reader woken once what it
asked for is there (a copy's SFTP channel), or a batch of a gateway's frames.

paramiko's `BufferedPipe` copies every SSH packet (32 KiB from OpenSSH) into an
array, copies it out again for the reader, shifts what remains, and wakes the
reader at every packet; its SFTP client then asks again for the rest of its
message (``Channel.recv`` in a loop). A 128 KiB read answer cost four wake-ups
of the copying thread and three copies. Profiled on a ``Get`` of 1 GiB
(py-spy, GIL samples), the array and the wake-ups were 45% of the client's
Python time.

`GatheringPipe` keeps the packets as they came (no copy), hands a reader one
slice or one join of what it asked for, and wakes it when that much is there,
the channel closed or its timeout passed (then with what came, as paramiko
does). paramiko's SFTP client always asks for exactly the bytes of the message
it is reading (``BaseSFTP._read_all``), so it never waits longer than it
would. It replaces the channel's own buffer before the channel carries any
data (`fabexec.seams.replace_channel_buffer`). Client CPU of a ``Get`` of
256 MiB went from 3.4-3.8 to 2.2-2.6 s a GiB in the same runs, of 1 GiB from
3.56-4.80 to 2.25-2.83 s (README's "Measured").

`BatchingPipe` is a gateway's stdout (`fabexec.tree`). While nobody can look
at results before the end (output hidden, no files, no ``exec_async``), its
reader sleeps until a batch of frames came or the gateway ended, not at each
packet: a wake of the reading thread each, 0.15-0.2 ms of the root's CPU on a
loaded machine, some 5 a gateway in a half-minute run of 1,024 targets.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Deque, Optional

from paramiko.buffered_pipe import BufferedPipe, PipeTimeout


class GatheringPipe:
    """What `paramiko.buffered_pipe.BufferedPipe` offers a `Channel`: ``feed`` from
    the transport's thread, ``read`` (with a timeout) from one reader, ``close``,
    ``read_ready``, ``set_event``, ``empty`` and ``len()``."""

    def __init__(self) -> None:
        self._ready = threading.Condition(threading.Lock())
        self._chunks: Deque[bytes] = deque()
        self._size = 0
        self._want = 0  # the bytes a waiting reader needs; 0: nobody waits
        self._closed = False
        self._event: Optional[threading.Event] = None

    def set_event(self, event: threading.Event) -> None:
        """``event`` is set while data is there or the pipe is closed (`Channel.fileno`)."""
        with self._ready:
            self._event = event
            if self._closed or self._size:
                event.set()
            else:
                event.clear()

    def feed(self, data: bytes) -> None:
        """A packet's data, from the transport's thread."""
        with self._ready:
            if data:
                self._chunks.append(bytes(data))
                self._size += len(data)
            if self._event is not None:
                self._event.set()
            if self._want and self._size >= self._want:
                self._ready.notify()

    def read_ready(self) -> bool:
        with self._ready:
            return self._size > 0

    def __len__(self) -> int:
        with self._ready:
            return self._size

    def close(self) -> None:
        """No more data will come: a reader gets what is left, then ``b""``."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
            if self._event is not None:
                self._event.set()

    def read(self, nbytes: int, timeout: Optional[float] = None) -> bytes:
        """``nbytes`` bytes once they came; fewer at the close, or when ``timeout``
        seconds passed with some there; `PipeTimeout` when none came in time."""
        with self._ready:
            if self._size < nbytes and not self._closed:
                self._wait(nbytes, timeout)
            return self._take(nbytes)

    def empty(self) -> bytes:
        """Everything buffered, which is dropped from the pipe."""
        with self._ready:
            return self._take(self._size)

    def _wait(self, nbytes: int, timeout: Optional[float]) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        self._want = nbytes
        try:
            while self._short(nbytes):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    if self._size:
                        return
                    raise PipeTimeout()
                self._ready.wait(left)
        finally:
            self._want = 0

    def _short(self, nbytes: int) -> bool:
        """Whether a reader of ``nbytes`` sleeps on (the lock held)."""
        return self._size < nbytes and not self._closed

    def _take(self, nbytes: int) -> bytes:
        chunks, parts, left = self._chunks, [], nbytes
        while chunks and left:
            chunk = chunks[0]
            if len(chunk) <= left:
                parts.append(chunks.popleft())
                left -= len(chunk)
            else:
                parts.append(chunk[:left])
                chunks[0] = chunk[left:]
                left = 0
        out = parts[0] if len(parts) == 1 else b"".join(parts)
        self._size -= len(out)
        if not self._size and self._event is not None and not self._closed:
            self._event.clear()
        return out


class BatchingPipe(GatheringPipe):
    """Each packet wakes the reader, as paramiko's pipe does, until `batch` is set:
    from then on the reader sleeps until that many bytes came, the channel closed, or
    a `poke` (data on stderr: read, it reopens the channel's window, which stdout
    shares; unread, 2 MiB of it would stall the gateway)."""

    def __init__(self) -> None:
        super().__init__()
        self._batch = 1
        self._poked = False

    def batch(self, nbytes: int) -> None:
        with self._ready:
            self._batch = nbytes

    def poke(self) -> None:
        """Wake a reader waiting for a batch: `read` raises `PipeTimeout` if nothing came."""
        with self._ready:
            if self._batch > 1:
                self._poked = True
                self._ready.notify()

    def read(self, nbytes: int, timeout: Optional[float] = None) -> bytes:
        with self._ready:
            want = min(nbytes, self._batch)
            if self._size < want and not self._closed:
                self._wait(want, timeout)
            poked, self._poked = self._poked, False
            if poked and not self._size and not self._closed:
                raise PipeTimeout()
            return self._take(nbytes)

    def _short(self, nbytes: int) -> bool:
        return super()._short(nbytes) and not self._poked


class PokingPipe(BufferedPipe):
    """paramiko's pipe, for stderr, that pokes a `BatchingPipe` at each packet."""

    def __init__(self, reader: BatchingPipe) -> None:
        super().__init__()
        self.reader = reader

    def feed(self, data: bytes) -> None:
        super().feed(data)
        self.reader.poke()
