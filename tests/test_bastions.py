"""Bastions (ProxyJump) and agent forwarding, on the sandbox's real sshd daemons.

A host behind a bastion: the sandbox's nodes share this machine's network, so no
address rule can tell a connection the bastion forwards from one we make (both leave
from 127.0.0.1). What makes ``inner`` reachable only through another node is its name:
``node2`` resolves in the nodes' own /etc/hosts (bound in each node's mount
namespace) and not here, as a private address behind a real bastion does.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from fabexec import Exec, ExecInfoError, MpiExecInfo, SshExecInfo, UnreachableError
from fabexec.mpi import ssh_options
from fabexec.sandbox import SandboxCluster
from tests.agents import new_key, running_agent
from tests.clusters import SPARE_IP, host_block, openssh, ssh_config_with
from tests.test_cli import fabexec

#: A command that prints the node's name and the address its sshd was reached on.
WHERE = 'hostname; set -- $SSH_CONNECTION; echo "$3"'


def free_port(ip: str) -> int:
    with socket.socket() as sock:
        sock.bind((ip, 0))
        return sock.getsockname()[1]


@pytest.fixture
def behind(cluster: SandboxCluster, tmp_path: Path) -> SandboxCluster:
    """The sandbox, once its nodes resolve names that this machine does not."""
    if not cluster.own_hostnames:
        pytest.skip("the sandbox nodes share this machine's /etc/hosts (no mount namespaces)")
    try:
        socket.getaddrinfo("node2", None)
        pytest.skip("this machine resolves node2 itself: it is not behind anything")
    except socket.gaierror:
        pass
    return cluster


def config_with_inner(cluster: SandboxCluster, tmp_path: Path, extra: str = "") -> Path:
    """The cluster's ssh_config, plus ``inner``: node2 by the name only the nodes resolve,
    and ``ghost``: an address where nothing listens."""
    _ip, port = cluster.addresses["node2"]
    inner = host_block(cluster, "inner", ("node2", port)).replace(
        str(cluster.known_hosts), str(tmp_path / "known_hosts")) + extra
    path = ssh_config_with(cluster, tmp_path / "ssh_config",
                           {"ghost": (SPARE_IP, free_port(SPARE_IP))})
    path.write_text(inner + "\n" + path.read_text())
    return path


def where(node: Exec, host: str) -> list:
    assert node.exit_code == 0, (node.errors, node.stderr)
    return node.stdout[host].split()


def test_a_host_only_a_bastion_can_name_is_reached_with_proxy_jump(
        behind: SandboxCluster, tmp_path: Path) -> None:
    config = config_with_inner(behind, tmp_path)
    direct = Exec(WHERE, SshExecInfo(hosts="inner", ssh_config=config, collect_output=True,
                                     hide_output=True))
    assert isinstance(direct.errors["inner"], UnreachableError)  # not from here
    node = Exec(WHERE, SshExecInfo(hosts="inner", ssh_config=config, proxy_jump="node1",
                                   collect_output=True, hide_output=True))
    assert where(node, "inner") == ["node2", behind.addresses["node2"][0]]


def test_proxy_jump_of_the_ssh_config_is_followed(behind: SandboxCluster,
                                                  tmp_path: Path) -> None:
    config = config_with_inner(behind, tmp_path, "    ProxyJump node3\n")
    node = Exec(WHERE, SshExecInfo(hosts="inner", ssh_config=config, collect_output=True,
                                   hide_output=True))
    assert where(node, "inner") == ["node2", behind.addresses["node2"][0]]


def test_a_hop_that_cannot_be_reached_is_the_hosts_error_naming_the_hop(
        behind: SandboxCluster, tmp_path: Path) -> None:
    config = config_with_inner(behind, tmp_path)
    node = Exec(WHERE, SshExecInfo(hosts="inner", ssh_config=config, proxy_jump="ghost",
                                   connect_timeout=10, collect_output=True, hide_output=True))
    error = node.errors["inner"]
    assert isinstance(error, UnreachableError) and node.exit_codes["inner"] == 255
    assert str(error).startswith("inner: cannot reach ProxyJump hop ghost (127.0.2.250:")


def test_a_host_the_hop_cannot_reach_is_its_error_naming_the_hop(
        behind: SandboxCluster, tmp_path: Path) -> None:
    _ip, port = behind.addresses["node2"]
    config = config_with_inner(behind, tmp_path)
    config.write_text(host_block(behind, "closed", ("node2", free_port(SPARE_IP)))
                      + "\n" + config.read_text())
    node = Exec(WHERE, SshExecInfo(hosts="closed", ssh_config=config, proxy_jump="node1",
                                   collect_output=True, hide_output=True))
    error = node.errors["closed"]
    assert isinstance(error, UnreachableError)
    assert "through ProxyJump hop node1" in str(error)


# --- agent forwarding ----------------------------------------------------------------


def hop_to_node2(cluster: SandboxCluster) -> str:
    """On node1: ``ssh node2 hostname`` with no key file at all, only an agent if any."""
    _ip, port = cluster.addresses["node2"]
    return (f"ssh -F /dev/null -o BatchMode=yes -o IdentityFile=/nonexistent-key "
            f"-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR "
            f"-p {port} {cluster.user}@node2 hostname")


@pytest.fixture
def agent(behind: SandboxCluster, monkeypatch: pytest.MonkeyPatch) -> str:
    """A real ssh-agent holding the cluster's key, ours for this test (stopped by PID)."""
    with running_agent([behind.key]) as socket_path:
        monkeypatch.setenv("SSH_AUTH_SOCK", socket_path)
        yield socket_path


