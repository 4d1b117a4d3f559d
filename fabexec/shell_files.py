"""A host's files through commands of its shell, for hosts that refuse SFTP.

Some sites disable sshd's SFTP subsystem; OpenSSH's ``scp -O`` and Ansible
then copy over an exec channel instead, and so does fabexec. Each operation
is one short command on a channel of its own (``stat``, ``find``, ``mkdir``,
``mv``...), and a file's bytes stream through ``cat`` on stdin or stdout:
byte-exact, since SSH carries them unchanged and nothing here decodes them.
The copy keeps its guarantees: a file is written under its temporary name,
private (umask 077) until whole, checked for its size, given its mode, and
only then renamed by the copier; folders made here are private (0700).

The host needs a POSIX shell with GNU coreutils and findutils (``stat
--printf``, ``find -printf``), as Linux hosts have. Failures come back as
`OSError` with the errno whose message the command printed (commands run
with ``LC_ALL=C``), so the copier reports them like SFTP's; a broken link
raises paramiko's `SSHException` or `EOFError`, never an `OSError` with an
errno.
"""

from __future__ import annotations

import errno
import os
import shlex
import stat
from contextlib import contextmanager
from typing import Any, Iterator, List, NamedTuple, Optional, Tuple

from paramiko import Channel, Transport
from paramiko.ssh_exception import SSHException

#: The receive window of each channel: what may be on its way at once.
WINDOW = 4 << 20
#: Bytes read from a channel per call.
RECEIVE = 1 << 20
#: Seconds an abandoned write waits for its command to end.
END_WAIT = 5.0
#: What the host must have for a copy through its shell.
TOOLS = ("cat", "chmod", "find", "ln", "mkdir", "mv", "readlink", "rm", "stat", "touch")

_TYPES = {"f": stat.S_IFREG, "d": stat.S_IFDIR, "l": stat.S_IFLNK, "p": stat.S_IFIFO,
          "s": stat.S_IFSOCK, "c": stat.S_IFCHR, "b": stat.S_IFBLK}
_ERRNO_OF = {os.strerror(number): number for number in errno.errorcode}


class Attributes(NamedTuple):
    """What the copier needs to know of a path (the names of `os.stat_result`)."""

    st_mode: int
    st_size: int
    st_mtime: float
    st_atime: float


class ShellFiles:
    """A host's files, each operation a command run by the login shell over SSH."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    @classmethod
    def open(cls, transport: Transport) -> ShellFiles:
        """Check that the host runs commands and has the tools; `OSError` if not."""
        files = cls(transport)
        files._run("for tool in " + " ".join(TOOLS) + "; do command -v \"$tool\" >/dev/null "
                   "|| { echo \"$tool: command not found\" >&2; exit 127; }; done")
        return files

    def alive(self) -> bool:
        return self.transport.is_active()

    def close(self) -> None:
        """Nothing to close: every operation's channel closed with it."""

    def path(self, path: str) -> str:
        """Commands start in the home folder; ``~`` and ``~/`` say the same."""
        if path == "~":
            return "."
        return (path[2:] or ".") if path.startswith("~/") else path

    def stat(self, path: str, follow: bool = False) -> Attributes:
        found = self._run(f"stat {'-L ' if follow else ''}--printf '%f %s %.9Y %.9X' -- "
                          f"{_q(path)}")
        mode, size, mtime, atime = found.split()
        return Attributes(int(mode, 16), int(size), float(mtime), float(atime))

    def entries(self, path: str) -> List[Tuple[str, Attributes]]:
        listed = self._run(f"find {_q(_not_an_option(path))} -mindepth 1 -maxdepth 1 "
                           "-printf '%y %m %s %T@ %A@ %f\\0'")
        found = []
        for entry in listed.split(b"\0")[:-1]:
            kind, mode, size, mtime, atime, name = entry.split(b" ", 5)
            found.append((os.fsdecode(name), Attributes(
                _TYPES.get(kind.decode(), 0) | int(mode, 8), int(size), float(mtime),
                float(atime))))
        return sorted(found, key=lambda item: item[0])

    def mkdir(self, path: str) -> None:
        self._run(f"umask 077 && mkdir -- {_q(path)}")

    def chmod(self, path: str, mode: int) -> None:
        self._run(f"chmod {mode:o} -- {_q(path)}")

    def readlink(self, path: str) -> str:
        return os.fsdecode(self._run(f"readlink -- {_q(path)}")[:-1])  # its newline

    def utime(self, path: str, attrs: Any) -> None:
        """``attrs``' times, to the fraction of a second ``touch`` takes."""
        atime, mtime = _seconds(attrs, "st_atime"), _seconds(attrs, "st_mtime")
        self._run(f"touch -c -a -d @{atime} -- {_q(path)} && "
                  f"touch -c -m -d @{mtime} -- {_q(path)}")

    def symlink(self, target: str, path: str) -> None:
        self._run(f"ln -s -T -- {_q(target)} {_q(path)}")

    def rename(self, old: str, new: str) -> None:
        """``mv -T`` renames in place, replacing ``new`` at once, as rename(2) does."""
        self._run(f"mv -f -T -- {_q(old)} {_q(new)}")

    def remove(self, path: str) -> None:
        self._run(f"rm -f -- {_q(path)}")

    def reader(self, path: str, size: int) -> _Output:
        """The file as ``cat`` sends it; a failure shows at its end, as an `OSError`."""
        return _Output(self._start(f"cat -- {_q(path)}"))

    @contextmanager
    def writer(self, path: str, mode: int) -> Iterator[_Input]:
        """``path`` (it must not exist) filled with what is written, private until
        whole, then given ``mode``; its size is checked against what was sent."""
        channel = self._start(f"umask 077 && set -C && cat > {_q(path)} && "
                              f"chmod {mode:o} -- {_q(path)} && stat --printf %s -- {_q(path)}")
        sent = _Input(channel)
        try:
            yield sent
        except BaseException:
            _end_soon(channel)  # so that the caller's removal comes after its creation
            raise
        try:
            channel.shutdown_write()
            written = int(_finish(channel))
            if written != sent.count:
                raise OSError(errno.EIO, f"{written} bytes written of {sent.count}")
        finally:
            channel.close()

    def _start(self, script: str) -> Channel:
        channel = self.transport.open_session(window_size=WINDOW)
        channel.exec_command(shlex.join(["env", "LC_ALL=C", "sh", "-c", script]))
        return channel

    def _run(self, script: str) -> bytes:
        """``script``'s stdout; `OSError` when it fails."""
        channel = self._start(script)
        try:
            channel.shutdown_write()
            return _finish(channel)
        finally:
            channel.close()


