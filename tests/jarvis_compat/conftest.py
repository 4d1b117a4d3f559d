"""Fixtures of the jarvis-util compatibility tests: launchers, sandbox nodes, clean switches."""

from __future__ import annotations

from typing import Iterator

import pytest

from fabexec import MpiError
from fabexec.defaults import DEFAULTS, Defaults
from fabexec.mpi_flavors import Flavor, detect_flavor
from fabexec.sandbox import SandboxCluster

OPENMPI = "/usr/bin/mpiexec.openmpi"  # Debian's openmpi-bin
LAUNCHERS = {"mpich": ("mpiexec", Flavor.MPICH), "openmpi": (OPENMPI, Flavor.OPENMPI)}


def _flavor(path: str) -> object:
    try:
        return detect_flavor(path)
    except MpiError:
        return None


@pytest.fixture(params=sorted(LAUNCHERS))
def launcher(request: pytest.FixtureRequest) -> str:
    path, flavor = LAUNCHERS[request.param]
    if _flavor(path) is not flavor:
        pytest.skip(f"{request.param} is not installed at {path}")
    return path


@pytest.fixture
def mpich() -> str:
    if _flavor("mpiexec") is not Flavor.MPICH:
        pytest.skip("MPICH's mpiexec is not first on PATH (pip install mpich)")
    return "mpiexec"


@pytest.fixture
def nodes(cluster: SandboxCluster) -> SandboxCluster:
    """The sandbox, when its nodes answer ``hostname`` with their own names."""
    if not cluster.own_hostnames:
        pytest.skip("the sandbox nodes share this machine's hostname (no UTS namespaces)")
    return cluster


@pytest.fixture(autouse=True)
def clean_defaults() -> Iterator[None]:
    """JutilManager's switches are process-wide: every test starts and ends with them off."""
    saved = Defaults(**vars(DEFAULTS))
    yield
    for name, value in vars(saved).items():
        setattr(DEFAULTS, name, value)
