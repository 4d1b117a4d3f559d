"""The Slurm sandbox: a real cluster that comes up idle, runs steps, and leaves nothing."""

from __future__ import annotations

import os
import signal

import pytest

from fabexec.sandbox import slurm as slurm_sandbox
from fabexec.sandbox.slurm import CONTROLLER_IP
from tests.fixtures_slurm import slurm_state_dir
from tests.proctree import eventually, sleeping


def test_every_node_is_idle_and_runs_a_step(slurm):
    nodes = slurm.run("sinfo", "-h", "-N", "-o", "%N %t").stdout.split("\n")
    assert sorted(filter(None, nodes)) == [f"n{i} idle" for i in range(1, 5)]
    out = slurm.run("srun", "-N4", "--label", "bash", "-c", "echo $SLURMD_NODENAME").stdout
    assert sorted(out.split("\n")[:-1]) == ["0: n1", "1: n2", "2: n3", "3: n4"]


def test_slurm_is_not_seen_outside_its_namespace(slurm):
    """The controller listens on 0.0.0.0 inside; outside, nothing answers on its address."""
    import socket

    with socket.socket() as probe:
        probe.settimeout(1)
        assert probe.connect_ex((CONTROLLER_IP, 6817)) != 0


def test_down_leaves_no_process_of_the_namespace(tag):
    if os.geteuid() != 0:
        pytest.skip("the Slurm sandbox needs root")
    state = slurm_state_dir()  # munged wants every folder above its socket searchable
    cluster = slurm_sandbox.up(1, state.with_name(state.name + "-down"))
    cluster.run("sbatch", "--output=/dev/null", "--wrap", f"sleep {tag}")  # its job goes too
    assert eventually(lambda: len(sleeping(tag)) == 1)
    os.kill(cluster.holder, signal.SIGKILL)  # even without the process that made it
    slurm_sandbox.down(cluster.state_dir)
    assert slurm_sandbox._pids_in(cluster.netns) == []
    assert not cluster.alive()
    slurm_sandbox.down(cluster.state_dir)  # twice is harmless


def test_two_clusters_of_different_folders_run_side_by_side(slurm):
    """Another engineer's sandbox (another folder): its own namespace, munge socket, nodes
    and queue; starting and stopping it leaves this one running."""
    state = slurm_state_dir()
    other = slurm_sandbox.up(2, state.with_name(state.name + "-other"))
    try:
        assert other.netns != slurm.netns
        assert slurm_sandbox.socket_dir(other.state_dir) != slurm_sandbox.socket_dir(
            slurm.state_dir)
        other.run("sbatch", "--output=/dev/null", "--wrap", "sleep 30")
        assert other.run("squeue", "-h", "-o", "%i").stdout.split() != []
        assert slurm.run("squeue", "-h", "-o", "%i").stdout.split() == []
        assert sorted(other.run("sinfo", "-h", "-N", "-o", "%N").stdout.split()) == ["n1", "n2"]
    finally:
        other.down()
    out = slurm.run("srun", "-N4", "--label", "bash", "-c", "echo $SLURMD_NODENAME").stdout
    assert sorted(out.split("\n")[:-1]) == ["0: n1", "1: n2", "2: n3", "3: n4"]
