"""Breaking a node on purpose, and stopping it: signals to every process of the node.

A node is found from its listening sshd's PID: the daemon, its descendants and, when the
node has a UTS namespace of its own, every process in it (a double-forked daemon leaves
the tree, not the namespace). Signals go out again while new processes show up, so a
session forked meanwhile is not missed.
"""

from __future__ import annotations

import os
import signal
import time
from collections import defaultdict
from typing import Dict, Iterable, List, Optional, Set

from ..errors import SandboxError

#: Seconds that `stop` waits for killed processes to be gone.
STOP_TIMEOUT = 10.0
#: Times a signal is sent again to processes that appeared meanwhile (a new session).
SIGNAL_ROUNDS = 10


def freeze(daemon: int) -> None:
    """SIGSTOP the node's daemon and every session: it hangs like a host that froze."""
    _signal_nodes([daemon], signal.SIGSTOP)


def thaw(daemon: int) -> None:
    """SIGCONT what `freeze` stopped: pending commands go on where they were."""
    _signal_nodes([daemon], signal.SIGCONT)


def crash(daemon: int) -> None:
    """SIGKILL every session of the node, as a restart would; the daemon keeps listening."""
    # Stopped first, all of them: killed one by one, a shell could see its
    # child die and report an exit status before its own turn came.
    _signal_nodes([daemon], signal.SIGSTOP, spare={daemon})
    _signal_nodes([daemon], signal.SIGKILL, spare={daemon})


def stop(daemons: List[int]) -> None:
    """SIGSTOP the nodes' processes until none forks any more, then SIGKILL them all."""
    stopped = _signal_nodes(daemons, signal.SIGSTOP)
    for pid in stopped:
        _kill(pid, signal.SIGKILL)
    _wait_gone(stopped)


def processes(daemon: int) -> Set[int]:
    """PIDs of the node's processes: its daemon, every session and what they started."""
    return _Processes().of_node(daemon)


def proc_state(pid: int) -> Optional[str]:
    """The process's state letter (R, S, T, ...), None when gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None
    return None if state in "ZXx" else state


class _Processes:
    """A snapshot of this machine's live processes: parent and UTS namespace of each."""

    def __init__(self) -> None:
        self.children: Dict[int, List[int]] = defaultdict(list)
        self.in_uts: Dict[str, Set[int]] = defaultdict(set)
        self.uts: Dict[int, str] = {}
        self.own_uts = os.readlink("/proc/self/ns/uts")
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                uts = os.readlink(f"/proc/{pid}/ns/uts")
            except (OSError, IndexError):  # gone meanwhile, or not ours to read
                continue
            if fields[0] in "ZXx":
                continue
            self.children[int(fields[1])].append(pid)
            self.uts[pid] = uts
            self.in_uts[uts].add(pid)

    def of_node(self, daemon: int) -> Set[int]:
        """The daemon, its descendants and, when the node has its own UTS namespace,
        every process in it (a double-forked daemon leaves the tree, not the namespace)."""
        if daemon not in self.uts:
            return set()
        found, todo = set(), [daemon]
        while todo:
            pid = todo.pop()
            if pid not in found:
                found.add(pid)
                todo.extend(self.children.get(pid, ()))
        if self.uts[daemon] != self.own_uts:
            found |= self.in_uts[self.uts[daemon]]
        return found


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _signal_nodes(daemons: List[int], sig: int, spare: Iterable[int] = ()) -> Set[int]:
    """Send ``sig`` to every process of these nodes but ``spare``; return the PIDs signalled.

    Looks again until no new process shows up (bounded), so that a session forked while
    signals were being sent is not missed.
    """
    skip, sent = set(spare), set()
    for _ in range(SIGNAL_ROUNDS):
        procs = _Processes()
        targets = set().union(*(procs.of_node(pid) for pid in daemons)) - skip - sent
        if not targets:
            break
        for pid in targets:
            _kill(pid, sig)
        sent |= targets
    return sent


def _wait_gone(pids: Set[int]) -> None:
    deadline = time.monotonic() + STOP_TIMEOUT
    left = set(pids)
    for _ in range(int(STOP_TIMEOUT / 0.01)):
        left = {pid for pid in left if proc_state(pid) is not None}
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    if left:
        raise SandboxError(f"processes {sorted(left)} survived SIGKILL for {STOP_TIMEOUT:.0f} s")
