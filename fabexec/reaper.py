"""Ending a command and everything it started, here or on a remote host.

A command runs with a unique tag in ``FABEXEC_TAG`` (a ``:``-separated list
when fabexec runs inside a fabexec command), which every process it starts
inherits, including those that leave its process group (``setsid``,
``nohup``, double-forked daemons). Ending it means: SIGTERM to its process
groups and to every tagged process, a short grace, then SIGKILL to what is
left. The groups catch a child that dropped its environment (``env -i``).
Closing an SSH channel alone leaves the remote command running.
"""

from __future__ import annotations

import os
import shlex
import signal
import time
from typing import Callable, Iterable, List, Optional, Tuple

from .command import TAG_VAR

#: How long processes get to exit after SIGTERM before SIGKILL.
GRACE_SECONDS = 1.0

#: How long a launcher (see `kill_local`) gets to end its job after SIGTERM.
LAUNCHER_GRACE_SECONDS = 15.0

#: SIGKILL passes before `kill_local` gives up, and how long each waits.
KILL_ROUNDS = 20
KILL_ROUND_SECONDS = 0.1


def carries(environ: bytes, tag: str) -> bool:
    """Whether a process environment (NUL-separated) holds ``tag`` in its tag list."""
    prefix, wanted = f"{TAG_VAR}=".encode(), tag.encode()
    return any(entry.startswith(prefix) and wanted in entry[len(prefix):].split(b":")
               for entry in environ.split(b"\0"))


def tagged_pids(tag: str) -> List[int]:
    """PIDs of this machine's processes whose environment carries ``tag``."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                environ = f.read()
        except OSError:  # gone already, or not ours to read
            continue
        if carries(environ, tag):
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


def group_members(pgid: Optional[int]) -> List[int]:
    """PIDs of the live members of process group ``pgid``; zombies have ended.

    ``killpg(pgid, 0)`` succeeds while any member is a zombie that its parent
    (or init, for an orphan) has not collected yet, which may be never.
    """
    if pgid is None:
        return []
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # gone already
            continue
        fields = stat[stat.rfind(b")") + 2:].split()  # state, ppid, pgrp, ...
        if len(fields) > 2 and fields[2] == str(pgid).encode() and fields[0] != b"Z":
            found.append(int(entry.name))
    return found


def _state(pid: int) -> Tuple[str, int]:
    """A process's state letter and parent PID; ``("", 0)`` once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return "", 0
    fields = stat[stat.rfind(b")") + 2:].split()  # state, ppid, ...
    return fields[0].decode(), int(fields[1])


def children_of(pid: int) -> List[int]:
    """PIDs of the live children of ``pid``."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            state, parent = _state(int(entry.name))
            if parent == pid and state not in ("", "Z"):
                found.append(int(entry.name))
    return found


def _gone(pids: List[int], seconds: float, reap: Optional[Callable[[], object]]) -> None:
    """Wait until none of ``pids`` is alive (zombies have ended), at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if reap is not None:
            reap()
        if all(_state(pid)[0] in ("", "Z") for pid in pids):
            return
        time.sleep(0.02)


def _ended(pgid: Optional[int], tag: str, seconds: float,
           reap: Optional[Callable[[], object]]) -> bool:
    """Whether the group and the tag are empty within ``seconds`` (polled)."""
    deadline = time.monotonic() + seconds
    while True:
        if reap is not None:
            reap()
        if not group_members(pgid) and not tagged_pids(tag):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def kill_local(pgid: Optional[int], tag: str, grace: float = GRACE_SECONDS,
               reap: Optional[Callable[[], object]] = None,
               launcher: bool = False) -> List[int]:
    """End process group ``pgid`` and every process tagged ``tag``; return when gone.

    ``reap`` collects the group leader if it is our child: until then it is a
    zombie that still counts as a member of the group. SIGKILL is sent again
    while anything is left: a process that ignores SIGTERM may start others
    between our look at /proc and its own end (a supervisor respawning its
    children). What still runs after `KILL_ROUNDS` is returned (PIDs).

    A ``launcher`` (mpiexec) ends its job on other hosts itself, through its own
    children (``ssh``): the group's leader and its children get SIGTERM alone
    first, and up to `LAUNCHER_GRACE_SECONDS` to end. Signalled with the rest,
    Open MPI's launcher lost its ``ssh`` at once and quit in 0.2 s, its remote
    ranks still running; alone, it ended them all before exiting.
    """
    if launcher and pgid is not None:
        heads = [pgid, *children_of(pgid)]
        _signal_all(None, heads, signal.SIGTERM)
        _gone(heads, LAUNCHER_GRACE_SECONDS, reap)
    _signal_all(pgid, tagged_pids(tag), signal.SIGTERM)
    if _ended(pgid, tag, grace, reap):
        return []
    for _ in range(KILL_ROUNDS):
        _signal_all(pgid, tagged_pids(tag), signal.SIGKILL)
        if _ended(pgid, tag, KILL_ROUND_SECONDS, reap):
            return []
    return sorted(set(group_members(pgid)) | set(tagged_pids(tag)))


def remote_kill_script(tag: str, grace: float = GRACE_SECONDS) -> str:
    """The bash script that does what `kill_local` does, on a remote host.

    One ``grep`` over every ``/proc/*/environ`` finds the tagged processes;
    ``pgrep -g`` adds the other members of their process groups, except an
    untagged group leader: the login shell, which reports the exit status.
    Zombies count as ended. It exits 0 once nothing is left, else 1 naming
    what survived SIGKILL. The script's own shell is not tagged, and runs in
    a session of its own, so it never ends itself.
    """
    pattern = shlex.quote(f"^{TAG_VAR}=(.*:)?{tag}(:.*)?$")
    rounds = max(1, int(grace / 0.05))
    return (
        f"tagged() {{ grep -lszaE {pattern} /proc/[0-9]*/environ | cut -d/ -f3; }}\n"
        "field() { n=$2; s=$(cat /proc/$1/stat 2>/dev/null) || return 1; s=${s##*) }; "
        "set -- $s; eval echo \\${$n}; }\n"
        "groups=$(for p in $(tagged); do field $p 3; done | sort -u | paste -sd, -)\n"
        "alive() {\n"
        "  { tagged; [ -n \"$groups\" ] && command -v pgrep >/dev/null && pgrep -g \"$groups\"; }"
        " | sort -u | while read -r p; do\n"
        f"    case ,$groups, in *,$p,*) grep -qszaE {pattern} /proc/$p/environ || continue;; esac\n"
        "    [ \"$(field $p 1)\" = Z ] || [ -z \"$(field $p 1)\" ] || echo $p\n"
        "  done\n"
        "}\n"
        "p=$(alive); [ -z \"$p\" ] && exit 0\n"
        "kill -TERM $p 2>/dev/null\n"
        f"for _ in $(seq {rounds}); do\n"
        "  p=$(alive); [ -z \"$p\" ] && exit 0; sleep 0.05\n"
        "done\n"
        "kill -KILL $p 2>/dev/null\n"
        "for _ in $(seq 40); do p=$(alive); [ -z \"$p\" ] && exit 0; sleep 0.05; done\n"
        "echo \"still running after SIGKILL:\" $p >&2; exit 1\n"
    )
