"""What a user gives never breaks the shared connection, leaks, or escapes a remote kill.

Issue 17's repros, on the sandbox: commands quoted once and of any size, checked before
anything is sent; a secret of ``env`` in no output and no ``ps`` line; children that drop
their environment still ended; ``kill()`` reconnecting when the connection went; a timeout
never racing the reader.
"""

from __future__ import annotations

import gc
import os
import threading
from typing import Iterator

import pytest

from fabexec import (
    CommandError,
    CommandTimeoutError,
    Exec,
    ExecInfoError,
    close_connections,
)
from fabexec.sandbox import Cluster
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
    info = pssh_info(cluster, env={"API_TOKEN": secret}, timeout=2)
    node = Exec(f"trap '' TERM; echo started; sleep {seconds}", info)
    assert node.exit_codes == {h: CommandTimeoutError.exit_code for h in cluster.hosts}
    assert not any(secret in text for text in [*node.stdout.values(), *node.stderr.values()])


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


def test_kill_ends_children_that_dropped_their_environment(cluster: Cluster,
                                                           seconds: str) -> None:
    node = Exec(f"env -i sleep {seconds} & echo started; wait",
                pssh_info(cluster, exec_async=True))
    assert eventually(lambda: all(sleeping(cluster, h, seconds) for h in cluster.hosts))
    node.kill()
    assert left(cluster, seconds) == {}
    assert node.errors == {}


def test_kill_reconnects_when_the_connection_went_meanwhile(cluster: Cluster,
                                                            seconds: str) -> None:
    hosts = cluster.hosts[:2]
    daemon = f"setsid sleep {seconds} </dev/null >/dev/null 2>&1 &"
    node = Exec(daemon, pssh_info(cluster, hosts=hosts, max_parallel=1))
    assert node.exit_codes == {h: 0 for h in hosts}
    assert eventually(lambda: all(sleeping(cluster, h, seconds) for h in hosts))
    close_connections()
    node.kill()
    assert left(cluster, seconds) == {}


def test_a_timeout_never_races_the_reader(cluster: Cluster, seconds: str) -> None:
    """Children that ignore SIGTERM make the reaper work while the reader waits on the
    channel: every host of every round must end as a timeout, never a lost connection."""
    for _ in range(3):
        node = Exec(f"trap '' TERM; (trap '' TERM; sleep {seconds}) & echo started; wait",
                    pssh_info(cluster, timeout=1))
        assert node.exit_codes == {h: CommandTimeoutError.exit_code for h in cluster.hosts}, \
            node.errors
        assert all(isinstance(e, CommandTimeoutError) for e in node.errors.values())
    assert left(cluster, seconds) == {}


def test_concurrent_kills_run_one_reaper_and_leave_nothing(cluster: Cluster,
                                                           seconds: str) -> None:
    node = Exec(f"echo started; sleep {seconds}", pssh_info(cluster, exec_async=True))
    assert eventually(lambda: all(sleeping(cluster, h, seconds) for h in cluster.hosts))
    killers = [threading.Thread(target=node.kill) for _ in range(3)]
    for killer in killers:
        killer.start()
    for killer in killers:
        killer.join(timeout=60)
    assert left(cluster, seconds) == {}


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
