"""What a user gives never breaks the shared connection, leaks, or escapes a remote kill.

Issue 17's repros, on the sandbox: commands quoted once and of any size, checked before
anything is sent; a secret of ``env`` in no output and no ``ps`` line; children that drop
their environment still ended; ``kill()`` reconnecting when the connection went; a timeout
never racing the reader. The tests that kill run their client in a PID namespace of its own
(`tests.client`), where only the reaper on each node can end the nodes' processes.
"""

from __future__ import annotations

import gc
import os
from typing import Iterator, List, Optional

import pytest

from fabexec import (
    CommandError,
    CommandTimeoutError,
    Exec,
    ExecInfoError,
)
from fabexec.sandbox import Cluster
from tests.client import isolated, run_isolated
from tests.clusters import end_sleeping, eventually, openssh, pssh_info, sleeping, unique_seconds


@pytest.fixture
def seconds(cluster: Cluster) -> Iterator[str]:
    tag = unique_seconds()
    yield tag
    end_sleeping(cluster, tag)


def left(cluster: Cluster, seconds: str) -> dict:
    return {h: p for h in cluster.hosts if (p := sleeping(cluster, h, seconds))}


def test_an_env_value_of_apostrophes_arrives_whole(cluster: Cluster) -> None:
    quotes = "'" * 8000 + '"$x`'
    node = Exec('printf %s "$Q"', pssh_info(cluster, env={"Q": quotes}))
    assert node.stdout == {h: quotes for h in cluster.hosts}, node.errors


def test_a_command_of_megabytes_runs_and_spares_other_commands_on_the_connection(
        cluster: Cluster) -> None:
    host = cluster.hosts[0]
    innocent = Exec("sleep 1; echo alive", pssh_info(cluster, hosts=[host], exec_async=True))
    big = ": " + "x" * (1 << 20) + "\necho big done"
    node = Exec(big, pssh_info(cluster, hosts=[host]))
    assert node.stdout == {host: "big done\n"}, node.errors
    innocent.wait()
    assert (innocent.stdout, innocent.errors) == ({host: "alive\n"}, {})


def test_a_script_of_many_lines_reads_the_callers_stdin_after_it(cluster: Cluster) -> None:
    lines = [f"v{i}=1" for i in range(20000)] + ["cat"]
    node = Exec(lines, pssh_info(cluster, stdin=b"from the caller\n"))
    assert node.stdout == {h: "from the caller\n" for h in cluster.hosts}, node.errors


def test_a_nul_byte_is_refused_before_anything_is_sent(cluster: Cluster) -> None:
    with pytest.raises(CommandError, match="NUL"):
        Exec("echo a\0b", pssh_info(cluster))
    with pytest.raises(ExecInfoError, match="env"):
        pssh_info(cluster, env={"A": "x\0y"})


def test_fabexecs_tag_cannot_be_set_through_env(cluster: Cluster) -> None:
    with pytest.raises(ExecInfoError, match="FABEXEC_TAG"):
        pssh_info(cluster, env={"FABEXEC_TAG": "mine"})


def test_a_secret_in_env_is_in_no_output_when_the_command_must_be_killed(
        cluster: Cluster, seconds: str) -> None:
    secret = "sekrit-5f1d2"
    node = run_isolated("""
from fabexec import Exec
from tests.clusters import pssh_info
from tests.proctree import once_started
node = once_started(
    lambda timeout: Exec(f"trap '' TERM; echo started; sleep {values['seconds']}",
                         pssh_info(cluster, env={"API_TOKEN": values["secret"]},
                                   timeout=timeout)),
    lambda node: all(out == "started\\n" for out in node.stdout.values()))
result({"exit_codes": node.exit_codes, "texts": [*node.stdout.values(), *node.stderr.values()],
        "errors": [repr(error) for error in node.errors.values()]})
""", cluster, seconds=seconds, secret=secret)
    assert node["exit_codes"] == {h: CommandTimeoutError.exit_code for h in cluster.hosts}
    assert not any(secret in text for text in [*node["texts"], *node["errors"]])
    assert left(cluster, seconds) == {}


