"""Reading a host's file over SFTP with a bounded window of read requests in flight.

paramiko's read-ahead (``SFTPFile.prefetch``) sends its requests from a thread
of its own and keeps every answered block until it is read, with no bound.
When the reader catches up with that thread, paramiko decides the read-ahead
is over: the rest is read one request (one round trip) at a time, while the
answers to the requests still being sent pile up unread. A ``Get`` of 1 GB
took 10 to 13 s at 62 MB in 6 runs of 10 and 40 to 52 s at up to 1 GB in the
other 4 (issue 17).

Here the reading thread itself sends the requests and takes their answers in
file order, never more than `IN_FLIGHT` outstanding: memory is bounded by
the window, and the link never idles while the window is full.

paramiko has no public call for a read without waiting for its answer; the
calls its own ``SFTPFile`` makes for one are behind `seams.send_sftp_read`,
`seams.read_sftp_answer` and `seams.raise_sftp_status`, and paramiko hands
each answer to `SftpReader.answer` (see `seams.SftpAnswers`).
"""

from __future__ import annotations

from collections import deque
from typing import Any, Deque, Dict, Tuple

from paramiko import Message, SFTPClient, SFTPError, SFTPFile

from .seams import (
    SFTP_DATA,
    SFTP_STATUS,
    SftpAnswers,
    raise_sftp_status,
    read_sftp_answer,
    send_sftp_read,
)

#: Bytes asked for by one read request. OpenSSH answers up to 255 KiB (64 KiB
#: before 8.x); a server that answers less is asked again for the rest, and
#: later requests are made the size it answered. 128 KiB costs about half the
#: client CPU of paramiko's 32 KiB.
REQUEST = 128 << 10
#: Read requests outstanding at once: 4 MiB in flight, as much as the reader
#: may hold in memory besides the channel's own buffer.
IN_FLIGHT = 32
#: The smallest request size a short answer can teach us.
MIN_REQUEST = 4 << 10


class SftpReader(SftpAnswers):
    """A host's file read in order, `IN_FLIGHT` requests ahead, up to ``size`` bytes.

    ``size`` is the file's size when the copy began: as with ``scp``, a file
    that grows meanwhile is copied up to that size, and one that shrinks ends
    where it ends. Not thread-safe: one copy, one thread, one SFTP session.
    """

    def __init__(self, remote: SFTPFile, size: int) -> None:
        self._remote = remote
        self._sftp: SFTPClient = remote.sftp
        self._size = size
        self._request = REQUEST
        self._next = 0  # the next byte to ask for
        #: (request number, offset, length), in file order, contiguous from the
        #: next byte to hand out.
        self._pending: Deque[Tuple[int, int, int]] = deque()
        self._answers: Dict[int, Tuple[int, Message]] = {}
        self._left = b""  # what a caller asked less than of the last answer
        self._eof = size <= 0

    def read(self, size: int = -1) -> bytes:
        """At most ``size`` bytes (one answer's worth), ``b""`` at the end."""
        data = self._left or self._next_block()
        if 0 <= size < len(data):
            data, self._left = data[:size], data[size:]
        else:
            self._left = b""
        return data

    def close(self) -> None:
        """Close the remote file; answers still on their way are dropped."""
        self._eof = True
        self._pending.clear()
        self._answers.clear()
        self._remote.close()

    def __enter__(self) -> SftpReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def answer(self, kind: int, msg: Message, num: int) -> None:
        """paramiko hands us the answer to request ``num``; past the end,
        answers to requests still on their way are dropped."""
        if not self._eof:
            self._answers[num] = (kind, msg)

    def _next_block(self) -> bytes:
        """The next answer in file order, once it came."""
        if self._eof:
            return b""
        self._fill()
        if not self._pending:  # every byte up to the size asked for was handed out
            self._eof = True
            return b""
        num, offset, length = self._pending.popleft()
        while num not in self._answers:
            read_sftp_answer(self._sftp)
        kind, msg = self._answers.pop(num)
        if kind == SFTP_STATUS:
            try:
                raise_sftp_status(self._sftp, msg)
            except EOFError:  # the file is shorter than it was
                self._eof = True
                return b""
        if kind != SFTP_DATA:
            raise SFTPError(f"expected data from the host, got message type {kind}")
        data = msg.get_string()
        if not data:
            self._eof = True
        elif len(data) < length:  # the server answers less: ask for the rest first
            self._request = max(MIN_REQUEST, len(data))
            rest = (offset + len(data), length - len(data))
            self._pending.appendleft((send_sftp_read(self._remote, self, *rest), *rest))
        return data

    def _fill(self) -> None:
        while len(self._pending) < IN_FLIGHT and self._next < self._size:
            length = min(self._request, self._size - self._next)
            num = send_sftp_read(self._remote, self, self._next, length)
            self._pending.append((num, self._next, length))
            self._next += length

