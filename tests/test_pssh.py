"""Parallel SSH: one command on every host, one result per host, output never mixed up.

Each test runs on the sandbox and on the docker cluster (``any_cluster``).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import threading
from pathlib import Path
from typing import Dict, List

import pytest

from fabexec import Exec
from fabexec.sandbox import Cluster
from tests.clusters import (
    expected_hostname,
    pssh_info,
    random_binary_command,
    remote_sha256,
    ssh_config_with,
)


def test_hostname_answers_with_each_hosts_own_name(any_cluster: Cluster) -> None:
    node = Exec("hostname", pssh_info(any_cluster))
    assert node.hosts == any_cluster.hosts
    assert node.stdout == {h: expected_hostname(any_cluster, h) + "\n" for h in any_cluster.hosts}
    assert node.exit_codes == {h: 0 for h in any_cluster.hosts}
    assert (node.exit_code, node.errors) == (0, {})


def test_each_host_keeps_its_own_exit_code(any_cluster: Cluster) -> None:
    failing = any_cluster.hosts[1]
    node = Exec(f'[ "$(hostname)" != {expected_hostname(any_cluster, failing)} ] || exit 7',
                pssh_info(any_cluster))
    assert node.exit_codes == {h: 7 if h == failing else 0 for h in any_cluster.hosts}
    assert node.exit_code == 7
    assert node.failed()


def test_stdout_and_stderr_are_kept_apart_per_host(any_cluster: Cluster) -> None:
    node = Exec("echo out-$(hostname); echo err-$(hostname) >&2", pssh_info(any_cluster))
    names = {h: expected_hostname(any_cluster, h) for h in any_cluster.hosts}
    assert node.stdout == {h: f"out-{name}\n" for h, name in names.items()}
    assert node.stderr == {h: f"err-{name}\n" for h, name in names.items()}


def test_hostfile_ranges_expand_to_every_node(any_cluster: Cluster, tmp_path: Path) -> None:
    prefix = any_cluster.hosts[0].rstrip("0123456789")
    numbers = [h[len(prefix):] for h in any_cluster.hosts]
    assert [f"{prefix}{n}" for n in numbers] == any_cluster.hosts, "nodes are not numbered"
    hostfile = tmp_path / "hosts"
    hostfile.write_text(f"# every node\n{prefix}[{numbers[0]}-{numbers[-1]}]\n")
    node = Exec("hostname", pssh_info(any_cluster, hostfile=hostfile))
    assert node.stdout == {h: expected_hostname(any_cluster, h) + "\n" for h in any_cluster.hosts}


def test_ssh_config_aliases_reach_the_nodes_they_name(any_cluster: Cluster,
                                                      tmp_path: Path) -> None:
    first, last = any_cluster.hosts[0], any_cluster.hosts[-1]
    config = ssh_config_with(any_cluster, tmp_path / "ssh_config", {
        "db": any_cluster.addresses[first], "web": any_cluster.addresses[last]})
    node = Exec("hostname", pssh_info(any_cluster, hosts=["db", "web"], ssh_config=config))
    assert node.stdout == {"db": expected_hostname(any_cluster, first) + "\n",
                           "web": expected_hostname(any_cluster, last) + "\n"}


def test_host_placeholder_gives_each_host_a_byte_exact_file(any_cluster: Cluster,
                                                            tmp_path: Path) -> None:
    node = Exec(random_binary_command(1 << 20), pssh_info(
        any_cluster, collect_output=False, pipe_stdout=tmp_path / "{host}.out",
        pipe_stderr=tmp_path / "{host}.err"))
    assert node.exit_codes == {h: 0 for h in any_cluster.hosts}
    hashes = {}
    for host in any_cluster.hosts:
        data = (tmp_path / f"{host}.out").read_bytes()
        assert len(data) == 1 << 20
        sent = remote_sha256((tmp_path / f"{host}.err").read_text())
        assert hashlib.sha256(data).hexdigest() == sent, host
        hashes[host] = sent
    assert len(set(hashes.values())) == len(hashes), "hosts sent the same bytes"


LINES = 10_000
PADDING = "x" * 80  # long lines: chunk boundaries fall inside them often
LINE = re.compile(r"\[(?P<host>[^\]]+)\] (?P<node>\S+) line (?P<n>\d+) " + PADDING)


def hosts_of_lines(lines: List[str], node_of: Dict[str, str]) -> Dict[str, List[int]]:
    """The line numbers each host wrote, in order; fails on a line that is not whole."""
    numbers: Dict[str, List[int]] = {host: [] for host in node_of}
    for line in lines:
        match = LINE.fullmatch(line)
        assert match is not None, f"torn or foreign line: {line[:200]!r}"
        assert match["node"] == node_of[match["host"]], f"line under the wrong host: {line!r}"
        numbers[match["host"]].append(int(match["n"]))
    return numbers


def test_shared_file_and_terminal_get_whole_lines_prefixed_by_host(
        any_cluster: Cluster, tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    """8 hosts (two aliases per node of a 4-node cluster), 10,000 lines each, at once."""
    aliases = {f"{h}-{copy}": h for h in any_cluster.hosts for copy in ("a", "b")}
    config = ssh_config_with(any_cluster, tmp_path / "ssh_config", {
        alias: any_cluster.addresses[host] for alias, host in aliases.items()})
    node_of = {alias: expected_hostname(any_cluster, host) for alias, host in aliases.items()}
    shared = tmp_path / "all.out"
    capfd.readouterr()
    node = Exec(f'seq -f "$(hostname) line %g {PADDING}" {LINES}', pssh_info(
        any_cluster, hosts=list(aliases), ssh_config=config, collect_output=False,
        hide_output=False, pipe_stdout=shared))
    terminal = capfd.readouterr().out
    assert node.exit_codes == {alias: 0 for alias in aliases}
    every = {alias: list(range(1, LINES + 1)) for alias in aliases}
    assert hosts_of_lines(shared.read_text().splitlines(), node_of) == every
    assert shared.read_bytes().endswith(b"\n")
    assert hosts_of_lines(terminal.splitlines(), node_of) == every


def test_max_parallel_one_still_runs_every_host(any_cluster: Cluster) -> None:
    node = Exec("hostname", pssh_info(any_cluster, max_parallel=1))
    assert node.stdout == {h: expected_hostname(any_cluster, h) + "\n" for h in any_cluster.hosts}


# ---- stdin: every host reads all of it --------------------------------------------------

def test_a_stdin_file_reaches_every_host_whole_and_again_when_the_info_is_reused(
        cluster: Cluster) -> None:
    data = os.urandom(8 << 20)
    info = pssh_info(cluster, hosts=["localhost", *cluster.hosts], stdin=io.BytesIO(data))
    digest = hashlib.sha256(data).hexdigest()
    for _ in range(2):
        node = Exec("sha256sum | cut -d' ' -f1", info)
        assert node.stdout == {h: f"{digest}\n" for h in node.hosts}, node.errors
        assert len(node.hosts) == len(cluster.hosts) + 1


def test_a_stdin_pipe_reaches_every_host_whole(cluster: Cluster) -> None:
    data = os.urandom(4 << 20)
    read_end, write_end = os.pipe()

    def write() -> None:
        with os.fdopen(write_end, "wb") as pipe:
            for start in range(0, len(data), 65536):  # in pieces, as a producer would
                pipe.write(data[start:start + 65536])
    writer = threading.Thread(target=write)
    writer.start()
    with os.fdopen(read_end, "rb") as stdin:
        node = Exec("sha256sum | cut -d' ' -f1", pssh_info(cluster, stdin=stdin))
    writer.join()
    digest = hashlib.sha256(data).hexdigest()
    assert node.stdout == {h: f"{digest}\n" for h in cluster.hosts}, node.errors
