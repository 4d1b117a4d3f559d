"""Copying files and folders to and from one host or many, over SFTP or, where a
host refuses SFTP, through its shell.

`Put` and `Get` place what they copy the way ``cp -r`` does: inside ``dst`` when
it is a folder (or ends in ``/``, or several sources or a glob are given), else
as ``dst`` itself; missing parent folders are made, private to the user (0700).
Folders are copied recursively with their modes and modification times (as
``rsync -a`` and ``scp -p`` keep them; whole seconds over SFTP), and a symbolic
link inside a folder stays a link. Local sources are expanded as a shell
expands them for ``scp``: ``~``, and globs into their matches (one that matches
nothing is a `TransferError` naming it). `Scp` and `Pscp` keep jarvis-util's
signatures: each local path goes to the same path (or the one paired with it)
on the first host, or on every host.

The results are shaped like `Exec`'s: per host an exit code (0 copied, 1 a copy
failed, 255 the host could not be reached or stopped answering), the error, and
the files written. Every file is written under a temporary name in its
destination folder (``.NAME.fabexec-XXXXXXXX.part``), given its mode, then
renamed, so that an interrupted copy never leaves a file that looks whole; a
host that dies mid-copy may keep its ``.part`` file, since nothing can reach it
to remove it.

A path that cannot be copied (a fifo, a file that cannot be read or written)
does not stop the others: as rsync does, the copy goes on and the host's
error, a `PartialCopyError`, lists every path skipped and why. A source that
is its destination, as the host sees it (a folder copied onto itself on a
filesystem both share, as NFS homes are), is left as it is; a folder whose
destination lies inside it, there too, is skipped with that reason before
anything is made.

Fabric's `Transfer` is not used: it writes straight to the final name, copies
one file at a time, and every caller shares the connection's one SFTP session,
which two threads may not use at once. Each copy here opens an SFTP channel of
its own on the cached connection, with a large window and a receive buffer
that wakes the copy once per message (`fabexec.channel_buffer`), and reads and
writes files with bounded windows of requests in flight (`fabexec.sftp_reader`,
`fabexec.sftp_writer`). A host that refuses the SFTP subsystem is copied to
through commands of its shell (`fabexec.shell_files`), as ``scp -O`` does.
"""

from __future__ import annotations

import glob
import os
import posixpath
import secrets
import stat
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from paramiko import SFTPClient
from paramiko.ssh_exception import SSHException

from . import interrupts
from .channel_buffer import GatheringPipe
from .connections import HostConnection
from .errors import HostError, PartialCopyError, TransferError, TransferFailedError
from .fanout import LINK_ERRORS, FanOut
from .info import ExecInfo, ExecType, LocalExecInfo
from .results import HostResult, HostResults, every_host, run_hosts, split_local
from .seams import open_private_file, replace_channel_buffer
from .sftp_reader import SftpReader
from .sftp_writer import SftpWriter
from .shell_files import ShellFiles

PathArg = Union[str, "os.PathLike[str]"]
Sources = Union[PathArg, Sequence[PathArg]]
Paths = Union[PathArg, Sequence[Union[PathArg, Tuple[PathArg, PathArg]]]]

#: Bytes per read and write call: a large file costs few Python calls.
CHUNK = 1 << 20
#: The SFTP channel's receive window: many packets in flight from a distant host.
WINDOW = 16 << 20
#: Seconds an interrupt waits for the hosts to stop and remove their temporary files.
STOP_WAIT = 10.0
#: Longest part of a file name kept in its temporary name (names end at 255 bytes).
NAME_KEPT = 200
#: Folders the copy makes are private to the user until given a source's mode.
PRIVATE = 0o700


@dataclass(frozen=True)
class Copy:
    """One source and where it goes.

    ``into`` True puts ``src`` inside the folder ``dst``; False makes ``dst`` the
    copy itself; None decides as ``cp`` does, inside when ``dst`` is a folder.
    """

    src: str
    dst: str
    into: Optional[bool] = None


