"""Fanning out through gateways (issue 15): the same results as direct PSSH, and faults.

The gateways are sandbox nodes whose ``python3`` is Debian's, without fabexec or
paramiko: the first run over each connection brings fabexec there. What is left
on a node (gateway processes, temporary folders, commands) is looked at on the
node itself, over OpenSSH.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from fabexec import Exec, bundle, close_connections, sandbox, tarstream
from fabexec.errors import (
    CommandTimeoutError,
    ExecInfoError,
    GatewayError,
    HostStoppedAnsweringError,
    UnreachableError,
)
from fabexec.frames import HEAD, MAGIC, MAX_HEADER, FrameError, Parser, encode
from fabexec.gateway import Writer
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


def tree_info(cluster: SandboxCluster, **changes: Any) -> Any:
    """`pssh_info` whose handshakes may take 30 s: a gateway's many at once on a machine
    at load 100 and more outlast the default 10 s (a refused host is refused at once)."""
    return pssh_info(cluster, **{"connect_timeout": 30, **changes})


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
        runs[way] = Exec(command, tree_info(big, hosts=[*targets, "ghost"], ssh_config=config,
                                            pipe_stdout=str(folder / "{host}.out"),
                                            **more))
    direct, tree = runs["direct"], runs["tree"]
    assert results(tree) == results(direct)
    assert {h: tree.stdout[h] for h in targets} == {h: f"out {h}\n" for h in targets}
    assert isinstance(tree.errors["ghost"], UnreachableError)
    for host in targets:
        out = (tmp_path / "tree" / f"{host}.out").read_bytes()
        assert out == (tmp_path / "direct" / f"{host}.out").read_bytes() == f"out {host}\n".encode()
    assert gateway_leftovers(big, gateways) == {}


@pytest.mark.parametrize("settings", [
    {"env": {"GREETING": "it's \"$5\""}, "cwd": "/usr", "sudo": True,
     "sudo_password": "cluster's", "user": "password user"},
    {"stdin": b"line 1\nline 2", "max_parallel": 1, "forward_env": ["PATH"]},
], ids=["env-cwd-sudo-password", "stdin-max-parallel"])
def test_run_keywords_act_on_the_targets_as_directly(cluster: SandboxCluster,
                                                    settings: Dict[str, Any]) -> None:
    if settings.get("sudo"):
        if cluster.password_user is None:
            pytest.skip("no user whose sudo asks for a password")
        settings = {**settings, "user": cluster.password_user,
                    "sudo_password": cluster.sudo_password}
    command = 'echo "$GREETING"; pwd; id -un; head -c 100'
    hosts = ["node2", "node3", "node4"]
    direct = Exec(command, tree_info(cluster, hosts=hosts, **settings))
    tree = Exec(command, tree_info(cluster, hosts=hosts, gateways="node1", **settings))
    assert results(tree) == results(direct)
    assert direct.exit_codes == {h: 0 for h in hosts}
    first = direct.stdout["node2"].splitlines()
    assert first[:3] == ([settings["env"]["GREETING"], "/usr", "root"] if "env" in settings
                         else ["", f"/home/{cluster.user}", cluster.user])


def test_ctrl_c_on_the_client_ends_every_command_through_the_gateways(
        cluster: SandboxCluster) -> None:
    import signal
    import subprocess
    import sys
    seconds = unique_seconds()
    hosts = ["node2", "node3"]
    client = subprocess.Popen(
        [sys.executable, "-m", "fabexec", "run", "-F", str(cluster.ssh_config), "-H",
         "node[2-3]", "--gateways", "node1", "--connect-timeout", "30", "--",
         escaping_tree(seconds)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    try:
        assert eventually(lambda: all(len(sleeping(cluster, h, seconds)) == TREE_SIZE
                                      for h in hosts))
        client.send_signal(signal.SIGINT)
        assert client.wait(120) == 130
        assert {h: sleeping(cluster, h, seconds) for h in hosts} == {h: [] for h in hosts}
        assert gateway_leftovers(cluster, ["node1"]) == {}
    finally:
        if client.poll() is None:
            client.kill()
        end_sleeping(cluster, seconds)


def test_gateway_whose_python_lacks_fabexec_gets_it_once_per_connection(
        cluster: SandboxCluster) -> None:
    lacking = openssh(cluster, "node1", "command -v python3; python3 -c 'import paramiko'")
    assert lacking.stdout.strip() == "/usr/bin/python3" and lacking.returncode != 0
    close_connections()  # a copy of an earlier test's connection is not this one's
    kept = "stat -c '%n %i' /dev/shm/fabexec-lib-* /tmp/fabexec-lib-* 2>/dev/null; true"
    seen = []
    for _ in range(2):
        node = Exec("hostname", tree_info(cluster, hosts=["node2", "node3"], gateways="node1"))
        assert node.stdout == {"node2": "node2\n", "node3": "node3\n"}
        seen.append(openssh(cluster, "node1", kept).stdout.split())
        assert gateway_leftovers(cluster, ["node1"]) == {}  # the runs' own folders went
    assert len(seen[0]) == 2 and seen[1] == seen[0]  # one copy, pushed once, kept
    close_connections()
    assert openssh(cluster, "node1", f"{kept}; pgrep -af '[f]abexec-library'").stdout == ""


def test_cli_runs_through_gateways_with_json_lines(cluster: SandboxCluster) -> None:
    import subprocess
    import sys
    done = subprocess.run(
        [sys.executable, "-m", "fabexec", "run", "-F", str(cluster.ssh_config), "-H",
         "node[2-3]", "--gateways", "node1", "--connect-timeout", "30", "--json", "--", "hostname"],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    lines = {o["host"]: o for o in map(json.loads, done.stdout.splitlines())}
    assert done.returncode == 0, done.stderr
    assert {h: (o["stdout"], o["exit_code"]) for h, o in lines.items()} == {
        "node2": ("node2\n", 0), "node3": ("node3\n", 0)}


def test_put_through_gateways_places_what_a_direct_put_places(cluster: SandboxCluster,
                                                              tmp_path: Path) -> None:
    from fabexec import Put
    app = tmp_path / "app"
    (app / "sub").mkdir(parents=True)
    (app / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (app / "run.sh").chmod(0o750)
    (app / "sub" / "data").write_bytes(os.urandom(3 << 20))
    (app / "link").symlink_to("run.sh")
    (tmp_path / "single.txt").write_text("single\n")
    hosts, sources = ["node2", "node3"], [str(app), str(tmp_path / "single.txt")]
    folder = f"/tmp/put-{unique_seconds()}"
    direct = Put(sources, f"{folder}/direct/", tree_info(cluster, hosts=hosts))
    tree = Put(sources, f"{folder}/tree/", tree_info(cluster, hosts=hosts, gateways="node1"))
    assert tree.exit_codes == direct.exit_codes == {h: 0 for h in hosts}
    assert {h: [p.replace("/tree/", "/direct/") for p in tree.copied[h]] for h in hosts} == \
        direct.copied
    listing = ("cd {} && find . -printf '%P %m %y %l %s\\n' | sort && "
               "md5sum app/sub/data | cut -c-32")
    for host in hosts:
        seen = [openssh(cluster, host, listing.format(f"{folder}/{way}")).stdout
                for way in ("direct", "tree")]
        assert seen[0] == seen[1] and "run.sh 750 f" in seen[0]
    assert gateway_leftovers(cluster, ["node1"]) == {}


def test_put_through_gateways_keeps_every_mode_as_a_direct_put(
        cluster: SandboxCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Group and other write bits too, which tar's own filter drops, on a gateway whose
    Python has that filter (ours; Debian's python3 may not); access times too."""
    from fabexec import Put
    monkeypatch.setenv(bundle.PYTHON_VAR, sys.executable)
    app = tmp_path / "app"
    (app / "sub" / "deeper").mkdir(parents=True)
    (app / "empty").mkdir()
    modes = {"shared": 0o664, "open": 0o777, "secret": 0o600, "sub/deeper/tool": 0o775,
             "sub/group": 0o660}
    for number, name in enumerate(modes):
        (app / name).write_bytes(os.urandom(1000 + number))
    (app / "link").symlink_to("shared")
    (tmp_path / "alias").symlink_to("app/sub")  # a link given by name: what it names
    folders = {"empty": 0o770, "sub/deeper": 0o777, "sub": 0o2775, "": 0o775}
    folder = f"/tmp/put-modes-{unique_seconds()}"
    done = {}
    for way, more in (("direct", {}), ("tree", {"gateways": "node1"})):
        for number, (name, mode) in enumerate({**modes, **folders}.items()):
            (app / name).chmod(mode)  # and the times a read of the last copy changed
            os.utime(app / name, (1e9 + number, 981173106 + number))
        done[way] = Put([str(app), str(tmp_path / "alias")], f"{folder}/{way}/",
                        tree_info(cluster, hosts=["node2"], **more))
    assert done["tree"].exit_codes == done["direct"].exit_codes == {"node2": 0}, \
        done["tree"].errors
    # alias names app/sub, which the copy of app read first: its access times are then.
    listing = (f"cd {folder} && find . -mindepth 2 -printf '%P %m %y %l %s %T@ %A@\\n' | "
               "sort | awk '$3 == \"l\" {{ $NF = \"\"; $(NF-1) = \"\" }} "
               "$1 ~ /^[a-z]+\\/alias/ {{ $NF = \"\" }} 1'; "
               "for f in $(find direct -type f | sort); do cmp $f tree/${f#direct/}; done")
    seen = openssh(cluster, "node2", listing)  # times read before any file is
    lines = seen.stdout.splitlines()
    assert seen.returncode == 0 and not seen.stderr
    assert [line.replace("tree/", "direct/", 1) for line in lines if line.startswith("tree/")] \
        == [line for line in lines if line.startswith("direct/")]
    for number, (name, mode) in enumerate(modes.items()):
        assert f"direct/app/{name} {mode:o} f  {1000 + number} {981173106 + number}." \
            in seen.stdout
    assert "direct/app/empty 770 d" in seen.stdout and "direct/app/sub 2775 d" in seen.stdout
    assert "direct/alias 2775 d" in seen.stdout and "direct/alias/group 660 f" in seen.stdout
    assert gateway_leftovers(cluster, ["node1"]) == {}


