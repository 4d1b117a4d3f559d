"""Every place fabexec relies on a private name of paramiko, invoke or Fabric.

These libraries make no promise about names with a leading underscore or
about their internal modules, so a release may rename any of them. They are
all here, behind small named helpers, so that the behaviour modules read as
plain uses of the libraries. ``tests/test_seams.py`` checks each one (it
exists, with the signature we call it with, and the library still calls it
where we rely on that) on the installed versions and, in ``inv test``, on
the oldest that ``setup.cfg`` allows. An upgrade that breaks a seam fails that
test instead of quietly losing what the seam buys. One override cannot leave
its module and is listed with it; the test fails on any other private
name used outside this module.

Each seam: the private name, the versions it is known on (checked by the
test), why it exists, and what it buys (figures from README's "Measured",
bench/ and the closing notes).

``paramiko.Transport._active_check_timeout``
    Known on paramiko 3.5.0 to 5.1.0. Home: `set_idle_wakeup`.
    How often paramiko's transport thread wakes to see whether the
    transport was closed: 0.1 s. fabexec sets 10 s, since ``HostTransport.close``
    wakes the thread at once. Buys: 256 idle cached connections cost 26 ms
    of CPU a second at 1 s, against 116 ms with paramiko's 0.1 s (0.22x,
    ``inv bench -n faults``, section 3); 64 idle ones 8 ms against 35; a
    wake costs about 0.1 ms, 0.14 ms a target through 32 gateways in a 45 s run
    at 1 s.

``paramiko.Transport._send_user_message``
``paramiko.common.cMSG_GLOBAL_REQUEST``
    Known on paramiko 3.5.0 to 5.1.0. Home: `send_global_request`.
    A keepalive must want a reply, or a frozen host (its kernel still
    acknowledging TCP) looks alive forever; paramiko's public
    ``global_request`` either asks for no reply or waits for it with no
    timeout, using the event the key exchange also uses.

``paramiko.Transport._parse_request_success``
``paramiko.Transport._parse_request_failure``
    Known on paramiko 3.5.0 to 5.1.0. Home: `GlobalReplies`.
    The handlers paramiko's thread calls for the reply to a global request;
    the only place a reply can be seen without waiting for it. With the row
    above, buys: a host frozen mid-command (4 hosts) ends with 255 after
    8.2-8.3 s with the others' output kept, 0.87-1.08x OpenSSH's
    ``ServerAliveInterval=2``; Fabric's ``ThreadingGroup`` and parallel-ssh
    never return (``inv bench -n faults``).

``paramiko.SSHConfig._config``
``paramiko.SSHConfig._lookup``
    Known on paramiko 3.5.0 to 5.1.0. Home: `NarrowedSSHConfig`.
    paramiko matches every ``Host`` block against the host, twice per
    look-up; with one block per node a fan-out to N nodes costs N x N
    pattern matches (0.27 ms a host at 64 blocks, over 1 ms at 256). Each
    pass (first, canonical, final) is made to walk only the blocks that can
    match the name it is given.

``paramiko.SSHConfig._does_match``
    Known on paramiko 3.5.0 to 5.1.0. Home: `NarrowedSSHConfig`.
    paramiko asks the OS for the user name (``getpass.getuser()``) at every
    block, ``Match`` or not; the ask is skipped for blocks without ``Match``.
    Without ``$USER`` (getuser then reads the password database), a look-up
    in 256 blocks took 5.5 ms with paramiko's, 0.4-0.75 ms with this alone.

``paramiko.SFTPClient._async_request``
``paramiko.SFTPClient._read_response``
``paramiko.SFTPClient._convert_status``
``paramiko.SFTPFile._async_response``
``paramiko.sftp.CMD_READ``
``paramiko.sftp.CMD_DATA``
``paramiko.sftp.CMD_STATUS``
``paramiko.sftp.int64``
    Known on paramiko 3.5.0 to 5.1.0. Home: `SftpAnswers`, `send_sftp_read`,
    `read_sftp_answer`, `raise_sftp_status` (the bounded reads of `Get`).
    paramiko has no public read that does not wait for its answer. Its own
    ``SFTPFile`` sends one with ``_async_request`` (which registers who gets
    the answer), reads answers with ``_read_response`` (which hands each to
    the ``_async_response`` of whoever asked) and turns a status into an
    exception with ``_convert_status``; the message kinds and the 64-bit
    offset type live in ``paramiko.sftp``, which paramiko does not export.
    Buys: a ``Get`` of 1 GiB reads with a bounded window of requests in
    flight, 9.38 s at a peak RSS of 51-56 MB in every run (``scp`` 7.63 s,
    1.23x); paramiko's read-ahead took 21-83 s at 67-1,100 MB
    (``inv bench -n transfer``, README's "Measured").

``paramiko.sftp.CMD_WRITE``
``paramiko.Channel.out_max_packet_size``
    Known on paramiko 3.5.0 to 5.1.0. Home: `send_sftp_write`,
    `channel_packet_room` (the bounded writes of `Put`, `fabexec.sftp_writer`).
    paramiko's pipelined ``SFTPFile.write`` sends 32 KiB of data a request,
    which with the request's header is one byte more than OpenSSH's 32 KiB
    packets carry: two SSH packets a request, the second a few dozen bytes;
    and it waits for acknowledgements only once over 100 are outstanding and
    one has come. Here write requests are made to fill whole packets of the
    channel (its peer's maximum, less the 64 bytes paramiko keeps for the
    channel message), `fabexec.sftp_writer.IN_FLIGHT` at most outstanding,
    sent with ``_async_request`` as paramiko's own writes are. Buys: with the
    channel buffer below, client CPU of a 1 GiB ``Put`` 3.54-3.90 s down to
    2.37-3.14 s (interleaved runs); 1 GiB in 0.98x ``scp``'s time at load 29
    to 229 (README's "Measured").

``paramiko.SFTPClient._request``
``paramiko.sftp.CMD_OPEN``
``paramiko.sftp.CMD_HANDLE``
``paramiko.sftp.SFTP_FLAG_WRITE``
``paramiko.sftp.SFTP_FLAG_CREATE``
``paramiko.sftp.SFTP_FLAG_EXCL``
    Known on paramiko 3.5.0 to 5.1.0. Home: `open_private_file`.
    ``SFTPClient.open`` sends no attributes, so the server creates the file
    0666 less its umask (0644 on OpenSSH's defaults): a temporary file was
    readable by every user while it was written, and whoever opened it then
    could read all that followed. The open is sent here with the permissions
    0600, as SFTP allows (OpenSSH's sftp-server creates the file with them),
    through the request call paramiko's ``open`` makes. Buys: a file on its
    way is private to the user, as the copy through the shell's is.

``paramiko.Channel.in_buffer``
``paramiko.Channel.in_stderr_buffer``
    Known on paramiko 3.5.0 to 5.1.0. Home: `replace_channel_buffer`.
    The channel's receive buffer, a `BufferedPipe`, which the transport's
    thread feeds (``Channel._feed``) and ``Channel.recv`` reads; an attribute
    paramiko does not document. A copy's SFTP channel gets a
    `fabexec.channel_buffer.GatheringPipe` before it carries any data: packets
    kept as they came, the reader woken once its whole message is there.
    Buys: client CPU of a 1 GiB ``Get`` 3.56-4.80 s down to 2.25-2.83 s
    (interleaved runs), 0.91x ``scp``'s (README's "Measured"). A gateway's
    channel (`fabexec.tree`) gets a `fabexec.channel_buffer.BatchingPipe`, and
    for its stderr (``Channel.in_stderr_buffer``, fed by ``_feed_extended``) a
    `BufferedPipe` that wakes it. Buys: one wake of the reading thread a
    gateway run, not one a packet, when nobody looks before the end
    (README's tree figures).

``invoke.config.DataProxy._root``
``invoke.config.DataProxy._keypath``
``invoke.config.DataProxy._modify``
    Known on invoke 2.2.0 to 2.2.1. Home: `QuickMisses`.
    invoke probes these on every Connection and Config with ``hasattr``; a
    miss formats an error listing every attribute and key (20 us, some 20
    times a connection). Buys, with ``HostConnection.__setattr__`` (which
    repeats DataProxy's own attribute test without ``dir()``; no private
    name) and its declared attributes: building a connection went from
    1.25 to 0.23 ms a host.

``invoke.runners.Runner._write_proc_stdin``
    Known on invoke 2.2.0 to 2.2.1. Home: runners.py, where both runners override it.
    invoke's documented hook for subclasses ("for subclasses to implement"),
    which its public ``write_proc_stdin`` calls: where a watcher's answer or
    the caller's stdin reaches the command. Ours write in chunks and give up
    once the command closed its stdin (paramiko's ``sendall`` spins forever
    after our EOF).

Not seams any more, since a public name does the same: the cipher order
(``Transport.get_security_options().ciphers``, paramiko 3.5 and later all
have AES-GCM), whether a run is asynchronous (invoke's ``Runner.opts``), and
the command's timer (a ``TeeRunner`` attribute of our own).
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List

from paramiko import (
    Channel,
    Message,
    SFTPAttributes,
    SFTPClient,
    SFTPError,
    SFTPFile,
    SSHConfig,
    Transport,
)
from paramiko.common import cMSG_GLOBAL_REQUEST
from paramiko.sftp import (
    CMD_DATA,
    CMD_HANDLE,
    CMD_OPEN,
    CMD_READ,
    CMD_STATUS,
    CMD_WRITE,
    SFTP_FLAG_CREATE,
    SFTP_FLAG_EXCL,
    SFTP_FLAG_WRITE,
    int64,
)

# --------------------------------------------------------------------------- paramiko


def set_idle_wakeup(transport_class: type, seconds: float) -> None:
    """Transports of ``transport_class`` made from now on wake every ``seconds``
    (when idle) to see whether they were closed."""
    transport_class._active_check_timeout = seconds  # type: ignore[attr-defined]


def idle_wakeup(transport_class: type) -> float:
    """How often idle transports of ``transport_class`` wake (paramiko's own: 0.1 s)."""
    return transport_class._active_check_timeout  # type: ignore[attr-defined]


def send_global_request(transport: Transport, kind: str, want_reply: bool) -> None:
    """Send a global request and return without waiting for its reply.

    Blocks only while a key exchange is under way, or once the socket's buffer
    is full (towards a frozen host): call it from a thread that may block.
    """
    m = Message()
    m.add_byte(cMSG_GLOBAL_REQUEST)
    m.add_string(kind)
    m.add_boolean(want_reply)
    transport._send_user_message(m)


class GlobalReplies(Transport):
    """paramiko's `Transport`, calling `global_reply` at each reply to a global request."""

    def global_reply(self) -> None:
        """A reply (success or failure) came; called in the transport's thread."""

    def _parse_request_success(self, m: Message) -> None:
        self.global_reply()
        super()._parse_request_success(m)  # type: ignore[misc]

    def _parse_request_failure(self, m: Message) -> None:
        self.global_reply()
        super()._parse_request_failure(m)  # type: ignore[misc]


class NarrowedSSHConfig(SSHConfig):
    """paramiko's `SSHConfig`, whose look-ups try only the blocks `candidates` picks."""

    def blocks(self) -> List[Dict[str, Any]]:
        """The parsed ``Host`` and ``Match`` blocks, in file order."""
        return self._config

    def candidates(self, hostname: str) -> List[Dict[str, Any]]:
        """The blocks that may apply to ``hostname``, in file order (here: all)."""
        return self._config

    def _lookup(self, hostname: str, options: Any = None, canonical: bool = False,
                final: bool = False) -> Any:
        # Each pass of paramiko's ``lookup`` walks ``self._config``: let it walk
        # a copy holding the blocks that may apply to the name of that pass.
        narrowed = copy.copy(self)
        narrowed._config = self.candidates(hostname)
        return super(NarrowedSSHConfig, narrowed)._lookup(hostname, options, canonical, final)

    def _does_match(self, match_list: List[Any], *args: Any) -> Any:
        # paramiko calls ``getpass.getuser()`` here even for a block without ``Match``.
        return bool(match_list) and super()._does_match(match_list, *args)


class SftpAnswers:
    """What paramiko's `SFTPClient` hands the answer to a request sent with
    `send_sftp_read`: each answer goes to `answer`, in the thread that called
    `read_sftp_answer`."""

    def answer(self, kind: int, msg: Message, num: int) -> None:
        """The answer to request ``num``: its message kind and the message."""

    def _async_response(self, t: int, msg: Message, num: int) -> None:
        self.answer(t, msg, num)


#: The kinds of SFTP answer to a read: data, or a status (the end of the file, a failure).
SFTP_DATA: int = CMD_DATA
SFTP_STATUS: int = CMD_STATUS


def send_sftp_read(remote: SFTPFile, to: SftpAnswers, offset: int, length: int) -> int:
    """Ask for ``length`` bytes of ``remote`` at ``offset`` without waiting; the
    answer goes to ``to``. Returns the request's number."""
    return remote.sftp._async_request(to, CMD_READ, remote.handle, int64(offset), int(length))


def read_sftp_answer(sftp: SFTPClient) -> None:
    """Wait for the session's next answer and hand it to whoever asked."""
    sftp._read_response()


def raise_sftp_status(sftp: SFTPClient, msg: Message) -> None:
    """A status answer as paramiko raises it: EOFError at the end, OSError (with
    errno where SFTP says which) for a failure, nothing for success."""
    sftp._convert_status(msg)


def send_sftp_write(remote: SFTPFile, to: SftpAnswers, offset: int, data: bytes) -> int:
    """Ask to write ``data`` into ``remote`` at ``offset`` without waiting; the answer
    (a status) goes to ``to``. Returns the request's number."""
    return remote.sftp._async_request(to, CMD_WRITE, remote.handle, int64(offset), data)


def channel_packet_room(channel: Channel) -> int:
    """The most data paramiko sends in one SSH packet of ``channel``."""
    return channel.out_max_packet_size - 64


def open_private_file(sftp: SFTPClient, path: str, permissions: int) -> SFTPFile:
    """``path``, which must not exist, made with ``permissions`` and opened for writing."""
    attrs = SFTPAttributes()
    attrs.st_mode = permissions
    kind, msg = sftp._request(CMD_OPEN, path, SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_EXCL,
                              attrs)
    if kind != CMD_HANDLE:
        raise SFTPError(f"expected a handle from the host, got message type {kind}")
    return SFTPFile(sftp, msg.get_binary(), "wb")


def replace_channel_buffer(channel: Channel, pipe: Any, stderr: Any = None) -> None:
    """``channel``'s received data goes to ``pipe`` from now on (something with
    `BufferedPipe`'s methods), its stderr to ``stderr`` if given; call it before the
    channel carries data."""
    channel.in_buffer = pipe
    if stderr is not None:
        channel.in_stderr_buffer = stderr


# --------------------------------------------------------------------------- invoke


class QuickMisses:
    """Misses of invoke's private names, answered at once.

    invoke's `DataProxy` probes its own private attributes with ``hasattr`` and
    ``getattr(..., default)``; a miss falls through to its ``__getattr__``, which
    formats an error listing every attribute and key (20 us, some 20 times a
    connection). These names are never config keys.
    """

    PRIVATE = frozenset({"_root", "_keypath", "_modify"})

    def __getattr__(self, key: str) -> Any:
        if key in QuickMisses.PRIVATE:
            raise AttributeError(key)
        return super().__getattr__(key)  # type: ignore[misc]