class _Stopped(Exception):
    """`Transfer.kill` was called (Ctrl-C, SIGTERM) while a file was on its way."""


# --------------------------------------------------------------------------- the two ends

class LocalFiles:
    """This machine's files, as either end of a copy."""

    def alive(self) -> bool:
        return True

    def close(self) -> None:
        """Nothing to close."""

    def path(self, path: str) -> str:
        return os.path.expanduser(path)

    def stat(self, path: str, follow: bool = False) -> Any:
        return os.stat(path) if follow else os.lstat(path)

    def entries(self, path: str) -> List[Tuple[str, Any]]:
        with os.scandir(path) as found:
            return sorted(((e.name, e.stat(follow_symlinks=False)) for e in found),
                          key=lambda entry: entry[0])

    def mkdir(self, path: str) -> None:
        os.mkdir(path, PRIVATE)

    def chmod(self, path: str, mode: int) -> None:
        os.chmod(path, mode)

    def readlink(self, path: str) -> str:
        return os.readlink(path)

    def utime(self, path: str, attrs: Any) -> None:
        """``attrs``' access and modification times, to the nanosecond where known."""
        if hasattr(attrs, "st_mtime_ns"):
            os.utime(path, ns=(attrs.st_atime_ns, attrs.st_mtime_ns))
        else:
            os.utime(path, (attrs.st_atime, attrs.st_mtime))

    def symlink(self, target: str, path: str) -> None:
        os.symlink(target, path)

    def rename(self, old: str, new: str) -> None:
        os.replace(old, new)

    def remove(self, path: str) -> None:
        os.unlink(path)

    def reader(self, path: str, size: int) -> IO[bytes]:
        return open(path, "rb")

    @contextmanager
    def writer(self, path: str, mode: int) -> Iterator[IO[bytes]]:
        """``path`` (it must not exist), private until whole, then given ``mode``."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(fd, "wb") as out:
            yield out
            os.fchmod(out.fileno(), mode)


class SftpFiles:
    """A host's files, through an SFTP session that only this copy uses."""

    def __init__(self, sftp: SFTPClient) -> None:
        self.sftp = sftp

    def alive(self) -> bool:
        return not self.sftp.get_channel().closed

    def close(self) -> None:
        try:
            self.sftp.close()
        except LINK_ERRORS:
            pass  # the connection broke mid-copy: the copy's error says so

    def path(self, path: str) -> str:
        """SFTP paths start in the home folder; ``~`` and ``~/`` say the same."""
        if path == "~":
            return "."
        return (path[2:] or ".") if path.startswith("~/") else path

    def stat(self, path: str, follow: bool = False) -> Any:
        return self.sftp.stat(path) if follow else self.sftp.lstat(path)

    def entries(self, path: str) -> List[Tuple[str, Any]]:
        return sorted(((a.filename, a) for a in self.sftp.listdir_attr(path)),
                      key=lambda entry: entry[0])

    def mkdir(self, path: str) -> None:
        self.sftp.mkdir(path, PRIVATE)

    def chmod(self, path: str, mode: int) -> None:
        self.sftp.chmod(path, mode)

    def readlink(self, path: str) -> str:
        return self.sftp.readlink(path) or ""

    def utime(self, path: str, attrs: Any) -> None:
        """``attrs``' times, in whole seconds: all SFTP version 3 carries (as ``scp -p``)."""
        self.sftp.utime(path, (int(attrs.st_atime), int(attrs.st_mtime)))

    def symlink(self, target: str, path: str) -> None:
        self.sftp.symlink(target, path)

    def rename(self, old: str, new: str) -> None:
        """OpenSSH's posix-rename replaces ``new`` at once, as rename(2) does."""
        self.sftp.posix_rename(old, new)

    def remove(self, path: str) -> None:
        self.sftp.remove(path)

    def reader(self, path: str, size: int) -> IO[bytes]:
        """The file, read with a bounded window of requests in flight (`SftpReader`)."""
        return SftpReader(self.sftp.open(path, "rb"), size)  # type: ignore[return-value]

    @contextmanager
    def writer(self, path: str, mode: int) -> Iterator[IO[bytes]]:
        """``path`` (it must not exist), private until whole, then given ``mode``.

        Writes go out with a bounded window of requests in flight (`SftpWriter`);
        the end waits for them all and raises the first write error.
        """
        with open_private_file(self.sftp, path, 0o600) as remote, \
                SftpWriter(remote) as out:
            yield out  # type: ignore[misc]
        self.sftp.chmod(path, mode)