# --- faults ------------------------------------------------------------------------------


def test_refused_gateway_hands_its_targets_to_another(cluster: SandboxCluster,
                                                      ghost_config: Path) -> None:
    node = Exec("hostname", tree_info(cluster, ssh_config=ghost_config,
                                      gateways=["ghost", "node1"]))
    assert node.stdout == {h: f"{h}\n" for h in cluster.hosts}
    assert node.errors == {}


def test_no_gateway_left_ends_targets_with_255_naming_the_gateway(
        cluster: SandboxCluster, ghost_config: Path) -> None:
    node = Exec("hostname", tree_info(cluster, ssh_config=ghost_config,
                                      gateways="ghost"))
    assert set(node.exit_codes.values()) == {255}
    for host in cluster.hosts:
        error = node.errors[host]
        assert isinstance(error, GatewayError) and error.gateway == "ghost"
        assert "through gateway ghost" in str(error)


def _only(cluster: SandboxCluster, host: str) -> str:
    return f'[ "$(hostname)" = {host} ]'


def sleeping_on_node3(cluster: SandboxCluster, tmp_path: Path, seconds: str,
                      **changes: Any) -> Exec:
    """``sleep {seconds}`` on node3 and ``echo quick`` on node4, through gateways, async;
    returned once node3's command said it started."""
    command = (f'if {_only(cluster, "node3")}; then echo started; sleep {seconds}; '
               'else echo quick; fi')
    node = Exec(command, tree_info(cluster, hosts=["node3", "node4"], exec_async=True,
                                   pipe_stdout=str(tmp_path / "{host}.out"), **changes))
    assert eventually(lambda: (tmp_path / "node3.out").read_bytes() == b"started\n")
    return node


