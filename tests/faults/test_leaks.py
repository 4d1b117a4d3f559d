"""A long run leaks nothing: open files, threads and child processes end where they began.

200 `Exec` calls of every way (local, to a file, one host, every host, async), over
cached connections and, every few rounds, after `connections.close_connections` made them
reconnect. A leak of one file, thread or child per call, or per connection, would
show as dozens; the slack allows for what comes and goes on its own (the keepalive
monitor's thread, a paramiko thread still winding down).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Dict, List

from fabexec import Exec, LocalExecInfo, connections
from fabexec.sandbox import Cluster
from tests.clusters import pssh_info, ssh_info
from tests.proctree import eventually

ROUNDS = 40  # of `one_round`'s 5 calls: 200 in all
COLD_EVERY = 4  # every 4th round starts with no cached connection
SLACK = {"open files": 4, "threads": 3, "child processes": 1}


def children() -> List[str]:
    """The state letter of each child process of this one (``Z`` for a zombie)."""
    me, states = os.getpid(), []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == me:
            states.append(fields[0])
    return states


def counts() -> Dict[str, int]:
    return {"open files": len(os.listdir("/proc/self/fd")),
            "threads": threading.active_count(),
            "child processes": len(children())}


def one_round(cluster: Cluster, output: Path) -> None:
    """Five calls, each checked: a failing call would leak less and prove nothing."""
    host = cluster.hosts[0]
    calls = [
        Exec("true", LocalExecInfo(hide_output=True)),
        Exec("echo local", LocalExecInfo(pipe_stdout=output, collect_output=True,
                                         hide_output=True)),
        Exec("echo one", ssh_info(cluster, host)),
        Exec("echo all", pssh_info(cluster, pipe_stdout=output.with_suffix(".{host}"))),
        Exec("echo later", pssh_info(cluster, exec_async=True)),
    ]
    calls[-1].wait()
    for node in calls:
        assert node.exit_code == 0, node.stderr


def within_slack(start: Dict[str, int]) -> bool:
    now = counts()
    return all(now[what] <= start[what] + SLACK[what] for what in start)


def test_two_hundred_mixed_execs_leave_files_threads_and_processes_where_they_were(
        cluster: Cluster, tmp_path: Path) -> None:
    output = tmp_path / "out"
    one_round(cluster, output)  # connections cached, the keepalive monitor running
    start = counts()
    for n in range(ROUNDS):
        if n % COLD_EVERY == 0:
            connections.close_connections()
        one_round(cluster, output)
        assert "Z" not in children(), f"a zombie child after round {n}"
    settled = eventually(lambda: within_slack(start), seconds=10)
    assert settled, f"started with {start}, ended with {counts()}"
