"""Specification of `fabexec.mpi_flavors`: knowing the MPI launcher and writing its line.

The recorded ``mpiexec --version`` texts under ``tests/data/mpi/``:

- ``mpich.txt``: the mpich 5.0.2 wheel (``pip install mpich``), recorded on the
  project's machine.
- ``openmpi.txt``: ``/usr/bin/mpiexec --version`` of Debian 12's
  ``openmpi-bin`` 4.1.4, recorded on the project's machine.
- ``openmpi5.txt``: Open MPI 5.0.6 (``mpirun --version``), as quoted in public
  build notes found by GitHub code search.
- ``intel.txt``: Intel MPI 2021.8 (``mpiexec --version`` in an Apptainer
  image), as quoted in a public README found by GitHub code search.
- ``cray.txt``: HPE Cray PALS. Public code quotes its answer only as
  ``mpiexec version 1.8.0 revision ...``, so the file holds that prefix alone.
  PALS's option syntax (global ``--hosts``/``--env VAR=VAL``, ``-n``/``--ppn``
  per MPMD part) is from its ``--help`` quoted in CrayLabs/SmartSim#354.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Callable, Optional

import pytest

from fabexec.errors import MpiError
from fabexec.mpi_flavors import Flavor, MpiJob, build_argv, build_line, detect_flavor, parse_flavor

DATA = Path(__file__).parent / "data" / "mpi"

# Everything a shell could misread: spaces, both quotes, $, backquotes, a backslash, a newline.
AWKWARD = "two  words 'single' \"double\" $HOME `id` back\\slash\nsecond line"

RUN_TIMEOUT = 60


# --- recognising the launcher -------------------------------------------------


@pytest.mark.parametrize(
    "recording, flavor",
    [
        ("mpich.txt", Flavor.MPICH),
        ("openmpi.txt", Flavor.OPENMPI),
        ("openmpi5.txt", Flavor.OPENMPI),
        ("intel.txt", Flavor.INTEL_MPI),
        ("cray.txt", Flavor.CRAY_MPICH),
    ],
)
def test_recorded_version_texts_name_their_flavor(recording: str, flavor: Flavor) -> None:
    assert parse_flavor((DATA / recording).read_text()) is flavor


def test_intel_is_recognised_even_when_its_hydra_details_follow() -> None:
    text = (DATA / "intel.txt").read_text() + (DATA / "mpich.txt").read_text()
    assert parse_flavor(text) is Flavor.INTEL_MPI


def test_mvapich_counts_as_mpich() -> None:
    assert parse_flavor("MVAPICH2 Version:     2.3.7\n") is Flavor.MPICH


def test_text_of_another_program_is_no_flavor() -> None:
    assert parse_flavor("usage: mpiexec.gforker [options] program\n") is None


@pytest.fixture
def fake_launcher(tmp_path: Path) -> Callable[[str], Path]:
    """A real executable that prints ``text`` for ``--version`` and logs each call to ``runs``."""

    def make(text: str) -> Path:
        (tmp_path / "said.txt").write_text(text)
        script = tmp_path / "fake-mpiexec"
        script.write_text(
            "#!/bin/sh\n"
            f'echo "$@" >> {shlex.quote(str(tmp_path / "runs"))}\n'
            f"cat {shlex.quote(str(tmp_path / 'said.txt'))}\n"
        )
        script.chmod(0o755)
        return script

    return make


def test_detect_flavor_asks_the_launcher(fake_launcher: Callable[[str], Path]) -> None:
    script = fake_launcher((DATA / "openmpi.txt").read_text())
    assert detect_flavor(str(script)) is Flavor.OPENMPI
    assert (script.parent / "runs").read_text() == "--version\n"


def test_detect_flavor_asks_once_per_resolved_launcher(
    fake_launcher: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    script = fake_launcher((DATA / "mpich.txt").read_text())
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")
    assert detect_flavor(str(script)) is Flavor.MPICH
    assert detect_flavor(str(script)) is Flavor.MPICH
    assert detect_flavor(script.name) is Flavor.MPICH  # same file found through PATH
    assert (script.parent / "runs").read_text().splitlines() == ["--version"]


def test_unknown_launcher_error_quotes_what_it_said(fake_launcher: Callable[[str], Path]) -> None:
    script = fake_launcher("SuperLauncher 9.1 (not an MPI)\n")
    with pytest.raises(MpiError, match=r"SuperLauncher 9\.1 \(not an MPI\)"):
        detect_flavor(str(script))


def test_missing_launcher_error_names_it_and_how_to_install() -> None:
    with pytest.raises(MpiError) as raised:
        detect_flavor("fabexec-no-such-mpiexec")
    assert "'fabexec-no-such-mpiexec'" in str(raised.value)
    assert "pip install mpich" in str(raised.value)


# --- the job --------------------------------------------------------------------


@pytest.mark.parametrize(
    "wrong",
    [
        dict(nprocs=0),
        dict(nprocs=2, ppn=0),
        dict(nprocs=2, hosts=["n1"], hostfile="/etc/hosts.mpi"),
        dict(nprocs=2, do_dbg=True),
        dict(nprocs=2, env={"A=B": "1"}),
    ],
)
def test_impossible_job_is_refused_at_once(wrong: dict) -> None:
    with pytest.raises(MpiError):
        MpiJob("prog", **wrong)


def test_job_runs_as_root_by_default_only_when_we_are_root() -> None:
    assert MpiJob("prog", nprocs=1).as_root is (os.geteuid() == 0)


# --- MPICH (Hydra) ----------------------------------------------------------------


def test_mpich_plain_job() -> None:
    job = MpiJob("hostname", nprocs=4)
    assert build_argv(Flavor.MPICH, job) == ["mpiexec", "-n", "4", "hostname"]
    assert build_line(Flavor.MPICH, job) == "mpiexec -n 4 hostname"


def test_mpich_hosts_by_name_with_known_slots_env_and_extra_args() -> None:
    job = MpiJob(
        "./ior -w",
        nprocs=8,
        ppn=4,
        hosts=["node1", "node2"],
        slots={"node1": 4, "node2": None},
        env={"OMP_NUM_THREADS": "1", "NOTE": "it's here"},
        mpi_args=["-bind-to", "core"],
    )
    assert build_argv(Flavor.MPICH, job) == [
        "mpiexec", "-ppn", "4", "-hosts", "node1:4,node2",
        "-genv", "OMP_NUM_THREADS", "1", "-genv", "NOTE", "it's here",
        "-bind-to", "core", "-n", "8", "./ior", "-w",
    ]  # fmt: skip
    assert build_line(Flavor.MPICH, job) == (
        "mpiexec -ppn 4 -hosts node1:4,node2 -genv OMP_NUM_THREADS 1 "
        "-genv NOTE 'it'\"'\"'s here' -bind-to core -n 8 ./ior -w"
    )


def test_mpich_whole_hostfile_by_path() -> None:
    job = MpiJob("prog", nprocs=2, hostfile="/etc/hosts.mpi")
    assert build_argv(Flavor.MPICH, job) == ["mpiexec", "-f", "/etc/hosts.mpi", "-n", "2", "prog"]


def test_mpich_ssh_wrapper() -> None:
    job = MpiJob("prog", nprocs=1, hosts=["n1"], launcher_exec="/tmp/my ssh")
    assert build_argv(Flavor.MPICH, job) == [
        "mpiexec", "-launcher", "ssh", "-launcher-exec", "/tmp/my ssh",
        "-hosts", "n1", "-n", "1", "prog",
    ]  # fmt: skip


def test_mpich_debug_runs_rank_zero_under_gdbserver_and_the_rest_plain() -> None:
    job = MpiJob("./app --size 4", nprocs=4, env={"A": "1"}, do_dbg=True, dbg_port=2000)
    assert build_line(Flavor.MPICH, job) == (
        "mpiexec -genv A 1 -n 1 gdbserver localhost:2000 ./app --size 4 : -n 3 ./app --size 4"
    )


def test_debug_of_a_single_rank_has_no_second_part() -> None:
    job = MpiJob("./app", nprocs=1, do_dbg=True, dbg_port=2000)
    assert build_argv(Flavor.MPICH, job) == [
        "mpiexec", "-n", "1", "gdbserver", "localhost:2000", "./app",
    ]  # fmt: skip


def test_intel_mpi_is_written_as_hydra() -> None:
    job = MpiJob("prog", nprocs=4, ppn=2, hosts=["n1", "n2"], env={"A": "b c"})
    assert build_argv(Flavor.INTEL_MPI, job) == build_argv(Flavor.MPICH, job)


# --- Open MPI ---------------------------------------------------------------------


def test_openmpi_plain_job_as_root() -> None:
    job = MpiJob("hostname", nprocs=4, as_root=True)
    assert build_line(Flavor.OPENMPI, job) == (
        "mpiexec --oversubscribe --allow-run-as-root -n 4 hostname"
    )


def test_openmpi_plain_job_as_a_user() -> None:
    job = MpiJob("hostname", nprocs=4, as_root=False)
    assert build_argv(Flavor.OPENMPI, job) == ["mpiexec", "--oversubscribe", "-n", "4", "hostname"]


def test_openmpi_hosts_without_slot_counts_get_an_even_share() -> None:
    job = MpiJob("prog", nprocs=6, hosts=["n1", "n2", "n3"], slots={"n1": 4}, as_root=False)
    assert build_argv(Flavor.OPENMPI, job) == [
        "mpiexec", "--oversubscribe", "--host", "n1:4,n2:2,n3:2", "-n", "6", "prog",
    ]  # fmt: skip


def test_openmpi_ppn_env_and_extra_args() -> None:
    job = MpiJob(
        "prog",
        nprocs=4,
        ppn=2,
        hosts=["n1", "n2"],
        env={"A": "a b", "EQ": "x=y"},
        mpi_args=["--bind-to", "none"],
        as_root=False,
    )
    assert build_argv(Flavor.OPENMPI, job) == [
        "mpiexec", "--oversubscribe", "--map-by", "ppr:2:node", "--bind-to", "none",
        "--host", "n1:2,n2:2", "-x", "A=a b", "-x", "EQ=x=y", "-n", "4", "prog",
    ]  # fmt: skip


def test_openmpi_whole_hostfile_and_ssh_wrapper() -> None:
    job = MpiJob("prog", nprocs=2, hostfile="/h", launcher_exec="/w", as_root=False)
    assert build_argv(Flavor.OPENMPI, job) == [
        "mpiexec", "--oversubscribe", "--mca", "plm_rsh_agent", "/w",
        "--mca", "plm_rsh_no_tree_spawn", "1", "--hostfile", "/h", "-n", "2", "prog",
    ]  # fmt: skip


def test_openmpi_debug_repeats_hosts_and_env_in_each_part() -> None:
    job = MpiJob(
        "./app", nprocs=3, hosts=["n1"], env={"A": "1"}, do_dbg=True, dbg_port=9999, as_root=False
    )
    assert build_argv(Flavor.OPENMPI, job) == [
        "mpiexec", "--oversubscribe",
        "--host", "n1:3", "-x", "A=1", "-n", "1", "gdbserver", "localhost:9999", "./app",
        ":", "--host", "n1:3", "-x", "A=1", "-n", "2", "./app",
    ]  # fmt: skip


# --- Cray MPICH (PALS) --------------------------------------------------------------


def test_cray_hosts_are_bare_names_and_env_is_global() -> None:
    job = MpiJob(
        "prog", nprocs=8, ppn=4, hosts=["n1", "n2"], slots={"n1": 4, "n2": 4}, env={"A": "x y"}
    )
    assert build_argv(Flavor.CRAY_MPICH, job) == [
        "mpiexec", "--hosts", "n1,n2", "--env", "A=x y", "-n", "8", "--ppn", "4", "prog",
    ]  # fmt: skip


def test_cray_whole_hostfile() -> None:
    job = MpiJob("prog", nprocs=2, hostfile="/h", mpi_args=["--cpu-bind", "none"])
    assert build_argv(Flavor.CRAY_MPICH, job) == [
        "mpiexec", "--hostfile", "/h", "--cpu-bind", "none", "-n", "2", "prog",
    ]  # fmt: skip


def test_cray_debug_repeats_ppn_in_each_part() -> None:
    job = MpiJob("prog", nprocs=4, ppn=2, do_dbg=True, dbg_port=7)
    assert build_argv(Flavor.CRAY_MPICH, job) == [
        "mpiexec", "-n", "1", "--ppn", "2", "gdbserver", "localhost:7", "prog",
        ":", "-n", "3", "--ppn", "2", "prog",
    ]  # fmt: skip


def test_cray_refuses_an_ssh_wrapper() -> None:
    with pytest.raises(MpiError, match="launcher_exec"):
        build_argv(Flavor.CRAY_MPICH, MpiJob("prog", nprocs=1, launcher_exec="/w"))


# --- the line as a shell reads it -----------------------------------------------------


@pytest.mark.parametrize("flavor", list(Flavor))
def test_awkward_env_values_are_quoted_once(flavor: Flavor) -> None:
    job = MpiJob("printenv V", nprocs=2, hosts=["n1"], env={"V": AWKWARD}, mpi_args=["-x y"])
    argv = build_argv(flavor, job)
    assert shlex.split(build_line(flavor, job)) == argv
    assert any(AWKWARD in word for word in argv)


def test_program_is_appended_as_shell_text() -> None:
    job = MpiJob("echo $HOME | tr a b > out.txt", nprocs=2)
    assert build_line(Flavor.MPICH, job) == "mpiexec -n 2 echo $HOME | tr a b > out.txt"


# --- real launches ----------------------------------------------------------------------


def _installed(flavor: Flavor, names: tuple) -> Optional[str]:
    """The path of the first launcher among ``names`` that is ``flavor``, or None."""
    for name in names:
        path = shutil.which(name)
        if path is None:
            continue
        try:
            if detect_flavor(path) is flavor:
                return path
        except MpiError:
            continue
    return None


@pytest.fixture(scope="module")
def mpich() -> str:
    path = _installed(Flavor.MPICH, ("mpiexec", "mpiexec.hydra", "mpiexec.mpich"))
    if path is None:
        pytest.skip("MPICH's mpiexec is not installed (pip install mpich)")
    return path


@pytest.fixture(scope="module")
def openmpi() -> str:
    path = _installed(Flavor.OPENMPI, ("mpiexec.openmpi", "mpirun.openmpi", "mpiexec"))
    if path is None:
        pytest.skip("Open MPI is not installed (apt-get install openmpi-bin)")
    return path


def _run(flavor: Flavor, job: MpiJob) -> str:
    done = subprocess.run(
        build_line(flavor, job),
        shell=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _hostfile(tmp_path: Path, flavor: Flavor, slots: int) -> str:
    """A one-host hostfile in the syntax the flavor reads (they differ)."""
    line = f"localhost slots={slots}" if flavor is Flavor.OPENMPI else f"localhost:{slots}"
    path = tmp_path / "hosts"
    path.write_text(line + "\n")
    return str(path)


@pytest.fixture(params=[Flavor.MPICH, Flavor.OPENMPI], ids=["mpich", "openmpi"])
def launcher(request: pytest.FixtureRequest) -> tuple:
    """(flavor, launcher path) for each flavor installed here."""
    name = "mpich" if request.param is Flavor.MPICH else "openmpi"
    return request.param, request.getfixturevalue(name)


def test_line_starts_every_rank(launcher: tuple) -> None:
    flavor, path = launcher
    out = _run(flavor, MpiJob("hostname", nprocs=4, mpiexec=path))
    assert out.splitlines() == [socket.gethostname()] * 4


def test_awkward_env_value_reaches_every_rank_exactly(launcher: tuple) -> None:
    flavor, path = launcher
    job = MpiJob(
        "printenv FABEXEC_AWKWARD", nprocs=3, env={"FABEXEC_AWKWARD": AWKWARD}, mpiexec=path
    )
    # Each rank prints two lines (the value holds a newline); launchers forward whole
    # lines but may interleave ranks' lines (Open MPI does under load).
    assert sorted(_run(flavor, job).splitlines()) == sorted(AWKWARD.splitlines() * 3)


def test_hosts_by_name_with_slots(launcher: tuple) -> None:
    flavor, path = launcher
    job = MpiJob("hostname", nprocs=3, hosts=["localhost"], slots={"localhost": 3}, mpiexec=path)
    assert len(_run(flavor, job).splitlines()) == 3


def test_whole_hostfile_by_path(launcher: tuple, tmp_path: Path) -> None:
    flavor, path = launcher
    job = MpiJob("hostname", nprocs=3, hostfile=_hostfile(tmp_path, flavor, 3), mpiexec=path)
    assert len(_run(flavor, job).splitlines()) == 3
