"""Fanning out through gateways (issue 15): the same results as direct PSSH, and faults.

The gateways are sandbox nodes whose ``python3`` is Debian's, without fabexec or
paramiko: every run brings fabexec there. What is left on a node (gateway
processes, temporary folders, commands) is looked at on the node itself, over
OpenSSH.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from fabexec import Exec, sandbox
from fabexec.errors import (
    CommandTimeoutError,
    ExecInfoError,
    GatewayError,
    UnreachableError,
)
from fabexec.frames import HEAD, MAGIC, MAX_HEADER, FrameError, Parser, encode
from fabexec.sandbox import SandboxCluster
from fabexec.topology import TopologyError, plan
from tests.clusters import (
    SPARE_IP,
    TREE_SIZE,
    end_sleeping,
    escaping_tree,
    eventually,
    on_every_host,
    openssh,
    pssh_info,
    sleeping,
    ssh_config_with,
    unique_seconds,
)

pytestmark = pytest.mark.timeout(180)

#: What a gateway leaves in ``ps`` (its argv) and in /dev/shm or /tmp (its folder).
MARK = "[f]abexec-gateway"
LEFTOVERS = "ls -d /dev/shm/fabexec-gw-* /tmp/fabexec-gw-* 2>/dev/null; true"


def free_port(ip: str) -> int:
    with socket.socket() as sock:
        sock.bind((ip, 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxCluster]:
    """68 nodes: 4 gateways and 64 targets."""
    if os.geteuid() != 0:
        pytest.skip("gateways need nodes with their own hostnames (root)")
    state_dir = tmp_path_factory.mktemp("sandbox-tree")
    try:
        yield sandbox.up(68, state_dir, timeout=120)
    finally:
        sandbox.down(state_dir)


@pytest.fixture
def ghost_config(cluster: SandboxCluster, tmp_path: Path) -> Path:
    """The cluster's ssh_config plus ``ghost``, where nothing listens."""
    return ssh_config_with(cluster, tmp_path / "ssh_config",
                           {"ghost": (SPARE_IP, free_port(SPARE_IP))})


def results(node: Exec) -> Dict[str, Any]:
    return {"stdout": node.stdout, "stderr": node.stderr, "exit_codes": node.exit_codes,
            "errors": {h: (type(e), str(e)) for h, e in node.errors.items()}}


def gateway_leftovers(cluster: SandboxCluster, hosts: List[str]) -> Dict[str, str]:
    """Per node: gateway processes and folders still there (empty: none)."""
    def look(host: str) -> str:
        done = openssh(cluster, host, f"pgrep -af '{MARK}'; {LEFTOVERS}")
        return done.stdout.strip()
    return {h: v for h, v in on_every_host(cluster, look).items() if h in hosts and v}


# --- the same results as direct PSSH ---------------------------------------------------


def test_tree_of_4_gateways_and_64_targets_gives_the_results_of_direct_pssh(
        big: SandboxCluster, tmp_path: Path) -> None:
    targets, gateways = big.hosts[4:], big.hosts[:4]
    config = ssh_config_with(big, tmp_path / "ssh_config",
                             {"ghost": (SPARE_IP, free_port(SPARE_IP))})
    command = ('echo "out $(hostname)"; printf "err %s\\n\\x00\\xff" "$(hostname)" >&2; '
               'n=$(hostname); exit $(( ${n#node} % 4 ))')
    runs = {}
    for way, more in (("direct", {}), ("tree", {"gateways": gateways})):
        folder = tmp_path / way
        folder.mkdir()
        runs[way] = Exec(command, pssh_info(big, hosts=[*targets, "ghost"], ssh_config=config,
                                            pipe_stdout=str(folder / "{host}.out"),
                                            connect_timeout=5, **more))
    direct, tree = runs["direct"], runs["tree"]
    assert results(tree) == results(direct)
    assert {h: tree.stdout[h] for h in targets} == {h: f"out {h}\n" for h in targets}
    assert isinstance(tree.errors["ghost"], UnreachableError)
    for host in targets:
        out = (tmp_path / "tree" / f"{host}.out").read_bytes()
        assert out == (tmp_path / "direct" / f"{host}.out").read_bytes() == f"out {host}\n".encode()
    assert gateway_leftovers(big, gateways) == {}


def test_gateway_whose_python_lacks_fabexec_gets_it_for_the_run_only(
        cluster: SandboxCluster) -> None:
    lacking = openssh(cluster, "node1", "command -v python3; python3 -c 'import paramiko'")
    assert lacking.stdout.strip() == "/usr/bin/python3" and lacking.returncode != 0
    node = Exec("hostname", pssh_info(cluster, hosts=["node2", "node3"], gateways="node1"))
    assert node.stdout == {"node2": "node2\n", "node3": "node3\n"}
    assert gateway_leftovers(cluster, ["node1"]) == {}


