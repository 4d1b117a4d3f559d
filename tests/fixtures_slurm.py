"""pytest plugin: one real Slurm cluster (fabexec.sandbox.slurm) for the whole session.

Slurm's daemons and every client command live in a network namespace; a test
reaches them through `slurm` (which sets ``SLURM_CONF`` and the test-only
``FABEXEC_SLURM_LAUNCHER``) and, for a job step, through `allocation` (a real
``salloc --no-shell`` job whose id and nodes are put in the environment, as
inside ``salloc``).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import Iterator

import pytest

from fabexec.sandbox import slurm as slurm_sandbox
from tests.fixtures_sandbox import sandbox_state_dir

NODES = 4


def slurm_state_dir() -> Path:
    """Next to the sshd sandbox's folder: ``<sandbox dir>-slurm``."""
    base = sandbox_state_dir()
    return base.with_name(base.name + "-slurm")


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[slurm_sandbox.SlurmCluster]:
    """A fresh 4-node Slurm cluster, stopped at the end of the session whatever happened."""
    if os.geteuid() != 0:
        pytest.skip("the Slurm sandbox needs root")
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        pytest.skip("unshare/nsenter (util-linux) missing")
    state = slurm_state_dir()
    try:
        yield slurm_sandbox.up(NODES, state, timeout=60)
    finally:
        slurm_sandbox.down(state)


@pytest.fixture
def slurm(slurm_cluster, monkeypatch) -> Iterator[slurm_sandbox.SlurmCluster]:
    """The session's Slurm cluster, its variables set; fails the test if a job is left."""
    for name in list(os.environ):
        if name.startswith(("SLURM_", "PBS_")):
            monkeypatch.delenv(name)
    for name, value in slurm_cluster.env.items():
        monkeypatch.setenv(name, value)
    yield slurm_cluster
    left = wait_queue_empty(slurm_cluster)
    if left:
        slurm_cluster.run("scancel", *left, check=False)
        pytest.fail(f"jobs left in the queue: {left}")


@pytest.fixture
def allocation(slurm, monkeypatch) -> Iterator[str]:
    """A 3-node job allocation, with this process 'inside' it (SLURM_JOB_ID and nodes set)."""
    proc = slurm.run("salloc", "--no-shell", "-N", "3", "--exclusive", "--immediate=30",
                     "-J", "alloc")  # exclusive: every CPU of its nodes, for ppn > 1
    job = re.search(r"Granted job allocation (\d+)", proc.stderr + proc.stdout)
    assert job, proc.stderr
    job_id = job[1]
    nodes = slurm.run("squeue", "-h", "-j", job_id, "-o", "%N").stdout.strip()
    monkeypatch.setenv("SLURM_JOB_ID", job_id)
    monkeypatch.setenv("SLURM_JOB_NODELIST", nodes)
    try:
        yield job_id
    finally:
        slurm.run("scancel", job_id, check=False)
        wait_queue_empty(slurm)


def wait_queue_empty(cluster: slurm_sandbox.SlurmCluster, timeout: float = 30) -> list:
    """The jobs still queued after up to ``timeout`` s (a cancelled job lingers as CG)."""
    deadline = time.monotonic() + timeout
    while True:
        left = cluster.run("squeue", "-h", "-o", "%i").stdout.split()
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)
