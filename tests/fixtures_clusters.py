"""pytest plugin: ``any_cluster``, one test run on the sandbox and on the docker cluster.

The core SSH behaviours must hold on both: the sandbox (real sshd daemons on this
machine, the fast default) and the docker-compose cluster (real hosts as far as SSH
can tell; skipped, with the reason, where no engine runs). Load it with
``pytest_plugins = ["tests.fixtures_clusters"]``.
"""

from __future__ import annotations

import pytest

from fabexec.sandbox import Cluster


@pytest.fixture(scope="session", params=[
    "sandbox",
    pytest.param("docker", marks=pytest.mark.docker),
])
def any_cluster(request: pytest.FixtureRequest) -> Cluster:
    """The sandbox, then the docker cluster: the core SSH behaviours must hold on both."""
    return request.getfixturevalue("cluster" if request.param == "sandbox" else "docker_cluster")