def test_forward_agent_lets_a_command_log_in_onward_with_the_callers_agent(
        behind: SandboxCluster, agent: str) -> None:
    assert openssh(behind, "node1", "ls ~/.ssh/id_* 2>/dev/null").stdout == ""  # no key there
    info = dict(hosts="node1", ssh_config=behind.ssh_config, collect_output=True,
                hide_output=True)
    without = Exec(hop_to_node2(behind), SshExecInfo(**info))
    assert without.exit_code == 255 and "Permission denied" in without.stderr["node1"]
    node = Exec(hop_to_node2(behind), SshExecInfo(**info, forward_agent=True))
    assert (node.exit_code, node.stdout["node1"]) == (0, "node2\n"), node.stderr


def test_forward_agent_of_the_ssh_config_is_followed(behind: SandboxCluster, agent: str,
                                                     tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text("Host node1\n    ForwardAgent yes\n\n" + behind.ssh_config.read_text())
    node = Exec(hop_to_node2(behind), SshExecInfo(hosts="node1", ssh_config=config,
                                                  collect_output=True, hide_output=True))
    assert (node.exit_code, node.stdout["node1"]) == (0, "node2\n"), node.stderr


# --- the same settings everywhere ----------------------------------------------------


def test_the_cli_takes_a_bastion_and_agent_forwarding_as_ssh_does(
        behind: SandboxCluster, agent: str, tmp_path: Path) -> None:
    config = config_with_inner(behind, tmp_path)
    done = fabexec("run", "-w", "inner", "-F", config, "-J", "node1", "-A", "--",
                   hop_to_node2(behind))
    assert (done.returncode, done.stdout, done.stderr) == (0, "node2\n", "")


def test_the_mpi_launchers_ssh_gets_the_same_bastion_and_forwarding() -> None:
    options = ssh_options(MpiExecInfo(nprocs=1, proxy_jump="me@hop:2222", forward_agent=True))
    assert options is not None
    assert options[-4:] == ["-J", "me@hop:2222", "-o", "ForwardAgent=yes"]


@pytest.mark.parametrize("field,value", [("proxy_jump", ""), ("proxy_jump", 3),
                                         ("forward_agent", "yes")])
def test_a_wrong_bastion_or_forwarding_value_is_refused_naming_it(field: str,
                                                                   value: object) -> None:
    with pytest.raises(ExecInfoError) as caught:
        SshExecInfo(hosts="node1", **{field: value})
    assert caught.value.field == field


def test_a_hop_whose_host_key_changed_is_refused_naming_the_hop(
        behind: SandboxCluster, tmp_path: Path) -> None:
    """node1's entry in its known_hosts holds another key: a man in the middle, for
    all we know. Fabric alone would accept any hop's key."""
    ip, port = behind.addresses["node1"]
    impostor = (new_key(tmp_path / "impostor").with_suffix(".pub").read_text().split()[:2])
    known = tmp_path / "hop_known_hosts"
    name = ip if port == 22 else f"[{ip}]:{port}"  # as known_hosts spells the address
    known.write_text(f"node1,{name} {' '.join(impostor)}\n")
    config = config_with_inner(behind, tmp_path)
    config.write_text(config.read_text().replace(
        "Host node1\n", f"Host node1\n    UserKnownHostsFile {known}\n", 1))
    node = Exec(WHERE, SshExecInfo(hosts="inner", ssh_config=config, proxy_jump="node1",
                                   collect_output=True, hide_output=True))
    error = node.errors["inner"]
    assert isinstance(error, UnreachableError), error
    assert "ProxyJump hop node1" in str(error) and "CHANGED" in str(error), str(error)