def test_cli_runs_through_gateways_with_json_lines(cluster: SandboxCluster) -> None:
    import subprocess
    import sys
    done = subprocess.run(
        [sys.executable, "-m", "fabexec", "run", "-F", str(cluster.ssh_config), "-H",
         "node[2-3]", "--gateways", "node1", "--json", "--", "hostname"],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    lines = {o["host"]: o for o in map(json.loads, done.stdout.splitlines())}
    assert done.returncode == 0, done.stderr
    assert {h: (o["stdout"], o["exit_code"]) for h, o in lines.items()} == {
        "node2": ("node2\n", 0), "node3": ("node3\n", 0)}


# --- faults ------------------------------------------------------------------------------


def test_refused_gateway_hands_its_targets_to_another(cluster: SandboxCluster,
                                                      ghost_config: Path) -> None:
    node = Exec("hostname", pssh_info(cluster, ssh_config=ghost_config, connect_timeout=5,
                                      gateways=["ghost", "node1"]))
    assert node.stdout == {h: f"{h}\n" for h in cluster.hosts}
    assert node.errors == {}


def test_no_gateway_left_ends_targets_with_255_naming_the_gateway(
        cluster: SandboxCluster, ghost_config: Path) -> None:
    node = Exec("hostname", pssh_info(cluster, ssh_config=ghost_config, connect_timeout=5,
                                      gateways="ghost"))
    assert set(node.exit_codes.values()) == {255}
    for host in cluster.hosts:
        error = node.errors[host]
        assert isinstance(error, GatewayError) and error.gateway == "ghost"
        assert "through gateway ghost" in str(error)


def _only(cluster: SandboxCluster, host: str) -> str:
    return f'[ "$(hostname)" = {host} ]'


def test_gateway_killed_mid_run_ends_its_started_targets_with_255_and_keeps_the_others(
        cluster: SandboxCluster, tmp_path: Path) -> None:
    seconds = unique_seconds()
    command = (f'if {_only(cluster, "node3")}; then echo started; sleep {seconds}; '
               'else echo quick; fi')
    try:
        node = Exec(command, pssh_info(cluster, hosts=["node3", "node4"], exec_async=True,
                                       gateways=["node1", "node2"],
                                       pipe_stdout=str(tmp_path / "{host}.out")))
        assert eventually(lambda: (tmp_path / "node3.out").read_bytes() == b"started\n")
        cluster.crash("node1")
        node.wait()
        assert node.exit_codes == {"node3": 255, "node4": 0}
        error = node.errors["node3"]
        assert isinstance(error, GatewayError) and error.gateway == "node1"
        assert node.stdout["node4"] == "quick\n"
        assert gateway_leftovers(cluster, ["node1"]) == {}
    finally:
        end_sleeping(cluster, seconds)


def test_frozen_gateway_is_noticed_by_its_keepalives(cluster: SandboxCluster,
                                                    tmp_path: Path) -> None:
    seconds = unique_seconds()
    command = (f'if {_only(cluster, "node3")}; then echo started; sleep {seconds}; '
               'else echo quick; fi')
    try:
        node = Exec(command, pssh_info(cluster, hosts=["node3", "node4"], exec_async=True,
                                       gateways=["node1", "node2"], keepalive_interval=0.5,
                                       keepalive_count=2,
                                       pipe_stdout=str(tmp_path / "{host}.out")))
        assert eventually(lambda: (tmp_path / "node3.out").read_bytes() == b"started\n")
        cluster.freeze("node1")
        try:
            node.wait()
        finally:
            cluster.thaw("node1")
        assert node.exit_codes == {"node3": 255, "node4": 0}
        error = node.errors["node3"]
        assert isinstance(error, GatewayError) and error.gateway == "node1"
        assert "stopped answering" in str(error)
        # Thawed, the gateway finds its client gone: it ends its command and leaves.
        assert eventually(lambda: not sleeping(cluster, "node3", seconds))
        assert eventually(lambda: gateway_leftovers(cluster, ["node1"]) == {})
    finally:
        end_sleeping(cluster, seconds)


def test_kill_ends_every_command_on_every_target_and_leaves_no_gateway(
        cluster: SandboxCluster) -> None:
    seconds = unique_seconds()
    try:
        node = Exec(escaping_tree(seconds), pssh_info(cluster, exec_async=True,
                                                     gateways=["node1", "node2"]))
        assert eventually(lambda: all(len(sleeping(cluster, h, seconds)) == TREE_SIZE
                                      for h in cluster.hosts))
        node.kill()
        assert on_every_host(cluster, lambda h: sleeping(cluster, h, seconds)) == \
            {h: [] for h in cluster.hosts}
        assert set(node.exit_codes.values()) == {143}, node.errors
        assert gateway_leftovers(cluster, ["node1", "node2"]) == {}
    finally:
        end_sleeping(cluster, seconds)


def test_timeout_ends_every_command_through_the_gateways(cluster: SandboxCluster) -> None:
    seconds = unique_seconds()
    try:
        node = Exec(escaping_tree(seconds), pssh_info(cluster, timeout=3, gateways="node1"))
        assert set(node.exit_codes.values()) == {124}
        assert all(isinstance(e, CommandTimeoutError) for e in node.errors.values())
        assert on_every_host(cluster, lambda h: sleeping(cluster, h, seconds)) == \
            {h: [] for h in cluster.hosts}
        assert gateway_leftovers(cluster, ["node1"]) == {}
    finally:
        end_sleeping(cluster, seconds)


def test_topology_routes_targets_and_reaches_unrouted_ones_directly(
        cluster: SandboxCluster, tmp_path: Path) -> None:
    topology = tmp_path / "topology.conf"
    topology.write_text(f"[routes]\n{socket.gethostname()}: node1\nnode1: node[2-3]\n")
    node = Exec("hostname", pssh_info(cluster, topology=str(topology)))
    assert node.stdout == {h: f"{h}\n" for h in cluster.hosts}


# --- without nodes -------------------------------------------------------------------


@pytest.mark.parametrize(("text", "line", "words"), [
    ("gw1: n[1-4]\n", 1, "before any [routes]"),
    ("[routes]\n# fine\ngw1 n[1-4]\n", 3, "is not 'gateways: targets'"),
    ("[routes]\ngw1: n[1-4]\n: n5\n", 3, "gateways are missing"),
    ("[routes]\ngw1:\n", 2, "targets are missing"),
    ("[routes]\ngw[1-: n1\n", 2, "gw[1-"),
    ("[routes]\ngw1: n1\ngw2: gw1\n", 3, "gw1 is a gateway of another line"),
    ("[routes\n", 1, "not a [section]"),
])
def test_bad_topology_line_is_named_by_file_and_line(tmp_path: Path, text: str, line: int,
                                                     words: str) -> None:
    path = tmp_path / "topology.conf"
    path.write_text(text)
    with pytest.raises(TopologyError) as caught:
        pssh_info_without_cluster(topology=str(path))
    assert (caught.value.path, caught.value.line, caught.value.field) == (str(path), line,
                                                                          "topology")
    assert words in str(caught.value)


def pssh_info_without_cluster(**changes: Any) -> Any:
    from fabexec import PsshExecInfo
    return PsshExecInfo(hosts="n[1-8]", **changes)


def test_topology_shares_each_line_among_its_gateways(tmp_path: Path) -> None:
    path = tmp_path / "topology.conf"
    path.write_text("[routes]\nadmin: gw[1-3]  ; the root's line\ngw[1-2]: n[1-5]\ngw3 = m1\n")
    shares = plan(["n1", "n2", "n3", "n4", "n5", "m1", "x"], topology=str(path))
    assert shares.shares == {"gw1": ["n1", "n2", "n3"], "gw2": ["n4", "n5"], "gw3": ["m1"]}
    assert shares.peers["gw1"] == ["gw1", "gw2"] and shares.direct == ["x"]


def test_gateways_split_targets_evenly_in_contiguous_shares() -> None:
    shares = plan([f"n{k}" for k in range(1, 11)], ["a", "b", "c"]).shares
    assert {g: len(t) for g, t in shares.items()} == {"a": 4, "b": 3, "c": 3}
    assert shares["b"] == ["n5", "n6", "n7"]


@pytest.mark.parametrize(("changes", "field"), [
    ({"gateways": []}, "gateways"),
    ({"gateways": "gw[1-"}, "gateways"),
    ({"gateways": "gw1", "topology": "x"}, "gateways"),
    ({"gateways": "gw1", "exec_type": "SSH"}, "gateways"),
])
def test_wrong_gateways_keyword_is_named(changes: Dict[str, Any], field: str) -> None:
    with pytest.raises(ExecInfoError) as caught:
        pssh_info_without_cluster(**changes)
    assert caught.value.field == field


def test_frames_round_trip_in_chunks_of_any_size() -> None:
    stream = encode({"kind": "out", "h": 3}, b"\x00\xff raw") + encode({"kind": "done"})
    parser, frames = Parser(), []
    for k in range(len(stream)):
        frames += parser.feed(stream[k:k + 1])
    parser.close()
    assert [(f.header, f.payload) for f in frames] == [({"kind": "out", "h": 3}, b"\x00\xff raw"),
                                                       ({"kind": "done"}, b"")]


@pytest.mark.parametrize(("data", "words"), [
    (b"Welcome to node1\n", "not a fabexec frame stream"),
    (HEAD.pack(MAGIC, MAX_HEADER + 1, 0), "too large"),
    (HEAD.pack(MAGIC, 2, 0) + b"[]", "not an object with a kind"),
    (HEAD.pack(MAGIC, 4, 0) + b"{no}", "not JSON"),
])
def test_bad_frame_is_a_typed_error(data: bytes, words: str) -> None:
    with pytest.raises(FrameError, match=words):
        Parser().feed(data)


def test_frame_cut_short_is_a_typed_error() -> None:
    parser = Parser()
    assert parser.feed(encode({"kind": "done"})[:-1]) == []
    with pytest.raises(FrameError, match="cut inside a frame"):
        parser.close()
