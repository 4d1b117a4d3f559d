"""Writing a host's file over SFTP with a bounded window of write requests, each
filling one SSH packet.

paramiko's pipelined ``SFTPFile.write`` sends 32 KiB of data a request: with
the request's header, one SSH packet of OpenSSH's 32 KiB and a second of a few
dozen bytes, each encrypted, framed and sent on its own. It reads the
acknowledgements only once over 100 are outstanding and one has come.

Here each request carries what `PACKETS` packets of the channel hold, at most
`IN_FLIGHT` are outstanding (the oldest acknowledgement is waited for before
another is sent), and `SftpWriter.finish` waits for the rest and raises the
first failure the host reported. The calls are paramiko's own, behind
`seams.send_sftp_write`, `seams.read_sftp_answer` and `seams.raise_sftp_status`.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Deque, Dict, Optional, Tuple

from paramiko import Message, SFTPClient, SFTPError, SFTPFile

from .seams import (
    SFTP_STATUS,
    SftpAnswers,
    channel_packet_room,
    raise_sftp_status,
    read_sftp_answer,
    send_sftp_write,
)

#: SSH packets each write request fills: about 128 KiB of data with OpenSSH's
#: 32 KiB packets, within the 256 KiB message its sftp-server accepts. Client CPU
#: for a ``Put`` of 1 GiB: 3.3-4.0 s with one packet a request, 2.5-2.7 s with 4,
#: 2.3-2.7 s with 8 (paramiko's 32 KiB writes: 3.3-4.5 s).
PACKETS = 4
#: Write requests outstanding at once: 2 MiB with OpenSSH's packets, the channel
#: window OpenSSH gives a session.
IN_FLIGHT = 16
#: The bytes of an SSH_FXP_WRITE besides its data and handle: length, type,
#: request number, the handle's length, offset, the data's length.
HEADER = 4 + 1 + 4 + 4 + 8 + 4


class SftpWriter(SftpAnswers):
    """``remote`` written from its start, in order. Not thread-safe: one copy, one
    thread, one SFTP session."""

    def __init__(self, remote: SFTPFile) -> None:
        self._remote = remote
        self._sftp: SFTPClient = remote.sftp
        room = (PACKETS * channel_packet_room(self._sftp.get_channel()) - HEADER
                - len(remote.handle))
        self._piece = max(room, 4 << 10)  # a server with tiny packets: split, never stall
        self._offset = 0
        self._pending: Deque[int] = deque()
        self._answers: Dict[int, Tuple[int, Message]] = {}
        self._dropping = False

    def write(self, data: bytes) -> int:
        """Send ``data``, waiting for acknowledgements only to keep the window."""
        piece = self._piece
        for start in range(0, len(data), piece):
            if len(self._pending) >= IN_FLIGHT:
                self._settle(self._pending.popleft())
            chunk = data[start:start + piece]
            self._pending.append(send_sftp_write(self._remote, self, self._offset, chunk))
            self._offset += len(chunk)
        return len(data)

    def finish(self) -> None:
        """Wait for every acknowledgement; the first failure raises (`OSError`)."""
        while self._pending:
            self._settle(self._pending.popleft())

    def __enter__(self) -> SftpWriter:
        return self

    def __exit__(self, kind: Optional[type], *exc: Any) -> None:
        if kind is None:
            self.finish()
        else:  # answers still on their way are dropped as they come
            self._dropping = True
            self._pending.clear()
            self._answers.clear()

    def answer(self, kind: int, msg: Message, num: int) -> None:
        if not self._dropping:
            self._answers[num] = (kind, msg)

    def _settle(self, num: int) -> None:
        while num not in self._answers:
            read_sftp_answer(self._sftp)
        kind, msg = self._answers.pop(num)
        if kind != SFTP_STATUS:
            raise SFTPError(f"expected a status from the host, got message type {kind}")
        raise_sftp_status(self._sftp, msg)
