"""MPI jobs run for real: MPICH (the ``mpich`` wheel) and Open MPI, here and on the sandbox.

The launcher runs on this machine and its merged output is one stream keyed
``localhost``. Ranks are ``sleep`` processes with a unique duration where a
test must prove that none is left (see `tests.proctree`).
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any, Optional

import pytest

from fabexec import (
    CommandError,
    CommandTimeoutError,
    Exec,
    ExecInfoError,
    ExecType,
    Hostfile,
    MpiError,
    MpiExecInfo,
    PathNotFoundError,
)
from fabexec.mpi import MAX_HOSTS_ARG, placement, ssh_agent
from fabexec.mpi_flavors import Flavor, detect_flavor
from fabexec.sandbox import SandboxCluster
from tests.agents import new_key, running_agent
from tests.proctree import eventually, once_started, sleeping

OPENMPI = "/usr/bin/mpiexec.openmpi"  # Debian's openmpi-bin
AWKWARD = "two  words 'single' \"double\" $HOME `id` back\\slash"
RANKS = 4


def flavor_at(launcher: str) -> Optional[Flavor]:
    try:
        return detect_flavor(launcher)
    except MpiError:
        return None


@pytest.fixture(scope="module")
def mpich() -> str:
    """MPICH's mpiexec, a declared test dependency (setup.cfg's [test]): a broken or
    missing one fails these tests rather than skipping them."""
    try:
        flavor = detect_flavor("mpiexec")
    except MpiError as e:
        pytest.fail(f"mpich is a test dependency, but its mpiexec does not work: {e}")
    if flavor is not Flavor.MPICH:
        pytest.fail(f"mpich is a test dependency, but the mpiexec first on PATH is {flavor.name}")
    return "mpiexec"


@pytest.fixture(scope="module")
def openmpi() -> str:
    if flavor_at(OPENMPI) is not Flavor.OPENMPI:
        pytest.skip(f"Open MPI is not installed at {OPENMPI} (apt-get install openmpi-bin)")
    return OPENMPI


@pytest.fixture(params=["mpich", "openmpi"])
def launcher(request: pytest.FixtureRequest) -> str:
    """Each installed launcher, chosen by detection (``ExecType.MPI``)."""
    return request.getfixturevalue(request.param)


def run(cmd: Any, **info: Any) -> Exec:
    info.setdefault("nprocs", RANKS)
    return Exec(cmd, MpiExecInfo(collect_output=True, hide_output=True, timeout=60, **info))


def rank_variable(launcher: str) -> str:
    return "OMPI_COMM_WORLD_RANK" if launcher == OPENMPI else "PMI_RANK"


# --- one machine ----------------------------------------------------------------------


def test_every_rank_runs_and_the_output_is_one_localhost_stream(launcher: str) -> None:
    node = run("hostname", mpiexec=launcher)
    assert node.exit_code == 0, node.stderr
    assert node.stdout == {"localhost": f"{socket.gethostname()}\n" * RANKS}


def test_cmd_is_the_line_that_ran(mpich: str) -> None:
    node = run("echo ran", ppn=2, forward_env=False)
    assert node.cmd == "mpiexec -ppn 2 -n 4 echo ran"
    again = subprocess.run(node.cmd, shell=True, capture_output=True, text=True, timeout=60)
    assert again.stdout == node.stdout["localhost"] == "ran\n" * RANKS


def test_explicit_flavor_skips_detection_and_writes_its_line(openmpi: str) -> None:
    node = run("true", exec_type=ExecType.OPENMPI, mpiexec=openmpi, nprocs=2, forward_env=False)
    assert node.exit_code == 0, node.stderr
    assert node.cmd.startswith(f"{openmpi} --oversubscribe")


def test_env_with_spaces_and_quotes_reaches_every_rank(launcher: str) -> None:
    node = run("printenv FABEXEC_AWKWARD", mpiexec=launcher, env={"FABEXEC_AWKWARD": AWKWARD})
    assert node.exit_code == 0, node.stderr
    assert node.stdout["localhost"] == f"{AWKWARD}\n" * RANKS
    flag = "-x" if launcher == OPENMPI else "-genv"
    assert f" {flag} " in node.cmd  # forwarded by the launcher, not only exported


def test_a_failing_rank_gives_its_exit_code(launcher: str) -> None:
    fail_rank_2 = shlex.quote(f"exit $(( ${rank_variable(launcher)} == 2 ? 7 : 0 ))")
    node = run(f"sh -c {fail_rank_2}", mpiexec=launcher)
    assert node.exit_code == 7
    assert node.failed()


def test_cwd_is_the_launchers_folder_and_the_ranks(mpich: str, tmp_path: Path) -> None:
    node = run("pwd", cwd=tmp_path)
    assert node.stdout["localhost"] == f"{tmp_path}\n" * RANKS


def test_missing_cwd_is_refused_before_anything_runs(mpich: str, tmp_path: Path) -> None:
    with pytest.raises(PathNotFoundError):
        Exec("true", MpiExecInfo(nprocs=1, cwd=tmp_path / "absent"))


def test_list_of_commands_runs_one_job_after_another(mpich: str) -> None:
    node = run(["echo one", "false", "echo three"], nprocs=2, forward_env=False)
    assert node.stdout["localhost"] == "one\none\nthree\nthree\n"
    assert node.exit_code == 0  # the last job's, as for the lines of a script
    assert node.cmd.splitlines() == [f"mpiexec -n 2 {c}" for c in ("echo one", "false",
                                                                    "echo three")]


def test_exit_code_of_a_list_is_the_last_jobs(mpich: str) -> None:
    assert run(["true", "false"], nprocs=1).exit_code == 1


def test_a_program_of_several_lines_is_refused(mpich: str) -> None:
    with pytest.raises(CommandError, match="list"):
        Exec("echo a\necho b", MpiExecInfo(nprocs=1))


@pytest.mark.parametrize("exec_type", [ExecType.MPI, ExecType.MPICH, ExecType.OPENMPI])
def test_missing_launcher_is_refused_at_construction_by_name(exec_type: ExecType) -> None:
    with pytest.raises(MpiError, match="'fabexec-no-such-mpiexec'.*pip install mpich"):
        Exec("true", MpiExecInfo(exec_type=exec_type, mpiexec="fabexec-no-such-mpiexec",
                                 nprocs=1))


def test_nprocs_is_required_when_the_job_runs() -> None:
    with pytest.raises(ExecInfoError) as raised:
        Exec("true", MpiExecInfo())
    assert raised.value.field == "nprocs"


# --- ending a job -------------------------------------------------------------------------


def test_timeout_ends_the_launcher_and_every_rank(launcher: str, tag: str) -> None:
    """Every rank said it runs before the timeout fired (else a longer one is tried)."""
    node = once_started(
        lambda timeout: Exec(f"sh -c 'echo started; exec sleep {tag}'",
                             MpiExecInfo(nprocs=RANKS, mpiexec=launcher, timeout=timeout,
                                         collect_output=True, hide_output=True)),
        # Then Hydra reports the ranks' end: BAD TERMINATION...
        lambda node: node.stdout["localhost"].startswith("started\n" * RANKS),
        timeouts=(8.0, 30.0))
    assert node.exit_code == 124
    assert isinstance(node.errors["localhost"], CommandTimeoutError)
    assert running(tag) == []


def test_kill_ends_the_launcher_and_every_rank(launcher: str, tag: str) -> None:
    node = Exec(f"sleep {tag}", MpiExecInfo(nprocs=RANKS, mpiexec=launcher, exec_async=True,
                                            hide_output=True))
    assert eventually(lambda: len(sleeping(tag)) == RANKS), "the ranks never started"
    node.kill()
    assert running(tag) == []
    assert node.failed()


def running(tag: str) -> list:
    """The ranks ``sleep {tag}`` and the launchers whose line names them."""
    found = subprocess.run(["pgrep", "-af", f"sleep {tag}"], capture_output=True, text=True,
                           timeout=30)
    return [line for line in found.stdout.splitlines() if "pgrep" not in line]


# --- where ranks run ------------------------------------------------------------------------


def test_local_hosts_add_no_host_options() -> None:
    assert placement(Hostfile(all_hosts=["localhost:4"]), Flavor.MPICH) == {}
    assert placement(None, Flavor.MPICH) == {}


def test_hosts_given_by_name_are_passed_by_name_with_slots() -> None:
    hosts = Hostfile(all_hosts=["n1:2", "n2"])
    assert placement(hosts, Flavor.MPICH) == {"hosts": ["n1", "n2"],
                                              "slots": {"n1": 2, "n2": None}}


def test_a_subset_of_a_hostfile_is_passed_by_name(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text("n1\nn2\nn3\n")
    assert placement(Hostfile(path=path).subset(2), Flavor.MPICH) == {
        "hosts": ["n1", "n2"], "slots": {"n1": None, "n2": None}}


@pytest.mark.parametrize("flavor, text", [
    (Flavor.MPICH, "n1:2\nn2\n"),
    (Flavor.OPENMPI, "n1 slots=2\nn2\n"),
])
def test_a_hostfile_in_the_flavors_syntax_is_passed_by_path(tmp_path: Path, flavor: Flavor,
                                                            text: str) -> None:
    path = tmp_path / "hosts"
    path.write_text(text)
    assert placement(Hostfile(path=path), flavor) == {"hostfile": str(path)}


@pytest.mark.parametrize("flavor, written", [
    (Flavor.MPICH, "n1:2\nn2\nn3\n"),
    (Flavor.OPENMPI, "n1 slots=2\nn2\nn3\n"),
    (Flavor.CRAY_MPICH, "n1\nn2\nn3\n"),
])
def test_a_hostfile_the_flavor_cannot_read_is_passed_as_a_copy_in_its_syntax(
        tmp_path: Path, flavor: Flavor, written: str) -> None:
    path = tmp_path / "hosts"
    path.write_text("# comments and ranges are ours, not the launcher's\nn1 slots=2\nn[2-3]\n")
    copy = placement(Hostfile(path=path), flavor)["hostfile"]
    assert copy != str(path)
    assert Path(copy).read_text() == written


def test_a_host_list_too_long_for_one_argument_goes_in_a_hostfile() -> None:
    count = MAX_HOSTS_ARG // 8 + 1
    hosts = Hostfile(all_hosts=f"node-[{1:06d}-{count:06d}]")
    copy = placement(hosts, Flavor.MPICH)["hostfile"]
    assert Path(copy).read_text().splitlines() == list(hosts)


# --- the launcher's ssh ------------------------------------------------------------------------


def test_without_ssh_settings_the_launcher_keeps_its_own_way() -> None:
    assert ssh_agent(MpiExecInfo(nprocs=1), Flavor.MPICH) is None


def test_hydra_gets_an_executable_ssh_wrapper_with_the_settings(tmp_path: Path) -> None:
    info = MpiExecInfo(nprocs=1, ssh_config=tmp_path / "cfg", user="me", port=2222)
    wrapper = ssh_agent(info, Flavor.MPICH)
    assert wrapper is not None and os.access(wrapper, os.X_OK)
    text = Path(wrapper).read_text()
    assert f"-F {tmp_path / 'cfg'}" in text and "-l me" in text and "-p 2222" in text
    assert text.rstrip().endswith('"$@"')


def test_open_mpi_gets_the_ssh_line_every_host_can_run(tmp_path: Path) -> None:
    info = MpiExecInfo(nprocs=1, ssh_config=tmp_path / "cfg", strict_ssh=True)
    assert ssh_agent(info, Flavor.OPENMPI) == (
        "ssh -o BatchMode=yes -o ConnectTimeout=10 -o StrictHostKeyChecking=yes "
        f"-F {tmp_path / 'cfg'}")


def test_open_mpi_cannot_take_a_path_with_blanks(tmp_path: Path) -> None:
    info = MpiExecInfo(nprocs=1, ssh_config=tmp_path / "my cfg")
    with pytest.raises(MpiError, match="blanks"):
        ssh_agent(info, Flavor.OPENMPI)


def test_cray_refuses_ssh_settings() -> None:
    with pytest.raises(MpiError, match="PALS"):
        ssh_agent(MpiExecInfo(nprocs=1, user="me"), Flavor.CRAY_MPICH)


# --- several hosts: the sandbox -------------------------------------------------------------------


def cluster_info(cluster: SandboxCluster, launcher: str, **info: Any) -> MpiExecInfo:
    settings = {"hostfile": cluster.hostfile, "collect_output": True, "timeout": 60, **info}
    return MpiExecInfo(nprocs=RANKS, ppn=2, mpiexec=launcher, ssh_config=cluster.ssh_config,
                       hide_output=True, **settings)


@pytest.fixture
def nodes(cluster: SandboxCluster, launcher: str) -> SandboxCluster:
    """The sandbox, once its nodes can run the launcher's remote part."""
    if not cluster.own_hostnames:
        pytest.skip("the sandbox nodes share this machine's hostname (no UTS namespaces)")
    if launcher != OPENMPI:
        _assert_nodes_can_run_hydra_proxy(cluster)
    return cluster