Files = Union[LocalFiles, SftpFiles, ShellFiles]
LOCAL = LocalFiles()


def _pump(reader: IO[bytes], writer: IO[bytes], stop: threading.Event) -> None:
    """Move the bytes in large chunks, checking between chunks whether to stop."""
    while True:
        if stop.is_set():
            raise _Stopped()
        data = reader.read(CHUNK)
        if not data:
            return
        writer.write(data)


def _is_dir(files: Files, path: str) -> bool:
    try:
        return stat.S_ISDIR(files.stat(path, follow=True).st_mode)
    except FileNotFoundError:
        return False


def _mkdir(files: Files, path: str) -> None:
    """Make the folder unless it is there: another host sharing this filesystem
    (an NFS home, the sandbox) may make it at the same moment."""
    try:
        files.mkdir(path)
    except OSError:
        if not _is_dir(files, path):
            raise


def _makedirs(files: Files, path: str) -> None:
    """``mkdir -p``: the folder and its missing parents, each private (0700)."""
    if path in ("", ".", "/") or _is_dir(files, path):
        return
    _makedirs(files, posixpath.dirname(path.rstrip("/")))
    _mkdir(files, path)


def _target(files: Files, src: str, dst: str, into: Optional[bool]) -> Tuple[str, str]:
    """Where ``src`` lands on ``files`` (cp's rule, see `Copy`), and the folder to make
    for it."""
    if into is None:
        into = _is_dir(files, dst)
    if not into:
        return dst, posixpath.dirname(dst)
    name = posixpath.basename(posixpath.normpath(src))
    return (dst if name in ("", ".", "..") else posixpath.join(dst, name)), dst


def _temp_name(target: str) -> str:
    folder, name = posixpath.split(target)
    return posixpath.join(folder, f".{name[:NAME_KEPT]}.fabexec-{secrets.token_hex(4)}.part")


def _discard(files: Files, path: str) -> None:
    """Remove a temporary file if the host still lets us; a dead host keeps it."""
    try:
        files.remove(path)
    except (OSError, EOFError, SSHException):
        pass


def _reason(error: BaseException) -> str:
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