def test_gateway_killed_mid_run_ends_its_started_targets_through_a_peer_with_255(
        cluster: SandboxCluster, tmp_path: Path) -> None:
    seconds = unique_seconds()
    try:
        node = sleeping_on_node3(cluster, tmp_path, seconds, gateways=["node1", "node2"])
        cluster.crash("node1")
        node.wait()
        assert node.exit_codes == {"node3": 255, "node4": 0}
        error = node.errors["node3"]
        assert isinstance(error, GatewayError) and error.gateway == "node1"
        assert "ended through gateway node2" in str(error)
        assert sleeping(cluster, "node3", seconds) == []
        assert node.stdout["node4"] == "quick\n"
        assert gateway_leftovers(cluster, ["node1"]) == {}
    finally:
        end_sleeping(cluster, seconds)


def test_a_target_a_lost_gateway_had_not_reported_is_not_run_elsewhere(
        cluster: SandboxCluster, tmp_path: Path) -> None:
    """node4 (frozen) is still being connected to when its gateway dies: the gateway
    had the job, so node4's command may have started as far as the client can tell; it
    is not sent again through node2 but ends with 255 naming the gateway, never run."""
    seconds = unique_seconds()
    marker = f"/tmp/fabexec-ran-{seconds}"
    command = (f'if {_only(cluster, "node3")}; then echo started; sleep {seconds}; '
               f'elif {_only(cluster, "node4")}; then touch {marker}; else echo quick; fi')
    cluster.freeze("node4")
    try:
        # node1 serves node3 and node4, node2 serves node1 (a target too, done at once).
        node = Exec(command, tree_info(cluster, hosts=["node3", "node4", "node1"],
                                       exec_async=True, gateways=["node1", "node2"],
                                       pipe_stdout=str(tmp_path / "{host}.out")))
        assert eventually(lambda: (tmp_path / "node3.out").read_bytes() == b"started\n")
        assert eventually(lambda: (tmp_path / "node1.out").read_bytes() == b"quick\n")
        cluster.crash("node1")
        cluster.thaw("node4")
        node.wait()
        assert {h: node.exit_codes[h] for h in ("node3", "node4")} == {"node3": 255, "node4": 255}
        for host in ("node3", "node4"):
            error = node.errors[host]
            assert isinstance(error, GatewayError) and error.gateway == "node1"
        assert openssh(cluster, "node4", f"test -e {marker}").returncode == 1
        assert sleeping(cluster, "node3", seconds) == []
    finally:
        cluster.thaw("node4")
        end_sleeping(cluster, seconds)
        openssh(cluster, "node4", f"rm -f {marker}")


