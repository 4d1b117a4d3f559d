"""One rule picks the hosts of a command and of a copy (fabexec.results), tested through both.

Duplicates run once; this machine runs here, without SSH, even inside a list of remote
hosts; a port or another user sends it through SSH. A local command is the child of this
test's process (its ``$PPID`` is ours); a remote one is not.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from pathlib import Path

import pytest

from fabexec import Exec, ExecInfoError, Hostfile, PsshExecInfo, Put, SshExecInfo, UnreachableError
from fabexec.sandbox import Cluster
from tests.clusters import openssh, pssh_info


def free_port() -> int:
    """A port on 127.0.0.1 with nothing listening (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_host_given_twice_runs_once(cluster: Cluster) -> None:
    first, second = cluster.hosts[:2]
    counter = f"~/runs-{uuid.uuid4().hex}-$(set -- $SSH_CONNECTION; echo $3)"
    node = Exec(f"echo ran >> {counter}; wc -l < {counter}",
                pssh_info(cluster, hosts=[first, second, first]))
    assert node.hosts == [first, second]
    assert node.stdout == {first: "1\n", second: "1\n"}


def test_a_host_given_twice_is_copied_to_once(cluster: Cluster, tmp_path: Path) -> None:
    first, second = cluster.hosts[:2]
    (tmp_path / "f").write_text("x")
    folder = f"dup-{uuid.uuid4().hex}"
    copy = Put(str(tmp_path / "f"), f"{folder}/", pssh_info(cluster, hosts=[first, second, first]))
    assert copy.hosts == [first, second]
    assert copy.copied == {first: [f"{folder}/f"], second: [f"{folder}/f"]}
    assert copy.exit_codes == {first: 0, second: 0}


def test_this_machine_among_remote_hosts_runs_here(cluster: Cluster) -> None:
    remote = cluster.hosts[0]
    node = Exec("echo $PPID", pssh_info(cluster, hosts=["localhost", remote]))
    assert node.exit_codes == {"localhost": 0, remote: 0}, node.errors
    assert node.stdout["localhost"] == f"{os.getpid()}\n"
    assert node.stdout[remote] != f"{os.getpid()}\n"


def test_this_machine_among_remote_hosts_is_copied_to_here(cluster: Cluster,
                                                          tmp_path: Path) -> None:
    remote = cluster.hosts[0]
    (tmp_path / "f").write_text("payload")
    folder = f"rule-{uuid.uuid4().hex}"  # in each user's home: ours here, the node's there
    try:
        copy = Put(str(tmp_path / "f"), f"~/{folder}/",
                   pssh_info(cluster, hosts=["localhost", remote]))
        assert copy.exit_codes == {"localhost": 0, remote: 0}, copy.errors
        assert Path(f"~/{folder}/f").expanduser().read_text() == "payload"
        assert openssh(cluster, remote, f"cat ~/{folder}/f").stdout == "payload"
    finally:
        openssh(cluster, remote, f"rm -rf ~/{folder}")
        shutil.rmtree(Path(f"~/{folder}").expanduser(), ignore_errors=True)


def test_a_port_sends_this_machine_through_ssh(cluster: Cluster, tmp_path: Path) -> None:
    info = pssh_info(cluster, hosts=["127.0.0.1"], port=free_port(), connect_timeout=5)
    node = Exec("true", info)
    assert node.exit_codes == {"127.0.0.1": 255}
    assert isinstance(node.errors["127.0.0.1"], UnreachableError)
    (tmp_path / "f").write_text("x")
    copy = Put(str(tmp_path / "f"), str(tmp_path / "g"), info)
    assert copy.exit_codes == {"127.0.0.1": 255}
    assert isinstance(copy.errors["127.0.0.1"], UnreachableError)
    assert not (tmp_path / "g").exists()


def test_another_user_sends_this_machine_through_ssh(cluster: Cluster) -> None:
    info = pssh_info(cluster, hosts=["localhost"], user="fabexec-no-such-user",
                     connect_timeout=5)
    node = Exec("echo $PPID", info)
    assert node.exit_codes == {"localhost": 255}
    assert node.stdout["localhost"] == ""


def test_a_slot_count_given_as_an_ssh_host_is_refused_not_taken_for_port_22() -> None:
    with pytest.raises(ExecInfoError, match="port="):
        PsshExecInfo(hosts="node1:2222")
    with pytest.raises(ExecInfoError, match="hosts"):
        SshExecInfo(hosts=["node1", "node2:2222"])
    assert PsshExecInfo(hosts=Hostfile(all_hosts=["node1:4"])).hostfile.hosts == ["node1"]
