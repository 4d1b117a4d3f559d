"""Ctrl-C or SIGTERM to a program running an `Exec` ends the command everywhere first.

The program is a real child Python process (`tests.faults.caller`); the test waits
until its command's uniquely tagged ``sleep`` runs everywhere, signals it, and once it
has exited looks with ``pgrep`` for anything of the command (shells, launchers, ranks,
sleeps). This machine sees every sandbox node's processes (a node's PID namespace, where
it has one, is a child of the machine's), so a local ``pgrep`` sees every node. A program
whose command runs over SSH runs in a PID namespace of its own (`tests.client`): it cannot
see or signal the nodes' processes, so only the reaper on each node can end them, and
what is left is looked for on each node, over OpenSSH.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, List

import pytest

from fabexec.sandbox import Cluster
from tests import clusters
from tests.client import ROOT, Client, python_isolated
from tests.proctree import eventually, sleeping

MPI_RANKS = 2  # as tests.faults.caller asks
#: The kinds of `tests.faults.caller` whose command runs on the nodes, over SSH.
REMOTE = ("ssh", "pssh")


def leftovers(tag: str) -> List[str]:
    """Every process whose command line holds ``tag`` (``pgrep -af``)."""
    found = subprocess.run(["pgrep", "-af", tag], capture_output=True, text=True, timeout=30,
                           check=False)
    return found.stdout.splitlines()


def remote(kind: str) -> bool:
    return kind.split("-")[0] in REMOTE


def interrupt(kind: str, command: str, sleeps: int, sig: int, output: Path,
              cluster: Cluster, tag: str) -> subprocess.CompletedProcess:
    """Run the caller, signal it once ``sleeps`` tagged sleeps run, return how it ended."""
    args = ["-m", "tests.faults.caller", kind, command, str(output), str(cluster.ssh_config),
            str(cluster.hostfile)]
    # A local command stays in the caller's view: its namespace's end would end it.
    with python_isolated(args) if remote(kind) else Client([sys.executable, *args],
                                                          isolated=False) as caller:
        ended = caller.process.poll
        started = eventually(lambda: len(sleeping(tag)) == sleeps or ended() is not None)
        if ended() is not None:
            pytest.fail(f"the caller ended before its command ran: {caller.stderr()}")
        assert started, f"{sleeps} tagged sleeps never ran at once"
        caller.send_signal(sig)
        return subprocess.CompletedProcess(args, caller.wait(), "", caller.stderr())


def left_behind(kind: str, cluster: Cluster, tag: str) -> List[str]:
    """What is left of the command: on each node for a remote one (``^sleep TAG``), else
    here (anything whose command line holds the tag)."""
    if not remote(kind):
        return leftovers(tag)
    found = clusters.on_every_host(cluster, lambda host: clusters.sleeping(cluster, host, tag))
    return [f"{host}: {line}" for host, lines in found.items() for line in lines]


def assert_interrupted(done: subprocess.CompletedProcess, sig: int) -> None:
    if sig == signal.SIGTERM:
        assert done.returncode == 128 + signal.SIGTERM, done.stderr
    else:
        assert done.returncode != 0
        assert "KeyboardInterrupt" in done.stderr


def cases(kinds: List[str]) -> List[Any]:
    """Every kind under SIGINT and SIGTERM."""
    return [pytest.param(kind, sig, id=f"{kind}-{sig.name}")
            for kind in kinds for sig in (signal.SIGINT, signal.SIGTERM)]


@pytest.mark.parametrize(("kind", "sig"), cases(["pssh", "pssh-async", "pssh-async-dropped"]))
def test_interrupted_parallel_exec_leaves_nothing_on_any_host(
        cluster: Cluster, tag: str, tmp_path: Path, kind: str, sig: int) -> None:
    """One output file shared by every host: each host's last line, cut short by the
    interrupt, is written when the file is closed."""
    output = tmp_path / "out"
    done = interrupt(kind, f"printf started; sleep {tag}", len(cluster.hosts), sig, output,
                     cluster, tag)
    assert_interrupted(done, sig)
    assert left_behind(kind, cluster, tag) == []
    assert sorted(output.read_text().splitlines()) == [f"[{h}] started" for h in cluster.hosts]


@pytest.mark.parametrize(("kind", "sig"), cases(["ssh", "local", "local-async"]))
def test_interrupted_single_host_exec_leaves_nothing(
        cluster: Cluster, tag: str, tmp_path: Path, kind: str, sig: int) -> None:
    output = tmp_path / "out"
    done = interrupt(kind, f"printf started; sleep {tag}", 1, sig, output, cluster, tag)
    assert_interrupted(done, sig)
    assert left_behind(kind, cluster, tag) == []
    assert output.read_text() == "started"


@pytest.mark.parametrize("kind", ["local-thread", "pssh-thread"])
def test_sigterm_ends_an_exec_running_in_a_worker_thread(
        cluster: Cluster, tag: str, tmp_path: Path, kind: str) -> None:
    """Only the main thread gets signals: fabexec's handler, taken at import, ends the
    commands the worker waits for, so that the worker and the program can end."""
    output = tmp_path / "out"
    sleeps = 1 if kind.startswith("local") else len(cluster.hosts)
    done = interrupt(kind, f"printf started; sleep {tag}", sleeps, signal.SIGTERM, output,
                     cluster, tag)
    assert_interrupted(done, signal.SIGTERM)
    assert left_behind(kind, cluster, tag) == []


@pytest.mark.parametrize(("kind", "sig"), cases(["mpi"]))
def test_interrupted_mpi_job_leaves_no_launcher_or_rank(
        cluster: Cluster, tag: str, tmp_path: Path, kind: str, sig: int) -> None:
    if shutil.which("mpiexec") is None:
        pytest.skip("no mpiexec on PATH (pip install mpich)")
    output = tmp_path / "out"
    done = interrupt(kind, f"bash -c 'echo started; sleep {tag}'", MPI_RANKS, sig, output,
                     cluster, tag)
    assert_interrupted(done, sig)
    assert leftovers(tag) == []
    # The file is the launcher's own stdout (as with `mpiexec ... > out`): what the ranks
    # wrote, then whatever the launcher reports of their end (Hydra: BAD TERMINATION).
    assert output.read_text().startswith("started\n" * MPI_RANKS)


def test_sigterm_with_nothing_running_kills_the_program_as_by_default() -> None:
    program = subprocess.Popen(
        [sys.executable, "-c", "import fabexec, time; print('ready', flush=True); time.sleep(60)"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
    try:
        assert program.stdout is not None and program.stdout.readline() == "ready\n"
        program.send_signal(signal.SIGTERM)
        assert program.wait(timeout=30) == -signal.SIGTERM
    finally:
        if program.poll() is None:
            program.kill()
            program.wait(timeout=30)
