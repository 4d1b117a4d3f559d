"""The docker cluster answers as named hosts, to OpenSSH and to Fabric alike.

These check the test bed itself (docker/ and tests/fixtures_docker.py), so that
an SSH test failing on it points at fabexec, not at the cluster.
"""

from __future__ import annotations

import subprocess
from typing import Tuple

import pytest
from fabric import Config, Connection
from paramiko import RejectPolicy

from fabexec.sandbox import Cluster

pytestmark = pytest.mark.docker


def openssh(cluster: Cluster, host: str, command: str) -> Tuple[int, str, str]:
    """Run ``command`` on ``host`` with the OpenSSH client and the cluster's ssh_config."""
    done = subprocess.run(
        ["ssh", "-F", str(cluster.ssh_config), "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
         host, command],
        capture_output=True, text=True, timeout=60, check=False,
    )
    return done.returncode, done.stdout.strip(), done.stderr.strip()


def strict_connection(cluster: Cluster, **kwargs: object) -> Connection:
    """A Fabric connection that trusts only the cluster's known_hosts."""
    conn = Connection(connect_timeout=10, **kwargs)
    conn.client.set_missing_host_key_policy(RejectPolicy())
    conn.client.load_host_keys(str(cluster.known_hosts))
    return conn


def test_openssh_reaches_every_node_by_its_alias(docker_cluster: Cluster) -> None:
    answers = {host: openssh(docker_cluster, host, "hostname") for host in docker_cluster.hosts}
    assert {host: answer[:2] for host, answer in answers.items()} == {
        host: (0, host) for host in docker_cluster.hosts
    }, answers


def test_hostfile_lists_every_node_once(docker_cluster: Cluster) -> None:
    assert docker_cluster.hostfile.read_text().split() == docker_cluster.hosts
    assert len(set(docker_cluster.hosts)) == len(docker_cluster.hosts) > 1


def test_login_user_is_not_root_and_has_passwordless_sudo(docker_cluster: Cluster) -> None:
    host = docker_cluster.hosts[-1]
    code, out, err = openssh(docker_cluster, host, "id -un; sudo -n id -un")
    assert (code, out.split()) == (0, [docker_cluster.user, "root"]), err
    assert docker_cluster.user != "root"


def test_fabric_connects_by_address_with_the_cluster_key(docker_cluster: Cluster) -> None:
    host = docker_cluster.hosts[0]
    ip, port = docker_cluster.addresses[host]
    key_only = {"key_filename": str(docker_cluster.key), "look_for_keys": False,
                "allow_agent": False}
    with strict_connection(docker_cluster, host=ip, port=port, user=docker_cluster.user,
                           connect_kwargs=key_only) as conn:
        result = conn.run("hostname", hide=True, in_stream=False, timeout=30)
    assert result.stdout.strip() == host


def test_fabric_reaches_a_node_by_alias_through_the_ssh_config(docker_cluster: Cluster) -> None:
    """Fabric reads HostName, Port, User and IdentityFile from the cluster's ssh_config."""
    host = docker_cluster.hosts[1]
    config = Config(runtime_ssh_path=str(docker_cluster.ssh_config))
    with strict_connection(docker_cluster, host=host, config=config,
                           connect_kwargs={"look_for_keys": False, "allow_agent": False}) as conn:
        result = conn.run("hostname", hide=True, in_stream=False, timeout=30)
    assert result.stdout.strip() == host
