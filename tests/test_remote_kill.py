"""A timeout, ``kill()`` or Ctrl-C ends the remote command and everything it started.

Closing an SSH channel alone leaves the remote command running; these tests look
for leftovers with ``pgrep`` over OpenSSH on every node. The docker cluster's nodes each
have a process table of their own, and so do the sandbox's where this machine allows it
(`Cluster.own_processes`); elsewhere every sandbox node sees the whole machine's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from fabexec import Exec
from fabexec.errors import CommandTimeoutError
from fabexec.sandbox import Cluster
from tests.clusters import (
    TREE_SIZE,
    end_sleeping,
    escaping_tree,
    eventually,
    on_every_host,
    pssh_info,
    sleeping,
    unique_seconds,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def seconds(any_cluster: Cluster) -> Iterator[str]:
    """This test's unique ``sleep`` duration; whatever the test left running is killed after."""
    tag = unique_seconds()
    yield tag
    end_sleeping(any_cluster, tag)


def left_running(cluster: Cluster, tag: str) -> Dict[str, List[str]]:
    """The test's processes still alive, per node (only nodes that have some)."""
    found = on_every_host(cluster, lambda host: sleeping(cluster, host, tag))
    return {host: procs for host, procs in found.items() if procs}


def all_started(cluster: Cluster, tag: str, outputs: Path) -> bool:
    """Every host printed ``started`` to ``outputs/{host}.out``, and runs the whole tree.

    Exactly `TREE_SIZE` processes on each node where nodes have their own process
    table; where they share the machine's, each sees every node's, hence at least.
    """
    marks = [outputs / f"{host}.out" for host in cluster.hosts]
    if not all(mark.exists() and mark.read_text() == "started\n" for mark in marks):
        return False
    counts = [len(procs) for procs in
              on_every_host(cluster, lambda host: sleeping(cluster, host, tag)).values()]
    if cluster.own_processes:
        return counts == [TREE_SIZE] * len(counts)
    return min(counts) >= TREE_SIZE


def start_async(cluster: Cluster, tag: str, outputs: Path) -> Exec:
    """`escaping_tree` on every host, returned once it runs there."""
    node = Exec(escaping_tree(tag), pssh_info(cluster, exec_async=True,
                                              pipe_stdout=outputs / "{host}.out"))
    assert eventually(lambda: all_started(cluster, tag, outputs)), "tree never started"
    return node


def test_timeout_ends_the_command_and_everything_it_started_on_every_host(
        any_cluster: Cluster, seconds: str) -> None:
    node = Exec(escaping_tree(seconds), pssh_info(any_cluster, timeout=3))
    assert node.stdout == {h: "started\n" for h in any_cluster.hosts}, "tree never started"
    assert node.exit_codes == {h: CommandTimeoutError.exit_code for h in any_cluster.hosts}
    assert all(isinstance(node.errors[h], CommandTimeoutError) for h in any_cluster.hosts)
    assert left_running(any_cluster, seconds) == {}


def test_kill_ends_an_async_command_and_everything_it_started_on_every_host(
        any_cluster: Cluster, seconds: str, tmp_path: Path) -> None:
    node = start_async(any_cluster, seconds, tmp_path)
    node.kill()
    assert left_running(any_cluster, seconds) == {}


def test_killed_command_ends_with_sigterms_status_not_a_lost_connection(
        any_cluster: Cluster, seconds: str, tmp_path: Path) -> None:
    """Like a local command: 128 + SIGTERM, and no error."""
    node = start_async(any_cluster, seconds, tmp_path)
    node.kill()
    assert node.errors == {}
    assert node.exit_codes == {h: 128 + signal.SIGTERM for h in any_cluster.hosts}


def test_timeout_ends_a_sudo_command_and_everything_it_started(cluster: Cluster) -> None:
    if not cluster.sudo:
        pytest.skip(f"{cluster.user} has no sudo on this cluster")
    seconds = unique_seconds()
    try:
        node = Exec(escaping_tree(seconds), pssh_info(cluster, sudo=True, timeout=3))
        assert node.stdout == {h: "started\n" for h in cluster.hosts}, "tree never started"
        assert left_running(cluster, seconds) == {}
    finally:
        end_sleeping(cluster, seconds)


CALLER = """
import sys
from fabexec import Exec, PsshExecInfo
Exec(sys.argv[1], PsshExecInfo(hostfile=sys.argv[2], ssh_config=sys.argv[3], hide_output=True,
                               pipe_stdout=sys.argv[4]))
"""


def test_ctrl_c_in_the_caller_ends_the_remote_commands(any_cluster: Cluster, seconds: str,
                                                       tmp_path: Path) -> None:
    caller = subprocess.Popen(
        [sys.executable, "-c", CALLER, escaping_tree(seconds), str(any_cluster.hostfile),
         str(any_cluster.ssh_config), str(tmp_path / "{host}.out")],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert eventually(lambda: all_started(any_cluster, seconds, tmp_path)), \
            "tree never started"
        caller.send_signal(signal.SIGINT)
        _, err = caller.communicate(timeout=60)
    finally:
        if caller.poll() is None:
            caller.kill()
            caller.wait(timeout=30)
    assert "KeyboardInterrupt" in err
    assert left_running(any_cluster, seconds) == {}
