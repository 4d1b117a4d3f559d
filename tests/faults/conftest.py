"""Fixtures of the fault tests: a private sandbox that a test may freeze or crash.

A test that breaks nodes on purpose gets its own small sandbox, so that the session's
``cluster`` is never left frozen or missing sessions for the tests that follow.
"""

from __future__ import annotations

from typing import Iterator

import pytest

from fabexec import sandbox
from tests.faults.breaking import private_sandbox

NODES = 4


@pytest.fixture
def breakable() -> Iterator[sandbox.SandboxCluster]:
    """A private 4-node sandbox for one test that freezes or crashes nodes."""
    with private_sandbox(NODES) as cluster:
        yield cluster
