"""A real ``ssh-agent`` for a test: started in the foreground on a socket of its own,
stopped by its PID, never by name."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List

import pytest


def new_key(path: Path) -> Path:
    """A fresh ed25519 key pair without a passphrase at ``path`` (and ``path.pub``)."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name,
                    "-f", str(path)], check=True, timeout=60)
    return path


@contextmanager
def running_agent(keys: List[Path]) -> Iterator[str]:
    """An agent holding ``keys``; yields its socket path (for ``SSH_AUTH_SOCK``)."""
    if shutil.which("ssh-agent") is None or shutil.which("ssh-add") is None:
        pytest.skip("ssh-agent and ssh-add (openssh-client) are not installed")
    folder = tempfile.mkdtemp(prefix="fabexec-agent-")  # short: a socket path has 108 bytes
    socket_path = os.path.join(folder, "agent.sock")
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", socket_path],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(socket_path) and agent.poll() is None:
            assert time.monotonic() < deadline, "ssh-agent never made its socket"
            time.sleep(0.05)
        env = {**os.environ, "SSH_AUTH_SOCK": socket_path}
        for key in keys:
            subprocess.run(["ssh-add", "-q", str(key)], env=env, check=True, timeout=60,
                           capture_output=True)
        yield socket_path
    finally:
        agent.terminate()
        agent.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)
