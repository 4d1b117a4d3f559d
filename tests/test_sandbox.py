"""The sandbox: real sshd daemons on loopback, reached by OpenSSH, paramiko and Fabric.

Most tests share the session's 4-node ``cluster`` (tests/fixtures_sandbox.py); those
that stop a cluster start a small one of their own.
"""

from __future__ import annotations

import socket
import subprocess
import uuid
from itertools import islice
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import paramiko
import pytest
from fabric import Config, Connection

from fabexec import sandbox
from fabexec.sandbox import SandboxCluster, nodes
from tests.clusters import eventually, unique_seconds


def ssh(cluster: SandboxCluster, host: str, command: str, *, user: Optional[str] = None,
        stdin: Optional[str] = None, timeout: float = 30, known_hosts: Optional[Path] = None,
        ) -> subprocess.CompletedProcess:
    """The OpenSSH client, as a user would run it with the sandbox's ssh_config."""
    argv = ["ssh", "-F", str(cluster.ssh_config), "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=10"]
    if user:
        argv += ["-l", user]
    if known_hosts:
        argv += ["-o", f"UserKnownHostsFile={known_hosts}"]
    return subprocess.run([*argv, host, command], input=stdin, capture_output=True, text=True,
                          timeout=timeout)


def connect(cluster: SandboxCluster, host: str) -> paramiko.SSHClient:
    """A paramiko client that trusts only the sandbox's known_hosts and offers only its key."""
    client = paramiko.SSHClient()
    client.load_host_keys(str(cluster.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    ip, port = cluster.addresses[host]
    client.connect(ip, port, username=cluster.user, key_filename=str(cluster.key),
                   look_for_keys=False, allow_agent=False, timeout=10, banner_timeout=10,
                   auth_timeout=10)
    return client


def expected_hostname(cluster: SandboxCluster, host: str) -> str:
    return host if cluster.own_hostnames else socket.gethostname()


def cat_session(client: paramiko.SSHClient) -> paramiko.Channel:
    """A session running ``cat``: what it is sent, it echoes, while the node is alive."""
    transport = client.get_transport()
    assert transport is not None
    channel = transport.open_session(timeout=10)
    channel.exec_command("cat")
    channel.settimeout(10)
    return channel


def read_line(channel: paramiko.Channel) -> bytes:
    data = b""
    for _ in range(100):  # bounded: a line is a few bytes
        chunk = channel.recv(100)
        data += chunk
        if not chunk or data.endswith(b"\n"):
            break
    return data


def running_here(seconds: str) -> List[int]:
    """The ``sleep {seconds}`` processes, by the PIDs this machine sees (it sees every
    node's processes, while a node with a PID namespace of its own numbers them its way)."""
    found = subprocess.run(["pgrep", "-f", f"^sleep {seconds}$"], capture_output=True,
                           text=True, timeout=30)
    return [int(pid) for pid in found.stdout.split()]


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in "ZX"


@pytest.fixture
def small(tmp_path: Path) -> Iterator[SandboxCluster]:
    """A 2-node cluster of the test's own, beside the session's, stopped whatever happens."""
    try:
        yield sandbox.up(2, tmp_path / "small")
    finally:
        sandbox.down(tmp_path / "small")


def test_openssh_reaches_every_node_by_alias(cluster: SandboxCluster) -> None:
    for host in cluster.hosts:
        result = ssh(cluster, host, "hostname")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == expected_hostname(cluster, host)


def test_paramiko_reaches_every_node_with_key_and_known_hosts(cluster: SandboxCluster) -> None:
    for host in cluster.hosts:
        client = connect(cluster, host)
        try:
            _, stdout, _ = client.exec_command("hostname", timeout=10)
            assert stdout.read().decode().strip() == expected_hostname(cluster, host)
        finally:
            client.close()


def test_fabric_reads_the_ssh_config(cluster: SandboxCluster) -> None:
    config = Config(runtime_ssh_path=str(cluster.ssh_config))
    with Connection("node2", config=config) as connection:
        result = connection.run("hostname", hide=True, in_stream=False, timeout=10)
    assert result.stdout.strip() == expected_hostname(cluster, "node2")


def test_changed_host_key_is_refused(cluster: SandboxCluster, tmp_path: Path) -> None:
    lines = cluster.known_hosts.read_text().splitlines()
    node1_key = lines[0].split(None, 1)[1]
    names_of_node2 = lines[1].split(None, 1)[0]
    forged = tmp_path / "known_hosts"
    forged.write_text(f"{names_of_node2} {node1_key}\n")
    result = ssh(cluster, "node2", "true", known_hosts=forged)
    assert result.returncode == 255
    assert "HOST IDENTIFICATION HAS CHANGED" in result.stderr


def test_nodes_have_their_own_loopback_addresses(cluster: SandboxCluster) -> None:
    ips = [ip for ip, _ in cluster.addresses.values()]
    assert len(set(ips)) == len(cluster.hosts)
    assert all(ip.startswith("127.") and not ip.startswith("127.0.2.") for ip in ips)


def test_loopback_ips_skip_the_reserved_range() -> None:
    ips = list(islice(sandbox.loopback_ips(), 600))
    assert ips[0] == "127.0.1.1"
    assert ips[253:255] == ["127.0.1.254", "127.0.3.1"]
    assert len(set(ips)) == 600
    assert not [ip for ip in ips if ip.startswith("127.0.2.") or ip.endswith((".0", ".255"))]


def test_hostfile_lists_every_alias(cluster: SandboxCluster) -> None:
    assert cluster.hostfile.read_text().split() == ["node1", "node2", "node3", "node4"]


def test_load_gives_back_the_running_cluster(cluster: SandboxCluster) -> None:
    assert SandboxCluster.load(cluster.state_dir) == cluster
    assert set(cluster.status().values()) == {"running"}


def test_freeze_hangs_a_running_command_until_thaw(cluster: SandboxCluster) -> None:
    client = connect(cluster, "node3")
    try:
        channel = cat_session(client)
        channel.sendall(b"before\n")
        assert read_line(channel) == b"before\n"
        cluster.freeze("node3")
        try:
            assert cluster.status()["node3"] == "frozen"
            channel.sendall(b"during\n")
            channel.settimeout(0.5)
            with pytest.raises(socket.timeout):
                channel.recv(100)
        finally:
            cluster.thaw("node3")
        channel.settimeout(10)
        assert read_line(channel) == b"during\n"
    finally:
        client.close()


def test_frozen_node_answers_no_new_connection(cluster: SandboxCluster) -> None:
    cluster.freeze("node3")
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            ssh(cluster, "node3", "true", timeout=0.5)
    finally:
        cluster.thaw("node3")
    assert ssh(cluster, "node3", "true").returncode == 0


def test_crash_ends_sessions_but_node_accepts_new_ones(cluster: SandboxCluster) -> None:
    daemon = cluster.pid("node4")
    client = connect(cluster, "node4")
    try:
        channel = cat_session(client)
        channel.sendall(b"ping\n")
        assert read_line(channel) == b"ping\n"
        cluster.crash("node4")
        assert channel.recv(100) == b""  # EOF: the session is gone
    finally:
        client.close()
    assert cluster.pid("node4") == daemon
    result = ssh(cluster, "node4", "hostname")
    assert result.stdout.strip() == expected_hostname(cluster, "node4")


def test_sandbox_user_has_passwordless_sudo(cluster: SandboxCluster) -> None:
    if not cluster.sudo:
        pytest.skip("the sandbox has sudo only when started as root")
    result = ssh(cluster, "node1", "sudo -n whoami")
    assert (result.returncode, result.stdout.strip(), result.stderr) == (0, "root", "")


def test_password_user_sudo_needs_a_password(cluster: SandboxCluster) -> None:
    if not cluster.password_user:
        pytest.skip("the sandbox has a password user only when started as root")
    result = ssh(cluster, "node1", "sudo -n true", user=cluster.password_user)
    assert result.returncode == 1
    assert "password is required" in result.stderr


def test_password_user_sudo_accepts_its_password(cluster: SandboxCluster) -> None:
    if not cluster.password_user:
        pytest.skip("the sandbox has a password user only when started as root")
    result = ssh(cluster, "node1", "sudo -S -p '' whoami", user=cluster.password_user,
                 stdin=f"{cluster.sudo_password}\n")
    assert (result.returncode, result.stdout.strip()) == (0, "root")


def test_down_stops_its_daemons_and_sessions_only(cluster: SandboxCluster,
                                                  small: SandboxCluster) -> None:
    daemons = [small.pid(host) for host in small.hosts]
    others = {host: cluster.pid(host) for host in cluster.hosts}
    seconds = unique_seconds()
    client = connect(small, "node1")
    try:
        client.exec_command(f"exec sleep {seconds}")
        assert eventually(lambda: len(running_here(seconds)) == 1)
        session = running_here(seconds)[0]
        sandbox.down(small.state_dir)
    finally:
        client.close()
    assert None not in daemons
    assert not [pid for pid in [*daemons, session] if alive(pid)]
    assert {host: cluster.pid(host) for host in cluster.hosts} == others
    assert set(cluster.status().values()) == {"running"}


def test_down_stops_what_left_the_session_tree(small: SandboxCluster) -> None:
    if not small.own_hostnames:
        pytest.skip("without a UTS namespace the node cannot tell its escaped processes")
    seconds = unique_seconds()
    ssh(small, "node2", f"setsid sleep {seconds} </dev/null >/dev/null 2>&1 &")
    assert eventually(lambda: len(running_here(seconds)) == 1)
    escaped = running_here(seconds)[0]
    sandbox.down(small.state_dir)
    assert not alive(escaped)


def test_down_removes_what_nodes_wrote_in_their_own_folders(small: SandboxCluster) -> None:
    if not small.own_folders:
        pytest.skip("the nodes share this machine's folders (no mount namespaces here)")
    name = f"fabexec-left-{uuid.uuid4().hex}"
    wrote = ssh(small, "node1", f"touch /tmp/{name} /var/tmp/{name} ~/{name}")
    assert wrote.returncode == 0, wrote.stderr
    sandbox.down(small.state_dir)
    assert not (small.node_dir("node1") / "tmp").exists()
    again = sandbox.up(2, small.state_dir)
    seen = ssh(again, "node1", f"ls /tmp/{name} /var/tmp/{name} ~/{name}")
    assert seen.returncode == 2 and seen.stdout == "", seen.stdout


def test_up_gives_a_node_another_port_when_its_port_was_taken_after_the_check(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Other sandboxes on this machine use the same addresses: one may bind a node's port
    between `up`'s choice of it and the node's sshd. Here the first choice is a port this
    test holds."""
    holder = socket.socket()
    holder.bind((next(sandbox.loopback_ips()), 0))
    holder.listen()
    held = holder.getsockname()
    choose, choices = nodes._addresses, []

    def first_choice_taken(count: int, as_root: bool) -> List[Tuple[str, int]]:
        choices.append(count)
        return [held] if len(choices) == 1 else choose(count, as_root)

    monkeypatch.setattr(nodes, "_addresses", first_choice_taken)
    try:
        cluster = sandbox.up(1, tmp_path / "taken")
        assert len(choices) == 2 and cluster.addresses["node1"] != held
        assert ssh(cluster, "node1", "true").returncode == 0
    finally:
        sandbox.down(tmp_path / "taken")
        holder.close()


def test_down_twice_is_harmless(small: SandboxCluster) -> None:
    sandbox.down(small.state_dir)
    sandbox.down(small.state_dir)
    assert small.status() == {"node1": "stopped", "node2": "stopped"}


def test_up_reuses_a_running_cluster_of_the_same_size(small: SandboxCluster) -> None:
    again = sandbox.up(2, small.state_dir)
    assert [again.pid(host) for host in again.hosts] == [small.pid(h) for h in small.hosts]


def test_up_restarts_a_cluster_of_another_size(small: SandboxCluster) -> None:
    before = small.pid("node1")
    bigger = sandbox.up(3, small.state_dir)
    assert bigger.hosts == ["node1", "node2", "node3"]
    assert set(bigger.status().values()) == {"running"}
    assert not alive(before)


# --- nodes as separate as this machine allows ------------------------------------------


@pytest.mark.parametrize("folder", ["/tmp", "/var/tmp", "$HOME", "/dev/shm"])
def test_a_file_written_on_one_node_is_not_on_another(cluster: SandboxCluster,
                                                      folder: str) -> None:
    if not cluster.own_folders:
        pytest.skip("the nodes share this machine's folders (no mount namespaces here)")
    path = f"{folder}/fabexec-node-own-{uuid.uuid4().hex}"
    written = ssh(cluster, "node1", f'echo node1 > "{path}" && cat "{path}"')
    assert (written.returncode, written.stdout) == (0, "node1\n"), written.stderr
    try:
        seen = ssh(cluster, "node2", f'ls -d "{path}"')
        assert seen.returncode == 2 and "No such file" in seen.stderr, seen.stdout
        assert not Path(path.replace("$HOME", str(Path.home()))).exists(), "the machine has it"
    finally:
        ssh(cluster, "node1", f'rm -f "{path}"')


def test_ps_on_a_node_lists_that_node_only(cluster: SandboxCluster) -> None:
    if not cluster.own_processes:
        pytest.skip("the nodes share this machine's process table (no PID namespaces here)")
    seconds = unique_seconds()
    started = ssh(cluster, "node2", f"setsid sleep {seconds} </dev/null >/dev/null 2>&1 & "
                  "echo started")
    assert started.stdout == "started\n", started.stderr
    here = subprocess.Popen(["sleep", f"{seconds}1"])
    try:
        on_node1 = ssh(cluster, "node1", "ps -eo args")
        on_node2 = ssh(cluster, "node2", "ps -eo args")
        assert on_node1.returncode == on_node2.returncode == 0, on_node1.stderr + on_node2.stderr
        assert f"sleep {seconds}" in on_node2.stdout.splitlines()
        assert not [line for line in on_node1.stdout.splitlines() if seconds in line], \
            "node1 lists a process of node2 or of this machine"
        assert f"sleep {seconds}1" not in on_node2.stdout
    finally:
        here.kill()
        here.wait()
        ssh(cluster, "node2", f"pkill -f '^sleep {seconds}'")
