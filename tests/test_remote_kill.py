"""A timeout, ``kill()`` or Ctrl-C ends the remote command and everything it started.

Closing an SSH channel alone leaves the remote command running; these tests look
for leftovers with ``pgrep`` over OpenSSH on every node. The docker cluster's nodes each
have a process table of their own, and so do the sandbox's where this machine allows it
(`Cluster.own_processes`); elsewhere every sandbox node sees the whole machine's.

The client runs in a PID namespace of its own (`tests.client.isolated`): it can neither
see nor signal the nodes' processes, so only the reaper on each node can end them.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from fabexec.errors import CommandTimeoutError
from fabexec.sandbox import Cluster
from tests import proctree
from tests.client import isolated, isolation_refused, python_isolated, run_isolated
from tests.clusters import (
    TREE_SIZE,
    end_sleeping,
    escaping_tree,
    eventually,
    on_every_host,
    openssh,
    sleeping,
    unique_seconds,
)


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


#: A client's part: a tree of `escaping_tree` on every host (``timeout`` s at most, grown
#: until the tree was up before it fired); hands back each host's output, status and error.
TIMED_OUT = """
from fabexec import Exec
from tests.clusters import escaping_tree, pssh_info
from tests.proctree import once_started
node = once_started(
    lambda timeout: Exec(values["prefix"] + escaping_tree(values["seconds"]),
                         pssh_info(cluster, timeout=timeout, sudo=values["sudo"])),
    lambda node: all(out.endswith("started\\n") for out in node.stdout.values()))
result({"stdout": node.stdout, "exit_codes": node.exit_codes,
        "errors": {host: type(error).__name__ for host, error in node.errors.items()}})
"""

#: A client's part: the tree started async on every host, ``kill()`` once the test says
#: so; hands back each host's status and error.
KILLED = """
from fabexec import Exec
from tests.clusters import escaping_tree, pssh_info
node = Exec(escaping_tree(values["seconds"]),
            pssh_info(cluster, exec_async=True, pipe_stdout=values["outputs"] + "/{host}.out"))
step("started")
node.kill()
result({"exit_codes": node.exit_codes,
        "errors": {host: type(error).__name__ for host, error in node.errors.items()}})
"""


def killed(cluster: Cluster, tag: str, outputs: Path) -> dict:
    """What `KILLED` handed back, the kill sent once the tree ran on every host."""
    with isolated(KILLED, cluster, seconds=tag, outputs=str(outputs)) as client:
        client.reached("started")
        assert eventually(lambda: all_started(cluster, tag, outputs)), "tree never started"
        client.go()
        return client.result()


def test_the_client_sees_and_signals_none_of_the_nodes_processes(cluster: Cluster,
                                                                 seconds: str) -> None:
    """What makes the tests below prove the reaping remote: the client's /proc holds no
    process of a node, and a node's PID means nothing there."""
    refused = isolation_refused()
    if refused:
        pytest.skip(refused)
    host = cluster.hosts[0]
    assert openssh(cluster, host, f"setsid sleep {seconds} </dev/null >/dev/null 2>&1 &"
                   ).returncode == 0
    assert eventually(lambda: bool(sleeping(cluster, host, seconds)))
    [pid] = proctree.sleeping(seconds)  # as this machine sees it
    seen = run_isolated("""
import os
from tests.proctree import sleeping
try:
    os.kill(values["pid"], 0)
    signalled = True
except ProcessLookupError:
    signalled = False
result({"seen": sleeping(values["seconds"]), "signalled": signalled})
""", seconds=seconds, pid=pid)
    assert seen == {"seen": [], "signalled": False}
    assert sleeping(cluster, host, seconds) != []


def test_timeout_ends_the_command_and_everything_it_started_on_every_host(
        any_cluster: Cluster, seconds: str) -> None:
    node = run_isolated(TIMED_OUT, any_cluster, seconds=seconds, prefix="", sudo=False)
    assert node["stdout"] == {h: "started\n" for h in any_cluster.hosts}
    assert node["exit_codes"] == {h: CommandTimeoutError.exit_code for h in any_cluster.hosts}
    assert node["errors"] == {h: "CommandTimeoutError" for h in any_cluster.hosts}
    assert left_running(any_cluster, seconds) == {}


def test_kill_ends_an_async_command_and_everything_it_started_on_every_host(
        any_cluster: Cluster, seconds: str, tmp_path: Path) -> None:
    killed(any_cluster, seconds, tmp_path)
    assert left_running(any_cluster, seconds) == {}


def test_killed_command_ends_with_sigterms_status_not_a_lost_connection(
        any_cluster: Cluster, seconds: str, tmp_path: Path) -> None:
    """Like a local command: 128 + SIGTERM, and no error."""
    node = killed(any_cluster, seconds, tmp_path)
    assert node["errors"] == {}
    assert node["exit_codes"] == {h: 128 + signal.SIGTERM for h in any_cluster.hosts}


def test_timeout_ends_a_sudo_command_and_everything_it_started(cluster: Cluster) -> None:
    """The tree runs as root (so ignoring ``sudo`` fails), and root's processes are ended."""
    if not cluster.sudo:
        pytest.skip(f"{cluster.user} has no sudo on this cluster")
    seconds = unique_seconds()
    try:
        node = run_isolated(TIMED_OUT, cluster, seconds=seconds, prefix='echo "uid=$(id -u)"\n',
                            sudo=True)
        assert node["stdout"] == {h: "uid=0\nstarted\n" for h in cluster.hosts}
        assert node["errors"] == {h: "CommandTimeoutError" for h in cluster.hosts}
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
    with python_isolated(["-c", CALLER, escaping_tree(seconds), str(any_cluster.hostfile),
                          str(any_cluster.ssh_config), str(tmp_path / "{host}.out")]) as caller:
        assert eventually(lambda: all_started(any_cluster, seconds, tmp_path)), \
            "tree never started"
        caller.send_signal(signal.SIGINT)
        caller.wait()
        assert "KeyboardInterrupt" in caller.stderr()
    assert left_running(any_cluster, seconds) == {}
