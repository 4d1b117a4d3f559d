"""Every name of jarvis-util's shell API, imported from fabexec, called as jarvis-util calls it.

The signatures below were read from jarvis-util's ``jarvis_util/shell`` and
``jarvis_util/util/hostfile.py``; each name then gets a test that runs it.
"""

from __future__ import annotations

import inspect
import os
import shlex
import shutil
import socket
import stat
import subprocess
from pathlib import Path
from typing import List

import pytest

import fabexec
from fabexec import (
    Chmod,
    Cmake,
    CommandError,
    Copy,
    CrayMpichExec,
    Exec,
    ExecType,
    Executable,
    JutilManager,
    Kill,
    LocalExec,
    LocalExecInfo,
    LocalMpiExec,
    Make,
    Mkdir,
    MpichExec,
    MpiError,
    MpiExecInfo,
    MpiVersion,
    OpenMpiExec,
    PsshExec,
    Rm,
    SparkExec,
    SshExec,
)
from fabexec.mpi import mpi_jobs
from fabexec.mpi_flavors import Flavor, build_line
from fabexec.sandbox import SandboxCluster
from tests.clusters import expected_hostname, pssh_info, ssh_info
from tests.jarvis_compat.conftest import OPENMPI
from tests.proctree import eventually, sleeping

#: jarvis-util's parameter names, in its order.
SIGNATURES = {
    "Kill": ["cmd", "exec_info", "partial"],
    "Mkdir": ["paths", "exec_info"],
    "Rm": ["paths", "exec_info"],
    "Chmod": ["path", "mode", "modes", "exec_info"],
    "Copy": ["target", "destination", "exec_info"],
    "LocalExec": ["cmd", "exec_info"],
    "SshExec": ["cmd", "exec_info"],
    "PsshExec": ["cmd", "exec_info"],
    "LocalMpiExec": ["cmd", "exec_info"],
    "MpichExec": ["cmd", "exec_info"],
    "OpenMpiExec": ["cmd", "exec_info"],
    "CrayMpichExec": ["cmd", "exec_info"],
    "MpiVersion": ["exec_info"],
    "Executable": [],
    "JutilManager": [],
    "Cmake": ["root_dir", "out_dir", "opts", "exec_info"],
    "Make": ["build_dir", "nthreads", "install", "exec_info"],
    "SparkExec": ["cmd", "master_host", "master_port", "driver_mem", "executor_mem", "scratch",
                  "replication", "exec_info"],
    "Exec": ["cmd", "exec_info"],
}
DEFAULTS = {"Kill": {"partial": True}, "Make": {"nthreads": 8, "install": False},
            "SparkExec": {"driver_mem": "1g", "executor_mem": "1g", "scratch": "/tmp",
                          "replication": 1}}
HOSTFILE_KEYWORDS = {"hostfile", "path", "all_hosts", "all_hosts_ip", "text", "find_ips"}


def quiet(**changes: object) -> LocalExecInfo:
    return LocalExecInfo(collect_output=True, hide_output=True, **changes)


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_the_name_is_exported_with_jarvis_utils_parameters(name: str) -> None:
    assert name in fabexec.__all__
    params = inspect.signature(getattr(fabexec, name)).parameters
    assert [p for p in params if p not in ("args", "kwargs")] == SIGNATURES[name]
    for keyword, default in DEFAULTS.get(name, {}).items():
        assert params[keyword].default == default


def test_hostfile_takes_jarvis_utils_keywords() -> None:
    assert set(inspect.signature(fabexec.Hostfile).parameters) == HOSTFILE_KEYWORDS


# ---- runners -------------------------------------------------------------------------

def test_local_exec_runs_here_and_gives_strings() -> None:
    node = LocalExec("echo out; echo err >&2; exit 3", quiet())
    assert (node.stdout, node.stderr, node.exit_code) == ("out\n", "err\n", 3)
    assert node.failed()


def test_local_exec_async_gives_its_pid_then_the_output() -> None:
    node = LocalExec("read -r line; echo got $line", quiet(exec_async=True, stdin="x\n"))
    assert isinstance(node.get_pid(), int) and node.stdout == ""
    assert node.wait() == 0 and node.stdout == "got x\n"


def test_ssh_exec_runs_on_the_first_host_and_gives_strings(nodes: SandboxCluster) -> None:
    node = SshExec("hostname", ssh_info(nodes, nodes.hosts[1:]))
    assert node.addr == nodes.hosts[1]
    assert node.stdout == expected_hostname(nodes, nodes.hosts[1]) + "\n"