class _Output:
    """A command's stdout as a file; at its end, the command's failure as an `OSError`."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    def read(self, size: int = RECEIVE) -> bytes:
        data = self.channel.recv(RECEIVE if size < 0 else size)
        if not data:
            _finish(self.channel)
        return data

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> _Output:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Input:
    """A command's stdin as a file; its failure (the command ended early) as an `OSError`."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.count = 0

    def write(self, data: bytes) -> int:
        try:
            self.channel.sendall(data)
        except (OSError, EOFError, SSHException):
            if self.channel.exit_status_ready():  # it failed: say why, not "socket closed"
                _finish(self.channel)
            raise
        self.count += len(data)
        return len(data)


def _finish(channel: Channel) -> bytes:
    """The rest of ``channel``'s stdout once its command ended; `OSError` if it failed."""
    out = []
    while True:
        data = channel.recv(RECEIVE)
        if not data:
            break
        out.append(data)
    status = channel.recv_exit_status()
    if status == -1:  # closed with no status: the link, not the command
        raise SSHException("the channel closed before its command ended")
    if status != 0:
        raise _error(_stderr(channel), status)
    return b"".join(out)


def _end_soon(channel: Channel) -> None:
    """Close the command's stdin, give it `END_WAIT` seconds to end, close the channel."""
    try:
        channel.shutdown_write()
        channel.status_event.wait(END_WAIT)
    except (OSError, EOFError, SSHException):
        pass  # the link is gone: nothing more to wait for
    finally:
        channel.close()


def _stderr(channel: Channel) -> str:
    said = []
    while channel.recv_stderr_ready():
        said.append(channel.recv_stderr(RECEIVE))
    return b"".join(said).decode(errors="replace").strip()


def _error(said: str, status: int) -> OSError:
    """An `OSError` with the errno whose message ends the command's last line."""
    line = said.splitlines()[-1] if said else f"exit status {status}"
    reason = line.rsplit(": ", 1)[-1]
    number: Optional[int] = _ERRNO_OF.get(reason)
    return OSError(errno.EIO if number is None else number, reason if number else line)


def _seconds(attrs: Any, name: str) -> str:
    """A time of ``attrs`` as ``touch -d @`` reads it, exact where nanoseconds are known."""
    ns = getattr(attrs, f"{name}_ns", None)
    return f"{getattr(attrs, name):.9f}" if ns is None else f"{ns // 10**9}.{ns % 10**9:09d}"


def _q(path: str) -> str:
    return shlex.quote(path)


def _not_an_option(path: str) -> str:
    """``find`` reads a path that starts with ``-`` as an option."""
    return f"./{path}" if path.startswith("-") else path
