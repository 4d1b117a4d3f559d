"""Commands that start a tree of processes, and `pgrep` to see what is left of it.

Each tree is made of ``sleep`` processes with a unique duration, so that
``pgrep -f`` finds exactly this test's processes and nobody else's.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from typing import Callable, List, Sequence, TypeVar

T = TypeVar("T")


def unique_seconds() -> str:
    """A ``sleep`` duration no other process on the machine is using."""
    return f"900.{random.randrange(10**8, 10**9)}"


def escaping_tree(tag: str, marker: str) -> str:
    """A script whose children leave it every usual way; ``marker`` appears once all are started.

    A background child (same group), a ``nohup`` child, a ``setsid`` child (own
    session), a double-forked daemon (parent gone, own session) and a foreground
    ``sleep`` that keeps the command running.
    """
    return "\n".join([
        f"sleep {tag}1 &",
        f"nohup sleep {tag}2 >/dev/null 2>&1 &",
        f"setsid sleep {tag}3 </dev/null >/dev/null 2>&1 &",
        f"( setsid sleep {tag}4 </dev/null >/dev/null 2>&1 & )",
        f"touch {marker}",
        f"sleep {tag}5",
    ])


TREE_SIZE = 5  # sleeps in `escaping_tree`


def sleeping(tag: str) -> List[int]:
    """PIDs of the live ``sleep {tag}...`` processes (``pgrep -f``)."""
    found = subprocess.run(["pgrep", "-f", f"^sleep {tag}"], capture_output=True, text=True,
                           timeout=30, check=False)
    return [int(pid) for pid in found.stdout.split()]


def eventually(condition: Callable[[], bool], seconds: float = 30) -> bool:
    """Whether ``condition`` became true within ``seconds`` (polled, bounded)."""
    deadline = time.monotonic() + seconds
    while True:
        if condition():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


#: The timeouts a test tries in turn (seconds), until its command got to its own "started"
#: mark before the timeout fired: a run ended before its tree was up proves nothing, and
#: on a loaded machine a tree may take seconds to start.
GROWING_TIMEOUTS = (2.0, 8.0, 30.0)


def once_started(run: Callable[[float], T], started: Callable[[T], bool],
                 timeouts: Sequence[float] = GROWING_TIMEOUTS) -> T:
    """``run(timeout)`` for each of ``timeouts`` until ``started(outcome)``; that outcome.

    The order of events is what the test checks (the command was up, then the timeout
    fired), never how long starting took.
    """
    for timeout in timeouts:
        outcome = run(timeout)
        if started(outcome):
            return outcome
    raise AssertionError(f"the command never got to its start mark within {timeout:g} s")


def end_leftovers(tag: str) -> None:
    """SIGKILL what a failed test left of its tree, by PID, so later tests start clean."""
    for pid in sleeping(tag):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