def test_pssh_exec_runs_on_every_host(nodes: SandboxCluster) -> None:
    node = PsshExec("hostname", pssh_info(nodes))
    assert node.stdout == {h: expected_hostname(nodes, h) + "\n" for h in nodes.hosts}


def test_local_mpi_exec_detects_the_launcher(launcher: str) -> None:
    node = LocalMpiExec("echo rank", MpiExecInfo(nprocs=3, mpiexec=launcher,
                                                collect_output=True, hide_output=True))
    assert (node.exit_code, node.stdout) == (0, "rank\n" * 3)
    assert node.mpicmd().startswith(shlex.quote(launcher))


def test_mpich_exec_writes_hydras_line(mpich: str) -> None:
    node = MpichExec("echo rank", MpiExecInfo(nprocs=2, collect_output=True, hide_output=True))
    assert node.stdout == "rank\n" * 2
    assert " -genv PATH " in node.mpicmd()  # the caller's PATH goes with it


def test_open_mpi_exec_writes_open_mpis_line() -> None:
    if not os.path.exists(OPENMPI):
        pytest.skip("Open MPI is not installed")
    node = OpenMpiExec("echo rank", MpiExecInfo(nprocs=2, mpiexec=OPENMPI, collect_output=True,
                                                hide_output=True))
    assert node.stdout == "rank\n" * 2
    assert "--oversubscribe" in node.mpicmd() and " -x PATH=" in node.mpicmd()


def test_cray_mpich_exec_writes_pals_line(mpich: str) -> None:
    # No PALS here: the line is checked as written, and the kind is Cray's.
    info = MpiExecInfo(nprocs=2, exec_type=ExecType.CRAY_MPICH, forward_env=["PATH"])
    line = build_line(Flavor.CRAY_MPICH, mpi_jobs("true", info, Flavor.CRAY_MPICH)[0])
    assert line.startswith("mpiexec --env PATH=") and line.endswith(" -n 2 true")
    assert issubclass(CrayMpichExec, LocalMpiExec) and CrayMpichExec.exec_type is \
        ExecType.CRAY_MPICH


def test_mpi_version_names_the_launcher(launcher: str) -> None:
    expected = ExecType.OPENMPI if launcher == OPENMPI else ExecType.MPICH
    assert MpiVersion(MpiExecInfo(mpiexec=launcher)).version is expected


def test_mpi_version_of_something_else_is_an_mpi_error() -> None:
    with pytest.raises(MpiError, match="could not identify"):
        MpiVersion(MpiExecInfo(mpiexec="echo"))


def test_every_exec_is_an_executable() -> None:
    node = Exec("false", quiet())
    assert isinstance(node, Executable) and node.failed()
    assert isinstance(Mkdir("/tmp", quiet()), Executable)


# ---- JutilManager ----------------------------------------------------------------------

def test_jutil_manager_is_a_singleton_whose_collect_output_applies() -> None:
    jutil = JutilManager.get_instance()
    assert jutil is JutilManager.get_instance()
    jutil.collect_output = True
    assert Exec("echo kept", LocalExecInfo(hide_output=True)).stdout == {"localhost": "kept\n"}
    assert Exec("echo kept", LocalExecInfo(hide_output=True, collect_output=False)).stdout == \
        {"localhost": ""}  # the info's own value wins


def test_jutil_manager_hide_output_applies(capfd: pytest.CaptureFixture) -> None:
    JutilManager.get_instance().hide_output = True
    Exec("echo hidden")
    assert "hidden" not in capfd.readouterr().out


def test_jutil_manager_debug_local_exec_prints_the_command(capfd: pytest.CaptureFixture) -> None:
    JutilManager.get_instance().debug_local_exec = True
    Exec("echo fabexec-shown-$((6*7))", quiet())
    assert "echo fabexec-shown-$((6*7))" in capfd.readouterr().out


def test_jutil_manager_debug_mpi_exec_prints_the_launcher_line(
        mpich: str, capfd: pytest.CaptureFixture) -> None:
    JutilManager.get_instance().debug_mpi_exec = True
    Exec("true", quiet(forward_env=False))
    node = Exec("true", MpiExecInfo(nprocs=2, forward_env=False, hide_output=True))
    assert capfd.readouterr().out == "mpiexec -n 2 true\n" == node.cmd + "\n"


# ---- helpers ---------------------------------------------------------------------------