def test_a_secret_in_env_is_in_no_process_listing_on_the_host(cluster: Cluster,
                                                              seconds: str) -> None:
    host = cluster.hosts[0]
    secret = "sekrit-9a7c3"
    node = Exec(f"echo started; sleep {seconds}",
                pssh_info(cluster, hosts=[host], env={"API_TOKEN": secret}, exec_async=True))
    try:
        assert eventually(lambda: bool(sleeping(cluster, host, seconds)))
        listing = openssh(cluster, host, "ps -eo args").stdout
        assert "sleep" in listing and secret not in listing
    finally:
        node.kill()


#: A client's part: ``values["command"]`` started async on ``values["hosts"]``, ended by
#: ``values["killers"]`` concurrent ``kill()`` calls once the test says so (the connections
#: closed first if ``values["reconnect"]``); hands back each host's status and error.
KILLED = """
import threading
from fabexec import Exec, close_connections
from tests.clusters import pssh_info
node = Exec(values["command"], pssh_info(cluster, hosts=values["hosts"], exec_async=True,
                                         max_parallel=values["max_parallel"]))
step("started")
if values["reconnect"]:
    close_connections()
killers = [threading.Thread(target=node.kill) for _ in range(values["killers"])]
for killer in killers:
    killer.start()
for killer in killers:
    killer.join(timeout=60)
result({"exit_codes": node.exit_codes,
        "errors": {host: repr(error) for host, error in node.errors.items()}})
"""


def killed(cluster: Cluster, seconds: str, command: str, hosts: Optional[List[str]] = None,
           killers: int = 1, reconnect: bool = False, max_parallel: int = 64) -> dict:
    """What `KILLED` handed back, once ``sleep {seconds}`` ran on every host."""
    hosts = hosts or cluster.hosts
    with isolated(KILLED, cluster, command=command, hosts=hosts, killers=killers,
                  reconnect=reconnect, max_parallel=max_parallel) as client:
        client.reached("started")
        assert eventually(lambda: all(sleeping(cluster, h, seconds) for h in hosts)), \
            "the command never started"
        client.go()
        return client.result()


def test_kill_ends_children_that_dropped_their_environment(cluster: Cluster,
                                                           seconds: str) -> None:
    node = killed(cluster, seconds, f"env -i sleep {seconds} & echo started; wait")
    assert left(cluster, seconds) == {}
    assert node["errors"] == {}


def test_kill_reconnects_when_the_connection_went_meanwhile(cluster: Cluster,
                                                            seconds: str) -> None:
    daemon = f"setsid sleep {seconds} </dev/null >/dev/null 2>&1 &"
    node = killed(cluster, seconds, daemon, hosts=cluster.hosts[:2], reconnect=True,
                  max_parallel=1)
    assert node["exit_codes"] == {h: 0 for h in cluster.hosts[:2]}
    assert left(cluster, seconds) == {}


def test_a_timeout_never_races_the_reader(cluster: Cluster, seconds: str) -> None:
    """Children that ignore SIGTERM make the reaper work while the reader waits on the
    channel: every host of every round must end as a timeout, never a lost connection."""
    rounds = run_isolated("""
from fabexec import Exec
from tests.clusters import pssh_info
rounds = []
for _ in range(3):
    node = Exec(f"trap '' TERM; (trap '' TERM; sleep {values['seconds']}) & echo started; wait",
                pssh_info(cluster, timeout=1))
    rounds.append({"exit_codes": node.exit_codes,
                   "errors": {host: type(error).__name__ for host, error in node.errors.items()}})
result(rounds)
""", cluster, seconds=seconds)
    for node in rounds:
        assert node["exit_codes"] == {h: CommandTimeoutError.exit_code for h in cluster.hosts}, \
            node["errors"]
        assert node["errors"] == {h: "CommandTimeoutError" for h in cluster.hosts}
    assert left(cluster, seconds) == {}


def test_concurrent_kills_run_one_reaper_and_leave_nothing(cluster: Cluster,
                                                           seconds: str) -> None:
    node = killed(cluster, seconds, f"echo started; sleep {seconds}", killers=3)
    assert left(cluster, seconds) == {}
    assert node["errors"] == {}


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_async_commands_dropped_without_wait_release_what_they_held(cluster: Cluster) -> None:
    Exec("true", pssh_info(cluster))  # connections open before counting
    before = open_descriptors()
    for _ in range(12):
        Exec("sleep 0.2", pssh_info(cluster, exec_async=True))  # dropped at once
    gc.collect()
    assert eventually(lambda: open_descriptors() <= before + 2), \
        f"{open_descriptors() - before} descriptors still held"
