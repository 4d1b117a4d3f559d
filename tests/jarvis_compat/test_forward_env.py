"""The caller's PATH, LD_LIBRARY_PATH... go with SSH, PSSH and MPI commands, as in jarvis-util.

A program that only the caller's PATH finds (a spack or module environment
loaded here) must be found on the nodes too; the sandbox nodes' login shells
have their own PATH, so a test fails when nothing is forwarded.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest

from fabexec import (
    Exec,
    ExecInfoError,
    LocalExecInfo,
    MpiExecInfo,
    PsshExecInfo,
    SshExecInfo,
)
from fabexec.info import FORWARD_ENV
from fabexec.sandbox import SandboxCluster
from tests.clusters import pssh_info, ssh_info
from tests.jarvis_compat.conftest import OPENMPI

AWKWARD = "two  words 'single' \"double\" $HOME `id` back\\slash"
PROGRAM = "fabexec-found-on-the-callers-path"


@pytest.fixture
def callers_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A folder, readable by the nodes' user, holding PROGRAM, put first on this PATH only.

    Under /srv, which the sandbox's nodes share with this machine (their /tmp and homes
    are their own), as a spack tree on a shared filesystem would be; /tmp where only
    root may write /srv (nodes started by another user share /tmp too).
    """
    shared = "/srv" if os.access("/srv", os.W_OK) else None
    folder = tempfile.mkdtemp(prefix="fabexec-path ", dir=shared)  # a blank: quoted once
    os.chmod(folder, 0o755)
    program = Path(folder) / PROGRAM
    program.write_text("#!/bin/sh\necho found\n")
    program.chmod(0o755 | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{folder}:{os.environ['PATH']}")
    yield folder
    shutil.rmtree(folder)


def test_the_callers_path_finds_the_program_on_every_node(nodes: SandboxCluster,
                                                          callers_path: str) -> None:
    node = Exec(PROGRAM, pssh_info(nodes))
    assert node.stdout == {h: "found\n" for h in nodes.hosts}, node.stderr


def test_ssh_forwards_too(nodes: SandboxCluster, callers_path: str) -> None:
    assert Exec(PROGRAM, ssh_info(nodes, nodes.hosts[0])).exit_code == 0


def test_forward_env_false_sends_nothing(nodes: SandboxCluster, callers_path: str) -> None:
    node = Exec(PROGRAM, pssh_info(nodes, forward_env=False))
    assert set(node.exit_codes.values()) == {127}


def test_a_value_with_blanks_quotes_and_dollars_arrives_as_given(
        nodes: SandboxCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CPATH", AWKWARD)
    node = Exec("printenv CPATH", pssh_info(nodes))
    assert node.stdout == {h: AWKWARD + "\n" for h in nodes.hosts}


def test_forward_env_chooses_the_list(nodes: SandboxCluster,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FABEXEC_CHOSEN", "yes")
    monkeypatch.setenv("CPATH", "not sent")
    node = Exec('echo "$FABEXEC_CHOSEN/${CPATH-unset}"',
                pssh_info(nodes, forward_env=["FABEXEC_CHOSEN"]))
    assert set(node.stdout.values()) == {"yes/unset\n"}


def _mpi_info(cluster: SandboxCluster, launcher: str, **changes: Any) -> MpiExecInfo:
    return MpiExecInfo(nprocs=4, ppn=2, mpiexec=launcher, hostfile=cluster.hostfile,
                       ssh_config=cluster.ssh_config, collect_output=True, hide_output=True,
                       timeout=60, **changes)


def test_mpi_ranks_on_other_nodes_find_the_program(nodes: SandboxCluster, launcher: str,
                                                   callers_path: str) -> None:
    node = Exec(f"sh -c '{PROGRAM}; hostname'", _mpi_info(nodes, launcher))
    assert node.exit_code == 0, node.stderr
    lines = node.stdout["localhost"].split()
    assert lines.count("found") == 4 and set(lines) - {"found"} == {"node1", "node2"}


def test_open_mpi_without_forwarding_does_not_find_it(nodes: SandboxCluster, launcher: str,
                                                      callers_path: str) -> None:
    if launcher != OPENMPI:
        pytest.skip("Hydra sends the launcher's whole environment itself (-genvall)")
    node = Exec(f"sh -c '{PROGRAM}; hostname'", _mpi_info(nodes, launcher, forward_env=False))
    assert "found" not in node.stdout["localhost"]


# ---- as jarvis-util code reads it --------------------------------------------------------

@pytest.mark.parametrize("preset", [SshExecInfo, PsshExecInfo, MpiExecInfo])
def test_forwarded_values_are_in_info_env(preset: type, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JAVA_HOME", "/opt/java")
    monkeypatch.setenv("LD_PRELOAD", "/nowhere/libx.so")
    info = preset(env={"JAVA_HOME": "/mine", "OWN": "1"})
    assert info.env["PATH"] == os.environ["PATH"] and info.env["JAVA_HOME"] == "/mine"
    assert "LD_PRELOAD" not in info.env and "LD_PRELOAD" not in info.basic_env
    assert info.basic_env == {**{k: os.environ[k] for k in FORWARD_ENV if k in os.environ
                                 and k != "LD_PRELOAD"}, "JAVA_HOME": "/mine", "OWN": "1"}


def test_a_local_info_forwards_nothing_its_command_inherits_everything() -> None:
    info = LocalExecInfo(env={"OWN": "1"})
    assert info.env == {"OWN": "1"} and info.basic_env["PATH"] == os.environ["PATH"]
    assert info.mod(exec_type="PSSH").env["PATH"] == os.environ["PATH"]
    assert SshExecInfo().mod(forward_env=False).env == {}


@pytest.mark.parametrize("bad", ["PATH", ["PATH", 3], ["NOT A NAME"], 1])
def test_a_bad_forward_env_names_the_field(bad: Any) -> None:
    with pytest.raises(ExecInfoError) as caught:
        SshExecInfo(forward_env=bad)
    assert caught.value.field == "forward_env"
