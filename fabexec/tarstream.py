"""Files as a tar stream and back, as they were: the one way copies cross a gateway.

A `Put`'s sources go from the client to each gateway this way, and a `Get`'s
files from each gateway to the client (`fabexec.tree`, `fabexec.gateway`). What
is unpacked must be what a direct copy gives: every mode bit (tar's own
``filter="tar"`` drops group and other write bits, and setuid, setgid and sticky
ones), modification and access times (tar keeps only the first: the second
travels in a pax field of its own), symbolic links as they are, and files owned
by whoever unpacks them (a copy's files are the user's who copies, even as
root). Only files, folders and symbolic links are packed or unpacked (a hard
link goes as the file it is, as a copy makes it), and no entry may land outside
the folder, whichever end made the stream.
"""

from __future__ import annotations

import os
import tarfile
from typing import IO, Iterator, List, Tuple

#: Extracting as it is told, since `_checked` has done the checking (Python 3.12 asks
#: for a filter, and 3.14's default one changes modes as ``filter="tar"`` does).
_TRUSTED = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}


class RefusedEntryError(tarfile.TarError):
    """A stream's entry that a copy would not make, or that would land outside its folder."""


def add(tar: tarfile.TarFile, path: str, arcname: str) -> None:
    """``path`` (a folder: with everything in it) into ``tar`` (PAX format) as ``arcname``;
    a link given by name goes as what it names, as a copy takes it (links inside go
    as links)."""
    path = os.path.realpath(path) if os.path.islink(path.rstrip("/") or "/") else path

    def as_it_is(member: tarfile.TarInfo) -> tarfile.TarInfo:
        inside = os.path.relpath(member.name, arcname.strip("/"))
        here = path if inside == "." else os.path.join(path, inside)
        status = os.lstat(here)
        if member.islnk():  # a second name of a file packed already: its bytes again
            member.type, member.linkname, member.size = tarfile.REGTYPE, "", status.st_size
        member.pax_headers = {**member.pax_headers, "atime": repr(status.st_atime)}
        return member

    tar.add(path, arcname=arcname, filter=as_it_is)


def unpack(stream: IO[bytes], folder: str) -> None:
    """A tar stream (`add`'s) read to its end, unpacked into ``folder`` as it comes."""
    root = os.path.realpath(folder)
    times: List[Tuple[str, float, float]] = []
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        def members() -> Iterator[tarfile.TarInfo]:
            for member in tar:
                _checked(member, root)
                member.uid, member.gid, member.uname, member.gname = \
                    os.getuid(), os.getgid(), "", ""
                if "atime" in member.pax_headers and not member.issym():
                    times.append((os.path.join(folder, member.name),
                                  float(member.pax_headers["atime"]), member.mtime))
                yield member
        tar.extractall(folder, members=members(), **_TRUSTED)  # type: ignore[arg-type]
    for path, atime, mtime in reversed(times):  # tar gave each its mtime as atime
        os.utime(path, (atime, mtime), follow_symlinks=False)


def _checked(member: tarfile.TarInfo, root: str) -> None:
    """Refuse what a copy does not make, and any entry whose place is outside ``root``
    (by its name, or through a link unpacked before it)."""
    if not (member.isreg() or member.isdir() or member.issym()):
        raise RefusedEntryError(f"{member.name!r} is not a file, folder or symbolic link")
    name = member.name
    if os.path.isabs(name) or ".." in name.split("/"):
        raise RefusedEntryError(f"{name!r} would land outside the folder")
    place = os.path.realpath(os.path.join(root, name))
    if place != root and not place.startswith(root.rstrip("/") + "/"):
        raise RefusedEntryError(f"{name!r} would land outside the folder, in {place}")