def test_kill_ends_matching_processes_and_spares_the_caller(tag: str) -> None:
    started = subprocess.Popen(["sleep", tag])
    node = Kill(f"sleep {tag}", quiet())
    assert node.exit_code == 0 and started.wait(timeout=30) == -9


def test_kill_of_nothing_exits_1_as_pkill() -> None:
    assert Kill("fabexec-nothing-matches-this", quiet()).exit_code == 1


def test_kill_partial_false_matches_the_name_only(tag: str, tmp_path: Path) -> None:
    # A name of its own: matching by name must never reach other people's processes.
    name = f"fxk{tag.split('.')[1]}"[:15]  # the kernel keeps 15 characters of a name
    shutil.copy("/bin/sleep", tmp_path / name)
    started = subprocess.Popen([str(tmp_path / name), tag])
    assert Kill(f"{name} {tag}", quiet(), partial=False).exit_code == 1  # no process named so
    assert Kill(name, quiet(), partial=False).exit_code == 0
    assert started.wait(timeout=30) == -9


def test_kill_runs_on_every_host(nodes: SandboxCluster, tag: str) -> None:
    running = Exec(f"sleep {tag}", pssh_info(nodes, exec_async=True))
    assert eventually(lambda: len(sleeping(tag)) == len(nodes.hosts))
    node = Kill(f"sleep {tag}", pssh_info(nodes))
    running.wait()
    assert node.hosts == nodes.hosts and set(running.exit_codes.values()) == {137}
    assert sleeping(tag) == []


def _listing(cluster: SandboxCluster, cmd: str) -> List[str]:
    return sorted(set(Exec(cmd, pssh_info(cluster)).stdout.values()))


def test_mkdir_rm_chmod_on_every_host(nodes: SandboxCluster, tag: str) -> None:
    folder = f"~/fabexec-compat-{tag}"
    assert Mkdir([f"{folder}/a", f"{folder}/b"], pssh_info(nodes)).exit_code == 0
    assert _listing(nodes, f"ls {folder}") == ["a\nb\n"]
    assert Chmod(modes=[(f"{folder}/a", "700")], exec_info=pssh_info(nodes)).exit_code == 0
    assert _listing(nodes, f"stat -c %a {folder}/a") == ["700\n"]
    assert Rm(f"{folder}/*", pssh_info(nodes)).exit_code == 0  # a glob, as a shell word
    assert _listing(nodes, f"ls {folder}") == [""]
    Rm(folder, pssh_info(nodes))


def test_copy_on_a_host(nodes: SandboxCluster, tag: str) -> None:
    info = pssh_info(nodes, hosts=nodes.hosts[:1])
    Exec(f"mkdir -p ~/c{tag} && echo data > ~/c{tag}/f", info)
    assert Copy(f"~/c{tag}/f", f"~/c{tag}/g", info).exit_code == 0
    assert Exec(f"cat ~/c{tag}/g; rm -rf ~/c{tag}", info).stdout == {nodes.hosts[0]: "data\n"}


def test_chmod_needs_a_path_and_mode() -> None:
    with pytest.raises(CommandError, match="Chmod"):
        Chmod(path="/tmp/x")


def test_copy_needs_two_paths() -> None:
    with pytest.raises(CommandError, match="Copy"):
        Copy("/tmp/x")


def test_cmake_and_make_build_in_their_folders(tmp_path: Path) -> None:
    source, build = tmp_path / "src", tmp_path / "build"
    source.mkdir()
    (source / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.10)\nproject(p NONE)\n"
        "add_custom_target(show ALL COMMAND echo greeting=${GREETING} feature=${FEATURE})\n")
    node = Cmake(str(source), str(build), {"GREETING": "a;b", "FEATURE": True}, quiet())
    assert node.exit_code == 0, node.stderr
    built = Make(str(build), nthreads=2, exec_info=quiet())
    # One -D value (a shell would have run ``b`` as a command); cmake lists it as "a b".
    assert built.exit_code == 0 and "greeting=a b feature=ON" in built.stdout["localhost"]


def test_spark_exec_submits_to_the_master(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    program = tmp_path / "spark-submit"  # a real program standing in for Spark's
    program.write_text('#!/bin/sh\necho "$@"\n')
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    node = SparkExec("app.py", socket.gethostname(), 7077, exec_info=quiet())
    assert node.stdout == (f"--master spark://{socket.gethostname()}:7077 --driver-memory 1g "
                           "--executor-memory 1g --conf spark.speculation=false --conf "
                           "spark.storage.replication=1 --conf spark.local.dir=/tmp app.py\n")