def _assert_nodes_can_run_hydra_proxy(cluster: SandboxCluster) -> None:
    """Hydra starts ``hydra_pmi_proxy`` on each node by the path it has here."""
    found = Exec("sh -c 'readlink /proc/$PPID/exe'",
                 MpiExecInfo(nprocs=1, collect_output=True, hide_output=True, timeout=60))
    proxy = found.stdout["localhost"].strip()
    check = subprocess.run(["ssh", "-F", str(cluster.ssh_config), "-o", "BatchMode=yes",
                            cluster.hosts[0], f"test -x {shlex.quote(proxy)}"],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, (
        f"the sandbox's user {cluster.user} cannot run {proxy}, which Hydra starts on every "
        "node by that path: the sandbox must expose the launcher's installation to its nodes")


def test_ranks_are_spread_over_the_nodes_ppn_at_a_time(nodes: SandboxCluster,
                                                       launcher: str) -> None:
    node = Exec("hostname", cluster_info(nodes, launcher))
    assert node.exit_code == 0, node.stderr
    assert Counter(node.stdout["localhost"].split()) == {"node1": 2, "node2": 2}


def test_a_subset_of_a_hostfile_runs_on_its_hosts(nodes: SandboxCluster, launcher: str,
                                                  tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text("node4\nnode3\nnode2\nnode1\n")
    subset = Hostfile(path=path).subset(2)  # passed by name: node4, node3
    node = Exec("hostname", cluster_info(nodes, launcher, hostfile=subset))
    assert node.exit_code == 0, node.stderr
    assert Counter(node.stdout["localhost"].split()) == {"node4": 2, "node3": 2}


def test_env_reaches_the_ranks_on_other_hosts(nodes: SandboxCluster, launcher: str) -> None:
    info = cluster_info(nodes, launcher, env={"FABEXEC_AWKWARD": AWKWARD})
    node = Exec("printenv FABEXEC_AWKWARD", info)
    assert node.exit_code == 0, node.stderr
    assert node.stdout["localhost"] == f"{AWKWARD}\n" * RANKS


def test_kill_ends_the_ranks_on_every_host(nodes: SandboxCluster, launcher: str,
                                           tag: str) -> None:
    # Without the tag the local reaper cannot see the remote ranks (this machine's
    # /proc shows the sandbox nodes' processes): only the launcher's own clean-up can end
    # them, and kill() returns once the launcher, and so its clean-up, is over.
    info = cluster_info(nodes, launcher, exec_async=True, timeout=None)
    node = Exec(f"env -u FABEXEC_TAG sleep {tag}", info)
    assert eventually(lambda: len(sleeping(tag)) == RANKS), "the ranks never started"
    node.kill()
    assert sleeping(tag) == []


# --- the same login as fabexec's own connections ------------------------------------------


def login_free_config(cluster: SandboxCluster, path: Path) -> Path:
    """The cluster's ssh_config without its User and keys: only where each node listens."""
    kept = [line for line in cluster.ssh_config.read_text().splitlines()
            if line.split()[:1] not in (["User"], ["IdentityFile"], ["IdentitiesOnly"])]
    path.write_text("\n".join(kept) + "\n")
    return path


def test_the_launchers_ssh_logs_in_with_the_given_user_and_key_alone(
        nodes: SandboxCluster, launcher: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The caller's agent holds 7 keys the nodes refuse, more than sshd's MaxAuthTries (6).

    Offered before the given key, they would end the login ('Too many authentication
    failures'), as the caller's default keys did in issue 14; fabexec's own connections
    use the given key alone, and so must the launcher's ssh.
    """
    refused = [new_key(tmp_path / f"refused{i}") for i in range(7)]
    with running_agent(refused) as agent_socket:
        monkeypatch.setenv("SSH_AUTH_SOCK", agent_socket)
        info = MpiExecInfo(nprocs=RANKS, ppn=2, mpiexec=launcher, hostfile=nodes.hostfile,
                           user=nodes.user, pkey=nodes.key,
                           ssh_config=login_free_config(nodes, tmp_path / "ssh_config"),
                           collect_output=True, hide_output=True, timeout=60)
        node = Exec("hostname", info)
    assert node.exit_code == 0, node.stderr
    assert Counter(node.stdout["localhost"].split()) == {"node1": 2, "node2": 2}