def test_frozen_gateway_is_noticed_by_its_keepalives(cluster: SandboxCluster,
                                                    tmp_path: Path) -> None:
    seconds = unique_seconds()
    try:
        node = sleeping_on_node3(cluster, tmp_path, seconds, gateways=["node1", "node2"],
                                 keepalive_interval=0.5, keepalive_count=2)
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


def test_target_frozen_behind_a_gateway_is_noticed_by_the_gateways_keepalives(
        cluster: SandboxCluster, tmp_path: Path) -> None:
    seconds = unique_seconds()
    try:
        node = sleeping_on_node3(cluster, tmp_path, seconds, gateways="node1",
                                 keepalive_interval=0.5, keepalive_count=2)
        cluster.freeze("node3")
        try:
            node.wait()
        finally:
            cluster.thaw("node3")
        assert node.exit_codes == {"node3": 255, "node4": 0}
        assert type(node.errors["node3"]) is HostStoppedAnsweringError
        # The gateway's keepalives are this run's, not its defaults (15 s x 3).
        assert "2 keepalives unanswered over 1 s" in str(node.errors["node3"])
    finally:
        end_sleeping(cluster, seconds)


def test_gateway_without_python3_ends_targets_with_255_saying_why(
        cluster: SandboxCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(bundle.PYTHON_VAR, "/nonexistent/python3")
    node = Exec("hostname", tree_info(cluster, hosts=["node2", "node3"], gateways="node1"))
    assert node.exit_codes == {"node2": 255, "node3": 255}
    for error in node.errors.values():
        assert isinstance(error, GatewayError) and error.gateway == "node1"
        assert "/nonexistent/python3" in str(error)


def test_kill_ends_every_command_on_every_target_and_leaves_no_gateway(
        cluster: SandboxCluster) -> None:
    seconds = unique_seconds()
    try:
        node = Exec(escaping_tree(seconds), tree_info(cluster, exec_async=True,
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
        node = Exec(escaping_tree(seconds), tree_info(cluster, timeout=3, gateways="node1"))
        assert set(node.exit_codes.values()) == {124}, node.errors
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
    node = Exec("hostname", tree_info(cluster, topology=str(topology)))
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


def test_get_through_gateways_places_what_a_direct_get_places(
        cluster: SandboxCluster, ghost_config: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Unpacked beside their destination, not in the system's temporary folder (which
    here does not exist), and moved into place from there."""
    from fabexec import Get
    folder = f"/tmp/get-{unique_seconds()}"
    make = (f"mkdir -p {folder}/app/ro && cd {folder} && head -c 2500000 /dev/urandom > app/big"
            " && printf '#!/bin/sh\\necho %s\\n' $(hostname) > app/run.sh && chmod 750 "
            "app/run.sh && chmod 664 app/big && ln -s run.sh app/link && "
            "echo $(hostname) > app/ro/f && chmod 500 app/ro && "
            "touch -h -d '2001-02-03 04:05:06' app/big app/link app && "
            "[ $(hostname) = node2 ] && echo only-here > single; true")
    hosts = ["node2", "node3"]
    assert all(openssh(cluster, h, make).returncode == 0 for h in hosts)
    sources = [f"{folder}/app", f"{folder}/single"]
    got = {}
    for way, more in (("direct", {}), ("tree", {"gateways": "node1"})):
        (tmp_path / way / "node2" / "app").mkdir(parents=True)  # what was there before:
        (tmp_path / way / "node2" / "app" / "big").write_text("old\n")  # replaced
        (tmp_path / way / "node2" / "app" / "extra").write_text("kept\n")
        os.utime(tmp_path / way / "node2" / "app" / "extra", (1e9, 1e9))
        with monkeypatch.context() as patch:
            patch.setattr(tempfile, "tempdir", str(tmp_path / "no-tmp"))
            got[way] = Get(sources, str(tmp_path / way), tree_info(
                cluster, hosts=[*hosts, "ghost"], ssh_config=ghost_config, **more))
    direct, tree = got["direct"], got["tree"]
    assert tree.exit_codes == direct.exit_codes == {"node2": 0, "node3": 1, "ghost": 255}
    assert {h: (type(e), str(e).replace("/tree", "/direct")) for h, e in tree.errors.items()} \
        == {h: (type(e), str(e)) for h, e in direct.errors.items()}
    assert {h: sorted(p.replace("/tree/", "/direct/") for p in tree.copied[h]) for h in hosts} \
        == {h: sorted(direct.copied[h]) for h in hosts}
    listing = ("cd {} && find . -mindepth 2 -printf '%P %m %y %l %s %T@\\n' | sort | "
               "awk '$3 == \"l\" {{ $NF = \"\" }} 1' && md5sum */app/big")  # a link: made now
    seen = [subprocess.run(listing.format(tmp_path / way), shell=True, capture_output=True,
                           text=True, check=True).stdout for way in ("direct", "tree")]
    assert seen[0] == seen[1]
    assert "node2/app/run.sh 750 f" in seen[0] and "node2/single" in seen[0]
    assert "node2/app/big 664 f  2500000 981173106." in seen[0]  # its mode and time
    assert "node3/app/ro 500 d" in seen[0]
    assert (tmp_path / "tree/node3/app/ro/f").read_text() == "node3\n"
    assert (tmp_path / "tree/node2/app/extra").read_text() == "kept\n"
    assert gateway_leftovers(cluster, ["node1"]) == {}
    assert not list(tmp_path.glob("**/.fabexec-*")) and not (tmp_path / "no-tmp").exists()


def test_get_through_gateways_copies_where_no_rename_reaches(cluster: SandboxCluster,
                                                             tmp_path: Path) -> None:
    """A folder of the destination that is another filesystem (here a link to /dev/shm)
    gets its files copied, as directly."""
    from fabexec import Get
    shm = Path(tempfile.mkdtemp(prefix="get-", dir="/dev/shm"))
    if os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("/dev/shm is on the filesystem of the tests' temporary folders")
    source = f"/tmp/get-{unique_seconds()}/source"
    make = (f"mkdir -p {source}/ro && cd {source} && head -c 3000000 /dev/urandom > big && "
            "echo f > ro/f && chmod 664 big && chmod 500 ro && "
            "touch -d '2001-02-03 04:05:06' big")
    assert openssh(cluster, "node2", make).returncode == 0
    try:
        for way, more in (("direct", {}), ("tree", {"gateways": "node1"})):
            (shm / way).mkdir()
            (tmp_path / way / "node2").mkdir(parents=True)
            (tmp_path / way / "node2" / "source").symlink_to(shm / way)
            done = Get(source, str(tmp_path / way), tree_info(cluster, hosts=["node2"], **more))
            assert done.exit_codes == {"node2": 0}, done.errors
        listing = ("cd {} && find . -printf '%P %m %y %s %T@\\n' | sort && md5sum big ro/f")
        seen = [subprocess.run(listing.format(shm / way), shell=True, capture_output=True,
                               text=True, check=True).stdout for way in ("direct", "tree")]
        assert seen[0] == seen[1] and "big 664 f 3000000 981173106." in seen[0]
        assert not list(tmp_path.glob("**/.fabexec-*"))
    finally:
        subprocess.run(["rm", "-rf", str(shm)], check=True)


@pytest.mark.parametrize(("probe", "words"), [
    ({"python": [3, 8, 10], "impl": "cpython", "platform": "linux-x86_64"}, "3.8.10"),
    ({"python": [3, 10, 1], "impl": "cpython", "platform": sysconfig.get_platform()},
     "compiled packages"),
    ({"python": [*sys.version_info[:3]], "impl": "cpython", "platform": "linux-aarch64"},
     "linux-aarch64"),
])
def test_gateway_python_that_cannot_take_our_packages_is_named(probe: Dict[str, Any],
                                                               words: str) -> None:
    if sys.version_info[:2] == (3, 10) and "compiled" in words:
        pytest.skip("this client is 3.10 itself")
    with pytest.raises(bundle.GatewayUnusableError) as caught:
        bundle.check_python("gw1", probe)
    assert caught.value.host == "gw1" and words in str(caught.value)


def test_gateway_python_like_ours_takes_our_packages() -> None:
    bundle.check_python("gw1", {"python": [*sys.version_info[:3]],
                                "impl": sys.implementation.name,
                                "platform": sysconfig.get_platform()})


def test_a_gateway_gathers_hidden_output_twice_as_long_after_each_sending_up_to_a_bound(
        ) -> None:
    read_end, write_end = os.pipe()
    writer = Writer(write_end)
    writer.gather, writer.longest = 0.01, 0.04
    gathered = []
    try:
        for index in range(4):
            writer.send({"kind": "end", "h": index, "code": 0, "error": None})
            frames = Parser().feed(os.read(read_end, 65536))  # once the writer sent it
            assert [f.header["h"] for f in frames] == [index]
            gathered.append(writer.gather)
    finally:
        os.close(read_end)
        os.close(write_end)
    assert gathered == [0.02, 0.04, 0.04, 0.04]


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


def _stream(*members: Any) -> io.BytesIO:
    """A tar stream of ``(name, type, linkname)`` entries, each file 3 bytes."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, link in members:
            member = tarfile.TarInfo(name)
            member.type, member.linkname = kind, link
            member.size = 3 if kind == tarfile.REGTYPE else 0
            tar.addfile(member, io.BytesIO(b"bad") if member.size else None)
    out.seek(0)
    return out


@pytest.mark.parametrize("members", [
    [("../outside", tarfile.REGTYPE, "")],
    [("/tmp/outside", tarfile.REGTYPE, "")],
    [("up", tarfile.SYMTYPE, ".."), ("up/outside", tarfile.REGTYPE, "")],
    [("f", tarfile.REGTYPE, ""), ("outside", tarfile.LNKTYPE, "f")],
    [("outside", tarfile.CHRTYPE, "")],
])
def test_tar_stream_puts_nothing_outside_its_folder_nor_what_a_copy_does_not_make(
        members: List[Any], tmp_path: Path) -> None:
    """On any Python (tar's own filter, where there is one, is not what checks)."""
    (tmp_path / "in").mkdir()
    with pytest.raises(tarstream.RefusedEntryError):
        tarstream.unpack(_stream(*members), str(tmp_path / "in"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]
    assert not os.path.lexists("/tmp/outside")


def test_tar_stream_keeps_a_hard_links_bytes_as_a_file_of_its_own(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a").write_bytes(b"same")
    os.link(tmp_path / "src" / "a", tmp_path / "src" / "b")
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        tarstream.add(tar, str(tmp_path / "src"), "src")
    out.seek(0)
    tarstream.unpack(out, str(tmp_path / "dst"))
    got = [tmp_path / "dst" / "src" / name for name in ("a", "b")]
    assert [p.read_bytes() for p in got] == [b"same", b"same"]
    assert got[0].stat().st_ino != got[1].stat().st_ino
