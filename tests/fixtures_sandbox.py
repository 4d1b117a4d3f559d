"""pytest plugin: one sandbox cluster of real sshd daemons for the whole test session.

Loaded through ``pytest_plugins`` (or ``pytest -p tests.fixtures_sandbox``). The cluster
lives in a fixed folder per xdist worker rather than a pytest tmp folder, so that a run
killed before its teardown leaves nothing that the next run does not stop first.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from fabexec import sandbox

NODES = 4


def sandbox_state_dir() -> Path:
    """``$FABEXEC_TEST_SANDBOX_DIR``, else ``~/.cache/fabexec/sandbox-tests-<worker>``."""
    env = os.environ.get("FABEXEC_TEST_SANDBOX_DIR")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return Path(env) if env else Path.home() / ".cache" / "fabexec" / f"sandbox-tests-{worker}"


@pytest.fixture(scope="session")
def cluster() -> Iterator[sandbox.SandboxCluster]:
    """A fresh 4-node sandbox, stopped at the end of the session whatever happened."""
    if os.geteuid() != 0 and not sandbox.SSHD.exists():
        pytest.skip(f"{sandbox.SSHD} is missing and only root may install it")
    state_dir = sandbox_state_dir()
    sandbox.down(state_dir)  # whatever a killed run left behind
    try:
        yield sandbox.up(NODES, state_dir, timeout=60)
    finally:
        sandbox.down(state_dir)
