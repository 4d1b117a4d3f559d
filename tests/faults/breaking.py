"""Sandboxes of a test's own, and breaking a node at the right moment of a command.

A fixed delay ("freeze 1 s in") would race with a slow connect on a loaded machine;
the break waits for a sign that the command runs instead (its processes, its output).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Callable, Iterator

import pytest

from fabexec import connections, sandbox
from tests.proctree import eventually


class Breaker(threading.Thread):
    """Runs ``action`` once ``condition`` holds (polled, at most ``seconds``)."""

    def __init__(self, condition: Callable[[], bool], action: Callable[[], None],
                 seconds: float = 30) -> None:
        super().__init__(daemon=True, name="fault-breaker")
        self.condition, self.action, self.seconds = condition, action, seconds
        self.acted = False
        self.start()

    def run(self) -> None:
        if eventually(self.condition, self.seconds):
            self.action()
            self.acted = True

    def done(self) -> bool:
        """Whether the break happened (waits for the thread, bounded)."""
        self.join(self.seconds + 5)
        return self.acted


@contextlib.contextmanager
def private_sandbox(nodes: int) -> Iterator[sandbox.SandboxCluster]:
    """``nodes`` sshd daemons of our own; thawed, stopped and forgotten afterwards.

    The state folder is made by `tempfile` (pytest's tmp paths may hold characters an
    ssh_config cannot). Connections to it are closed at the end: the cache would
    otherwise keep dead ones to addresses a later sandbox may reuse.
    """
    if os.geteuid() != 0 and not sandbox.SSHD.exists():
        pytest.skip(f"{sandbox.SSHD} is missing and only root may install it")
    state_dir = Path(tempfile.mkdtemp(prefix="fabexec-faults-"))
    cluster = None
    try:
        cluster = sandbox.up(nodes, state_dir, timeout=120)
        yield cluster
    finally:
        if cluster is not None:
            for host, state in cluster.status().items():
                if state == "frozen":
                    cluster.thaw(host)
        sandbox.down(state_dir)
        connections.close_connections()
        shutil.rmtree(state_dir, ignore_errors=True)
