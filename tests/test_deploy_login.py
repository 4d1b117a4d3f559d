"""``inv deploy --hostfile H --user U --key K`` on hosts where the caller's own keys are
refused: every step, the MPI one included, logs in with the given user and key (issue 14).

The caller's agent holds 7 keys the nodes refuse, more than sshd's MaxAuthTries: any ssh
that offers them before the given key is turned away ('Too many authentication failures').
The ssh_config names only where each node listens, so the login comes from the options.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from fabexec import sandbox
from tests.agents import new_key, running_agent
from tests.test_deploy import DEPLOY_TIMEOUT, NODES, ROOT, free_port, summary_rows
from tests.test_mpi import login_free_config


@pytest.fixture(scope="module")
def cluster_for_deploys() -> Iterator[sandbox.SandboxCluster]:
    """A sandbox of its own, running, for deploys given --hostfile (which start none)."""
    if os.geteuid() != 0 and not sandbox.SSHD.exists():
        pytest.skip(f"{sandbox.SSHD} is missing and only root may install it")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    folder = Path.home() / ".cache" / "fabexec" / f"sandbox-deploy-login-{worker}"
    sandbox.down(folder)
    try:
        cluster = sandbox.up(NODES, folder, timeout=60)
        if not cluster.own_hostnames:
            pytest.skip("the sandbox nodes share this machine's hostname (no UTS namespaces)")
        yield cluster
    finally:
        sandbox.down(folder)


@pytest.mark.timeout(DEPLOY_TIMEOUT + 60)
@pytest.mark.parametrize("launcher", ["mpiexec", "mpiexec.openmpi"])
def test_deploy_with_user_and_key_passes_every_step_where_the_callers_keys_are_refused(
        cluster_for_deploys: sandbox.SandboxCluster, tmp_path: Path, launcher: str) -> None:
    if shutil.which(launcher) is None:
        pytest.skip(f"no {launcher} installed")
    cluster = cluster_for_deploys
    config = login_free_config(cluster, tmp_path / "ssh_config")
    refused = [new_key(tmp_path / f"refused{i}") for i in range(7)]
    ips = [cluster.addresses[host][0] for host in cluster.hosts]
    with running_agent(refused) as agent_socket:
        done = subprocess.run(
            [sys.executable, "-m", "invoke", "--search-root", str(ROOT), "--collection",
             "tasks_deploy", "deploy", "--hostfile", str(cluster.hostfile),
             "--user", cluster.user, "--key", str(cluster.key), "--ssh-config", str(config),
             "--port", str(free_port(ips)), "--mpiexec", launcher],
            env={**os.environ, "SSH_AUTH_SOCK": agent_socket}, cwd=tmp_path, text=True,
            capture_output=True, timeout=DEPLOY_TIMEOUT)
    assert done.returncode == 0, done.stdout + done.stderr
    steps = ["push", "start", "ready", "mpi", "stop", "logs", "clean"]
    rows = summary_rows(done.stdout)
    assert sorted(rows) == cluster.hosts
    assert all(row == dict.fromkeys(steps, "OK") for row in rows.values()), done.stdout
