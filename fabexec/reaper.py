"""Ending a command and everything it started, here or on a remote host.

A command runs with a unique ``FABEXEC_TAG`` in its environment, which every
process it starts inherits, including those that leave its process group
(``setsid``, ``nohup``, double-forked daemons). Ending it means: SIGTERM to the
process group and to every tagged process, a short grace, then SIGKILL to what
is left. Closing an SSH channel alone leaves the remote command running.
"""

from __future__ import annotations

import os
import shlex
import signal
import time
from typing import Callable, Iterable, List, Optional

from .command import TAG_VAR

#: How long processes get to exit after SIGTERM before SIGKILL.
GRACE_SECONDS = 1.0


def tagged_pids(tag: str) -> List[int]:
    """PIDs of this machine's processes whose environment carries ``tag``."""
    needle = f"{TAG_VAR}={tag}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                environ = f.read()
        except OSError:  # gone already, or not ours to read
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def _signal_all(pgid: Optional[int], pids: Iterable[int], sig: int) -> None:
    if pgid is not None:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _group_alive(pgid: Optional[int]) -> bool:
    if pgid is None:
        return False
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def kill_local(pgid: Optional[int], tag: str, grace: float = GRACE_SECONDS,
               reap: Optional[Callable[[], object]] = None) -> None:
    """End process group ``pgid`` and every process tagged ``tag``; return when gone.

    ``reap`` collects the group leader if it is our child: until then it is a
    zombie that still counts as a member of the group.
    """
    _signal_all(pgid, tagged_pids(tag), signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if reap is not None:
            reap()
        if not _group_alive(pgid) and not tagged_pids(tag):
            return
        time.sleep(0.02)
    _signal_all(pgid, tagged_pids(tag), signal.SIGKILL)


def remote_kill_script(tag: str, grace: float = GRACE_SECONDS) -> str:
    """The bash script that does what `kill_local` does, on a remote host.

    One ``grep`` over every ``/proc/*/environ`` finds the tagged processes; the
    script's own shell is not tagged, so it never kills itself.
    """
    needle = shlex.quote(f"^{TAG_VAR}={tag}$")
    rounds = max(1, int(grace / 0.05))
    return (
        f"pids() {{ grep -lsza {needle} /proc/[0-9]*/environ | cut -d/ -f3; }}\n"
        "p=$(pids); [ -z \"$p\" ] && exit 0\n"
        "kill -TERM $p 2>/dev/null\n"
        f"for _ in $(seq {rounds}); do\n"
        "  p=$(pids); [ -z \"$p\" ] && exit 0; sleep 0.05\n"
        "done\n"
        "kill -KILL $p 2>/dev/null; exit 0\n"
    )