_KINDS = {stat.S_IFIFO: "a fifo", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device"}


# --------------------------------------------------------------------------- one host

class _Copier:
    """Copies one host's list from ``source`` files to ``dest`` files.

    A path that cannot be copied is skipped and remembered, and the copy goes
    on; at the end a `PartialCopyError` names them all. A broken link stops it
    at once.
    """

    def __init__(self, host: str, source: Files, dest: Files, stop: threading.Event,
                 copied: List[str]) -> None:
        self.host, self.source, self.dest = host, source, dest
        self.stop, self.copied = stop, copied
        self.skipped: List[Tuple[str, str]] = []

    def run(self, copies: List[Copy]) -> None:
        for copy in copies:
            src, dst = self.source.path(copy.src), self.dest.path(copy.dst)
            with self._skipping(src, f"cannot copy {src} to {dst}"):
                attrs = self.source.stat(src, follow=True)  # a link given by name: its target
                target, folder = _target(self.dest, src, dst, copy.into)
                if not self._same(src, target, attrs):  # checked before anything is made
                    _makedirs(self.dest, folder)
                    self._tree(src, target, attrs)
        if self.skipped:
            raise PartialCopyError(self.host, self.skipped)

    @contextmanager
    def _skipping(self, path: str, what: str) -> Iterator[None]:
        """A failure within is ``path``'s: remembered, and the copy goes on, unless
        the link broke (the end that failed is gone: nothing more can be done)."""
        try:
            yield
        except OSError as e:
            if not (self.source.alive() and self.dest.alive()):
                raise
            self.skipped.append((path, f"{what}: {_reason(e)}"))

    def _tree(self, src: str, target: str, attrs: Any) -> None:
        mode = attrs.st_mode
        if stat.S_ISDIR(mode):
            entries: List[Tuple[str, Any]] = []
            made = False
            with self._skipping(src, f"cannot copy {src} to {target}"):
                entries = self.source.entries(src)  # listed first: target may lie inside src
                _mkdir(self.dest, target)
                made = True
            if not made:
                return
            for name, child in entries:
                self._tree(posixpath.join(src, name), posixpath.join(target, name), child)
            with self._skipping(src, f"cannot copy {src} to {target}"):
                self.dest.chmod(target, stat.S_IMODE(mode))  # last: it may forbid writing
                self._keep_times(target, attrs)  # after its entries, which change it
        elif stat.S_ISREG(mode) or stat.S_ISLNK(mode):
            with self._skipping(src, f"cannot copy {src} to {target}"):
                self._place(target, lambda tmp: self._fill(src, tmp, attrs, mode))
                if stat.S_ISREG(mode):  # a link's times would be its target's
                    self._keep_times(target, attrs)
        else:
            kind = _KINDS.get(stat.S_IFMT(mode), "of an unknown kind")
            self.skipped.append((src, f"{src} is {kind}, not a regular file, folder or "
                                      "symbolic link"))

    def _fill(self, src: str, tmp: str, attrs: Any, mode: int) -> None:
        if stat.S_ISLNK(mode):
            self.dest.symlink(self.source.readlink(src), tmp)
            return
        with self.source.reader(src, attrs.st_size) as reader, \
                self.dest.writer(tmp, stat.S_IMODE(mode)) as writer:
            _pump(reader, writer, self.stop)

    def _keep_times(self, target: str, attrs: Any) -> None:
        """The source's times on ``target``, as ``rsync -a`` keeps them (where known:
        an SFTP server may leave them out)."""
        if attrs.st_mtime is not None and attrs.st_atime is not None:
            self.dest.utime(target, attrs)

    def _place(self, target: str, fill: Callable[[str], None]) -> None:
        """Fill a temporary name next to ``target``, then rename it: whole or absent."""
        tmp = _temp_name(target)
        try:
            fill(tmp)
            self.dest.rename(tmp, target)
        except BaseException:
            _discard(self.dest, tmp)
            raise
        self.copied.append(target)

    def _same(self, src: str, target: str, attrs: Any) -> bool:
        """Whether ``src`` already is ``target``: nothing to copy."""
        if self.source is self.dest:
            return _same_or_inside(src, target)
        if _same_elsewhere(self.source, self.dest, src, target, attrs):
            return True
        inside = _inside_elsewhere(self.source, self.dest, src, target, attrs)
        if inside is not None:
            raise OSError(f"{target} lies inside {src}, which is {inside} there through a "
                          "shared filesystem: a folder cannot be copied into itself")
        return False


def _same_or_inside(src: str, target: str) -> bool:
    """On one machine: copying onto itself is done already; into itself, endless."""
    real_src, real_target = os.path.realpath(src), os.path.realpath(target)
    if real_target == real_src:
        return True
    if real_target.startswith(real_src.rstrip("/") + "/"):
        raise OSError(f"{target} lies inside {src}: a folder cannot be copied into itself")
    return False


def _same_elsewhere(source: Files, dest: Files, src: str, target: str, attrs: Any) -> bool:
    """Whether the host's ``target`` is our ``src`` itself, through a filesystem both
    see (an NFS home, a bind mount): copying it would write it while it is read.

    Neither SFTP nor a path tells which file is which, so a name is made in the
    destination's folder and looked for in the source's: it shows there only if
    they are one folder. Only when the two look alike (kind, mode, and for a
    file size, modification second and name), so a usual copy costs one stat.
    """
    try:
        there = dest.stat(target, follow=True)
    except FileNotFoundError:
        return False
    folder = stat.S_ISDIR(attrs.st_mode)
    if (stat.S_IFMT(there.st_mode), stat.S_IMODE(there.st_mode)) != \
            (stat.S_IFMT(attrs.st_mode), stat.S_IMODE(attrs.st_mode)):
        return False
    if not folder and ((there.st_size, int(there.st_mtime)) != (attrs.st_size,
                                                                  int(attrs.st_mtime))
                       or posixpath.basename(target) != posixpath.basename(src)):
        return False
    if folder:
        return _one_folder(source, dest, src, target)
    return _one_folder(source, dest, posixpath.dirname(src) or ".",
                       posixpath.dirname(target) or ".")


def _inside_elsewhere(source: Files, dest: Files, src: str, target: str, attrs: Any
                      ) -> Optional[str]:
    """The folder of ``dest`` above ``target`` that is the folder ``src`` itself, through
    a filesystem both see, if one is: copying would go on into what it copies.

    Only folders named as ``src`` is and looking alike (kind and mode) are probed,
    so most copies cost no request.
    """
    if not stat.S_ISDIR(attrs.st_mode):
        return None
    name = posixpath.basename(posixpath.normpath(src))
    above = posixpath.dirname(posixpath.normpath(target))
    while above not in ("", "/", "."):
        if posixpath.basename(above) == name:
            try:
                there = dest.stat(above, follow=True)
            except FileNotFoundError:
                there = None
            if there is not None and there.st_mode == attrs.st_mode \
                    and _one_folder(source, dest, src, above):
                return above
        above = posixpath.dirname(above)
    return None


def _one_folder(source: Files, dest: Files, here: str, away: str) -> bool:
    """Whether ``source``'s folder ``here`` is ``dest``'s folder ``away``: a name made
    in one shows in the other only if they are one folder."""
    probe = f".fabexec-same-{secrets.token_hex(8)}"
    try:
        dest.symlink(probe, posixpath.join(away, probe))
    except OSError:
        return False  # cannot write there: the copy will say why
    try:
        source.stat(posixpath.join(here, probe))
        return True
    except FileNotFoundError:
        return False
    finally:
        _discard(dest, posixpath.join(away, probe))


def _sftp_session(cxn: HostConnection) -> SFTPClient:
    """An SFTP session on a channel of its own, as ``SFTPClient.from_transport``
    opens one, whose received data goes to a `GatheringPipe`."""
    channel = cxn.transport.open_session(window_size=WINDOW)
    try:
        replace_channel_buffer(channel, GatheringPipe())
        channel.invoke_subsystem("sftp")
        return SFTPClient(channel)
    except BaseException:
        channel.close()
        raise


def _remote_files(host: str, cxn: HostConnection) -> Files:
    """A session of the copy's own on ``host``: SFTP, else (the host refuses it)
    commands of its shell; `TransferFailedError` naming both when neither works."""
    try:
        return SftpFiles(_sftp_session(cxn))
    except LINK_ERRORS as e:
        refused = _reason(e)
        if not cxn.is_connected:
            raise TransferFailedError(host, f"no SFTP session: {refused}") from e
    try:
        return ShellFiles.open(cxn.transport)
    except LINK_ERRORS as e:
        raise TransferFailedError(host, f"no SFTP session ({refused}), and no copy through "
                                        f"the shell either ({_reason(e)})") from e


# --------------------------------------------------------------------------- results

class Transfer(HostResults):
    """What a copy did on each host, shaped like `Exec`'s results.

    ``copied[host]``: the destination paths of the files (and links) written;
    ``exit_codes[host]``: 0 copied, 1 failed (`TransferFailedError`; a
    `PartialCopyError` when the other paths were copied), 255 unreachable or
    stopped answering; ``errors[host]``: the `HostError` that stopped that
    host; ``exit_code``: 0 when every host succeeded. A host's
    failure never stops the others. Hosts are chosen as for `Exec` (see
    `fabexec.results`). Copies always complete before the constructor returns
    (``exec_async`` does not apply; ``wait()`` gives ``exit_code``, for code
    written for jarvis-util). ``stdout[host]`` is empty and ``stderr[host]``
    holds a failed host's reason, as an `Exec`'s would.
    """

    def __init__(self, plan: Dict[str, List[Copy]], push: bool, exec_info: ExecInfo) -> None:
        super().__init__(list(plan))
        self.exec_info = exec_info
        self.push = push
        self.copied: Dict[str, List[str]] = {h: [] for h in self.hosts}
        self._plan = plan
        self._stop = threading.Event()
        if exec_info.gateways or exec_info.topology:  # through them, never around them
            from .tree import copy_through
            self._settle(copy_through(self))
        else:
            self._settle(self._run())
        self.stdout: Any = {h: "" for h in self.hosts}
        self.stderr: Any = {h: f"fabexec: {self.errors[h]}\n" if h in self.errors else ""
                            for h in self.hosts}

    def wait(self) -> int:
        """``exit_code``: the copy ended before the constructor returned."""
        return self.exit_code  # type: ignore[return-value]

    @property
    def plan(self) -> Dict[str, List[Copy]]:
        """What goes where, per host."""
        return self._plan

    def kill(self) -> None:
        """Stop copying (another thread, an interrupt): hosts drop their temporary files."""
        self._stop.set()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(hosts={self.hosts}, exit_code={self.exit_code})"

    def _run(self) -> Dict[str, HostResult]:
        """Remote hosts fan out from a thread, so that Ctrl-C or SIGTERM reaches us at
        once; this machine's copies run meanwhile in the caller's thread."""
        here, remote = split_local(self.hosts, self.exec_info)
        self._fanout = FanOut(remote, self.exec_info)
        interrupts.started(self)
        try:
            self._fanout.start(self._copy_over, background=True)
            results = {host: self._result(self._guarded(host, lambda h=host: self._copy(h, LOCAL)))
                       for host in here}
            self._fanout.wait_started()
        except BaseException as e:
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                interrupts.interrupted()
            self.kill()
            self._fanout.wait_started(STOP_WAIT)
            raise
        finally:
            interrupts.ended(self)
        return {**self._fanout.results(), **results}

    def _copy_over(self, host: str, cxn: HostConnection) -> HostResult:
        """Open a session of this copy's own on the connected host, copy."""
        try:
            remote = _remote_files(host, cxn)
        except TransferFailedError as error:
            if cxn.is_connected:
                return HostResult.of(error)
            return self._fanout.lost(host, "connection lost during the copy", error)
        try:
            error = self._guarded(host, lambda: self._copy(host, remote))
            # Its session closed under it, or the link failed rather than a file
            # (the transport may not say so yet): the connection broke.
            if error is not None and (not remote.alive() or error.link_failed):
                return self._fanout.lost(host, "connection lost during the copy", error)
            return self._result(error)
        finally:
            remote.close()

    def _copy(self, host: str, remote: Files) -> None:
        source, dest = (LOCAL, remote) if self.push else (remote, LOCAL)
        _Copier(host, source, dest, self._stop, self.copied[host]).run(self._plan[host])

    @staticmethod
    def _result(error: Optional[HostError]) -> HostResult:
        return HostResult(0) if error is None else HostResult.of(error)

    @staticmethod
    def _guarded(host: str, copy: Callable[[], None]) -> Optional[TransferFailedError]:
        """Run ``copy``; the error that stopped it, if one did."""
        try:
            copy()
            return None
        except TransferFailedError as e:
            return e
        except _Stopped:
            return TransferFailedError(host, "stopped before the copy completed")
        except LINK_ERRORS as e:
            error = TransferFailedError(host, _reason(e))
            # A file error from the host carries an errno; a broken link does not.
            error.link_failed = not (isinstance(e, OSError) and e.errno is not None)
            return error


class Put(Transfer):
    """Copy local files and folders to the hosts of ``exec_info``.

    ``src``: a path or a list of paths; a missing one raises `TransferError`
    before any host is contacted. ``dst``: where they go on each host (see the
    module's placement rule; relative paths start in the home folder; a
    `pathlib.Path` loses a final ``/``, so say "inside" with a string).
    `LocalExecInfo` (the default) copies on this machine, `SshExecInfo` to the
    first host, any other kind to every host, ``max_parallel`` at once.
    """

    def __init__(self, src: Sources, dst: PathArg, exec_info: Optional[ExecInfo] = None) -> None:
        info = _checked_info(exec_info)
        target = _path(dst, "dst")
        expanded = [_expand(source) for source in _sources(src)]
        sources = [match for matches, _ in expanded for match in matches]
        for source in sources:
            _check_local(source)
        into = True if any(globbed for _, globbed in expanded) else _into(sources, target)
        copies = [Copy(source, target, into) for source in sources]
        super().__init__({host: copies for host in run_hosts(info)}, True, info)


class Get(Transfer):
    """Copy files and folders from the hosts of ``exec_info`` to this machine.

    From one host (`SshExecInfo`, `LocalExecInfo`) they land in ``dst`` as
    `Put` places them; from many (any other kind) each host's land in a folder
    of its own, ``dst/HOST/``, so that equal names never overwrite each other.
    """

    def __init__(self, src: Sources, dst: PathArg, exec_info: Optional[ExecInfo] = None) -> None:
        info = _checked_info(exec_info)
        sources, target = _sources(src), _path(dst, "dst")
        hosts = run_hosts(info)
        if info.exec_type in (ExecType.LOCAL, ExecType.SSH):
            into = _into(sources, target)
            plan = {host: [Copy(source, target, into) for source in sources] for host in hosts}
        else:
            plan = {host: [Copy(source, posixpath.join(target, _folder_of(host)), True)
                           for source in sources] for host in hosts}
        super().__init__(plan, False, info)


class Scp(Transfer):
    """jarvis-util's Scp: copy local paths to the same paths on the first host.

    ``paths``: a path, a list of paths, or a list of ``(src, dst)`` pairs; a
    folder becomes ``dst`` itself (its contents replace what is there file by
    file, nothing is deleted). A source is expanded here as a shell would
    (``~``, globs): each match of a glob goes to its own path on the host, or,
    paired with a ``dst``, inside that folder. ``stdout`` and ``stderr`` are
    strings, as jarvis-util's are (`Pscp`'s are keyed by host).
    """

    _per_host = False

    def __init__(self, paths: Paths, exec_info: ExecInfo) -> None:
        info = _checked_info(exec_info)
        copies = []
        for src, dst in _pairs(paths):
            matches, globbed = _expand(src)
            if not globbed:
                copies.append(Copy(src, dst, False))
            elif src == dst:  # each match to its own path there
                copies += [Copy(match, _as_given(match, src), False) for match in matches]
            else:
                copies += [Copy(match, dst, True) for match in matches]
        for copy in copies:
            _check_local(copy.src)
        self.paths = paths
        super().__init__({host: copies for host in self._targets(info)}, True, info)
        if not self._per_host:
            self.stdout, self.stderr = self.stdout[self.hosts[0]], self.stderr[self.hosts[0]]

    @staticmethod
    def _targets(info: ExecInfo) -> List[str]:
        return every_host(info)[:1]


class Pscp(Scp):
    """jarvis-util's Pscp: `Scp` to every host of ``exec_info``, ``max_parallel`` at once."""

    _per_host = True

    @staticmethod
    def _targets(info: ExecInfo) -> List[str]:
        return every_host(info)


# --------------------------------------------------------------------------- arguments

def _checked_info(exec_info: Optional[ExecInfo]) -> ExecInfo:
    info = exec_info if exec_info is not None else LocalExecInfo()
    if not isinstance(info, ExecInfo):
        raise TypeError(f"exec_info must be an ExecInfo, not {info!r}")
    if info.sudo:
        raise TransferError("sudo=True cannot apply to a copy: SFTP writes as the login "
                            "user. Copy to a folder that user can write, then move the "
                            "files with Exec(..., sudo=True)")
    return info


def _path(value: Any, what: str) -> str:
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise TransferError(f"{what} must be a non-empty path, not {value!r}")
    return os.fspath(value)


def _sources(src: Sources) -> List[str]:
    items = [src] if isinstance(src, (str, os.PathLike)) else src
    if not isinstance(items, (list, tuple)) or not items:
        raise TransferError(f"src must be a path or a non-empty list of paths, not {src!r}")
    return [_path(item, "src") for item in items]


def _pairs(paths: Paths) -> List[Tuple[str, str]]:
    """jarvis-util's three forms: a path, a list of paths, a list of (src, dst) pairs."""
    items = [paths] if isinstance(paths, (str, os.PathLike)) else paths
    if not isinstance(items, (list, tuple)) or not items:
        raise TransferError(f"paths must be a path or a non-empty list of paths or (src, dst) "
                            f"pairs, not {paths!r}")
    pairs = []
    for item in items:
        src, dst = item if isinstance(item, (tuple, list)) and len(item) == 2 else (item, item)
        pairs.append((_path(src, "paths"), _path(dst, "paths")))
    return pairs


def _expand(pattern: str) -> Tuple[List[str], bool]:
    """A local source as a shell gives it to ``scp`` or ``rsync``, and whether a glob
    gave it: ``~`` expanded, a glob (``*``, ``?``, ``[...]``) replaced by its
    matches, sorted. A glob that matches nothing is passed on as it is where a
    file has that very name (as bash does), else it is a `TransferError`."""
    path = os.path.expanduser(pattern)
    if glob.escape(path) == path:
        return [path], False
    found = sorted(glob.glob(path))
    if found:
        return found, True
    if os.path.lexists(path):
        return [path], False
    raise TransferError(f"local source {pattern!r} matches no file")


def _as_given(match: str, pattern: str) -> str:
    """``match``'s path on the host, for `Scp`'s one-path form: ``~/`` there where the
    pattern said ``~/`` here (the host's home), else the same path."""
    home = os.path.expanduser("~")
    if pattern.startswith("~/") and match.startswith(home.rstrip("/") + "/"):
        return "~/" + match[len(home.rstrip("/")) + 1:]
    return match


def _into(sources: List[str], dst: str) -> Optional[bool]:
    """Several sources, or a ``dst`` ending in ``/``, always go inside ``dst``."""
    return True if len(sources) > 1 or dst.endswith("/") else None


def _folder_of(host: str) -> str:
    """``host``'s folder in a `Get` from many hosts: its name, which must be one
    folder's name, or its files would land outside ``dst`` (``..``) or elsewhere in it."""
    if host in ("", ".", "..") or "/" in host or "\0" in host:
        raise TransferError(f"hosts: {host!r} cannot name a folder of dst, where Get from "
                            "several hosts puts each host's files; reach that host by "
                            "another name (an ssh_config alias)")
    return host


def _check_local(path: str) -> None:
    """A missing local source fails at once, before any host is contacted."""
    try:
        os.stat(os.path.expanduser(path))
    except FileNotFoundError:
        raise TransferError(f"local source {path!r} does not exist") from None
    except OSError as e:
        raise TransferError(f"local source {path!r} cannot be read: {_reason(e)}") from None
