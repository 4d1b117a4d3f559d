"""Test plugins (the sandbox sshd cluster, the docker-compose cluster) and shared fixtures."""

from typing import Iterator

import pytest

from tests.proctree import end_leftovers, unique_seconds

pytest_plugins = [
    "tests.fixtures_sandbox",
    "tests.fixtures_docker",
    "tests.fixtures_clusters",
    "tests.fixtures_slurm",
]


@pytest.fixture
def tag() -> Iterator[str]:
    """This test's unique ``sleep`` duration; what it left running here is killed after."""
    seconds = unique_seconds()
    yield seconds
    end_leftovers(seconds)
