"""invoke tasks for the sandbox cluster of local sshd daemons (see fabexec/sandbox/).

``inv cluster.up -n 16``, ``inv cluster.status``, ``inv cluster.down``; tasks.py adds
them with ``ns.add_collection(cluster)``.
"""

from __future__ import annotations

from typing import Optional

from invoke import Collection, Context, task

from fabexec import sandbox
from fabexec.sandbox import slurm as slurm_sandbox

STATE_DIR_HELP = f"state folder (default ${sandbox.STATE_DIR_VAR} or ~/.cache/fabexec/sandbox)"


def _print(cluster: sandbox.SandboxCluster) -> None:
    states = cluster.status()
    for host in cluster.hosts:
        ip, port = cluster.addresses[host]
        pid = cluster.pid(host)
        print(f"{host:<8} {f'{ip}:{port}':<21} pid {pid or '-':<8} {states[host]}")
    print(f"user {cluster.user}; try: ssh -F {cluster.ssh_config} {cluster.hosts[0]} hostname")
    print(f"hostfile: {cluster.hostfile}")


@task(help={"nodes": "how many sshd nodes to run (default 4)", "state-dir": STATE_DIR_HELP,
            "slurm": "instead, start a Slurm cluster of this many nodes (root; see "
                     "fabexec/sandbox/slurm.py)"})
def up(c: Context, nodes: int = 4, state_dir: Optional[str] = None, slurm: int = 0) -> None:
    """Start a sandbox of N sshd nodes (or keep the one running) and say how to reach it."""
    if slurm:
        _print_slurm(slurm_sandbox.up(slurm, state_dir or SLURM_STATE_DIR))
        return
    _print(sandbox.up(nodes, state_dir))


SLURM_STATE_DIR = "/tmp/fabexec-slurm"


def _print_slurm(cluster: slurm_sandbox.SlurmCluster) -> None:
    print(cluster.run("sinfo").stdout, end="")
    env = " ".join(f"{k}={v!r}" for k, v in cluster.env.items())
    print(f"try: {env} {' '.join(cluster.launcher)} srun -N{len(cluster.nodes)} hostname")
    print("stop: inv cluster.down --slurm")


@task(help={"state-dir": STATE_DIR_HELP, "slurm": "stop the Slurm sandbox instead"})
def down(c: Context, state_dir: Optional[str] = None, slurm: bool = False) -> None:
    """Stop the sandbox's daemons and every session they started."""
    if slurm:
        slurm_sandbox.down(state_dir or SLURM_STATE_DIR)
        return
    sandbox.down(state_dir)


@task(help={"state-dir": STATE_DIR_HELP})
def status(c: Context, state_dir: Optional[str] = None) -> None:
    """Show each node of the sandbox: address, PID, running / frozen / stopped."""
    folder = state_dir or sandbox.default_state_dir()
    try:
        cluster = sandbox.SandboxCluster.load(folder)
    except FileNotFoundError:
        print(f"no sandbox in {folder}: start one with `inv cluster.up`")
        return
    _print(cluster)


cluster = Collection("cluster", up, down, status)
