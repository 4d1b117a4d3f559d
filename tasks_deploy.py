"""``inv deploy``: the key-value service of examples/kvstore on every host, checked under MPI.

A thin invoke layer over `examples.kvstore.deploy`, where the steps live; tasks.py adds it
with ``ns.add_task(deploy)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from invoke import Context, Exit, task

from examples.kvstore.deploy import (
    DEFAULT_PORT,
    REMOTE_ROOT,
    DeployFailed,
    Deployment,
    Target,
    sandbox_target,
)
from fabexec import FabexecError


@task(help={
    "nodes": "sandbox nodes to deploy on (default 4; started if no sandbox runs)",
    "hostfile": "deploy on these hosts instead of the sandbox",
    "user": "SSH user for --hostfile hosts",
    "key": "SSH private key for --hostfile hosts",
    "ssh-config": "ssh_config for --hostfile hosts (default ~/.ssh/config)",
    "port": f"TCP port the service listens on, on every host (default {DEFAULT_PORT})",
    "fail-host": "inject a failure: this host's service cannot start (its port is taken)",
    "python": "the hosts' Python 3 (default python3, found on their PATH)",
    "mpiexec": "the MPI launcher of the check job (default mpiexec)",
    "logs": "where the hosts' logs go, one folder per host (default deploy-logs)",
    "remote-dir": f"where deploys go on the hosts, shared by their users (default {REMOTE_ROOT})",
})
def deploy(c: Context, nodes: int = 4, hostfile: Optional[str] = None,
           user: Optional[str] = None, key: Optional[str] = None,
           ssh_config: Optional[str] = None, port: int = DEFAULT_PORT,
           fail_host: Optional[str] = None, python: str = "python3",
           mpiexec: str = "mpiexec", logs: str = "deploy-logs",
           remote_dir: str = REMOTE_ROOT) -> None:
    """Deploy a key-value server on every host, check it with an MPI job, tear it all down."""
    options = dict(port=port, fail_host=fail_host, python=python, mpiexec=mpiexec,
                   logs=Path(logs), remote_root=remote_dir)
    try:
        if hostfile:
            Deployment(Target.from_hostfile(hostfile, user, key, ssh_config), **options).run()
        else:
            with sandbox_target(nodes) as target:
                Deployment(target, **options).run()
    except DeployFailed as e:
        raise Exit(f"{e}\nlogs of the hosts reached: {logs}/HOST/", code=1) from None
    except (FabexecError, ValueError, OSError) as e:
        raise Exit(f"deploy: {e}", code=1) from None
    except KeyboardInterrupt:
        raise Exit("deploy interrupted: what it started was torn down", code=130) from None
