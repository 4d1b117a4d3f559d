"""One test per row of the README's "Migrating from jarvis-util" table (``row`` in each name)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import fabexec.exec
from fabexec import (
    Chmod,
    Cmake,
    CommandError,
    Exec,
    ExecInfoError,
    FabexecError,
    Hostfile,
    HostfileError,
    JutilManager,
    LocalExec,
    LocalExecInfo,
    PsshExecInfo,
    Put,
    Scp,
    SshExec,
    SshExecInfo,
    TransferError,
)
from fabexec.sandbox import SandboxCluster
from tests.clusters import openssh, pssh_info, ssh_info
from tests.proctree import eventually
from tests.test_transfer import remote_folder

AWKWARD = "two  words 'single' \"double\" $HOME `id` back\\slash"


def quiet(**changes: object) -> LocalExecInfo:
    return LocalExecInfo(collect_output=True, hide_output=True, **changes)


def test_row01_commands_run_in_bash() -> None:
    assert Exec('echo "${BASH_VERSION:+bash}"', quiet()).stdout == {"localhost": "bash\n"}


def test_row02_a_command_expands_on_the_host_that_runs_it(
        nodes: SandboxCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FABEXEC_HERE_ONLY", "here")
    node = Exec('echo "${FABEXEC_HERE_ONLY-unset} $(hostname)"', pssh_info(nodes))
    assert node.stdout == {h: f"unset {h}\n" for h in nodes.hosts}
    passed = Exec('echo "$FABEXEC_HERE_ONLY"', pssh_info(nodes, env={"FABEXEC_HERE_ONLY": "x"}))
    assert set(passed.stdout.values()) == {"x\n"}  # what to write instead


def test_row03_cwd_applies_on_the_remote_host(nodes: SandboxCluster) -> None:
    assert Exec("pwd", pssh_info(nodes, cwd="/usr")).stdout == {h: "/usr\n" for h in nodes.hosts}


def test_row04_a_signal_gives_128_plus_n_and_a_timeout_124(nodes: SandboxCluster) -> None:
    assert Exec("kill -9 $$", quiet()).exit_code == 137
    assert Exec("sleep 60", quiet(timeout=0.5)).exit_code == 124
    remote = Exec("kill -9 $$", ssh_info(nodes, nodes.hosts[0]))
    assert remote.exit_code == 137


def test_row05_sleep_ms_is_milliseconds_after_the_start(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Exec's wait is 3 s for 3000, and the command speaks while Exec waits: the wait comes
    after the start (the command's own mark is awaited inside the wait, not a window)."""
    said = tmp_path / "said"
    waits = []

    def sleep(seconds: float) -> None:
        waits.append((seconds, eventually(said.exists)))

    monkeypatch.setattr(fabexec.exec, "time", SimpleNamespace(sleep=sleep))
    Exec(f"touch {said}", quiet(exec_async=True, sleep_ms=3000)).wait()
    assert waits == [(3.0, True)]


def test_row06_an_unknown_keyword_is_refused() -> None:
    with pytest.raises(ExecInfoError, match="did you mean hostfile"):
        PsshExecInfo(hostfle="hosts.txt")


def test_row07_several_hostfile_sources_are_refused() -> None:
    with pytest.raises(HostfileError, match="only one of"):
        Hostfile(text="a", all_hosts=["b"])


def test_row08_an_empty_subset_is_refused_and_past_the_end_clamps() -> None:
    with pytest.raises(HostfileError):
        Hostfile(text="a").subset(0)
    assert Hostfile(text="a").subset(2).hosts == ["a"]


def test_row09_hostfiles_second_positional_is_all_hosts() -> None:
    assert Hostfile(None, ["a", "b"]).hosts == ["a", "b"]
    with pytest.raises(HostfileError, match="not found"):
        Hostfile(path="/nonexistent/fabexec-hosts")


def test_row10_a_local_env_holds_what_was_given() -> None:
    info = LocalExecInfo(env={"OWN": "1"})
    assert info.env == {"OWN": "1"}
    assert info.basic_env["PATH"] == os.environ["PATH"] and info.basic_env["OWN"] == "1"


def test_row11_a_value_is_quoted_once(nodes: SandboxCluster) -> None:
    node = SshExec("printenv FABEXEC_AWKWARD",
                   ssh_info(nodes, nodes.hosts[0], env={"FABEXEC_AWKWARD": AWKWARD}))
    assert node.stdout == AWKWARD + "\n"


def test_row12_kill_spares_the_script_that_calls_it(tag: str) -> None:
    victim = subprocess.Popen(["sleep", tag])
    script = ("import sys; from fabexec import Kill, LocalExecInfo; "
              f"Kill('sleep {tag}', LocalExecInfo(hide_output=True)); print('survived')")
    caller = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, cwd=Path(__file__).parents[2])
    assert (caller.returncode, caller.stdout) == (0, "survived\n"), caller.stderr
    assert victim.wait(timeout=30) == -9


def test_row13_errors_are_typed_and_name_what_is_wrong() -> None:
    with pytest.raises(CommandError) as caught:
        Chmod(path="/tmp/x")
    assert isinstance(caught.value, FabexecError) and isinstance(caught.value, ValueError)
    with pytest.raises(ExecInfoError) as wrong:
        LocalExecInfo(timeout="soon")
    assert wrong.value.field == "timeout"


def test_row14_cmake_values_are_quoted_once(tmp_path: Path) -> None:
    (tmp_path / "CMakeLists.txt").write_text("cmake_minimum_required(VERSION 3.10)\n"
                                             "project(p NONE)\nmessage(STATUS \"L=${L}\")\n")
    node = Cmake(str(tmp_path), str(tmp_path / "b"), {"L": "a;b"}, quiet())
    assert "-- L=a;b\n" in node.stdout["localhost"] and "'-DL=a;b'" in node.cmd


def test_row15_jutil_managers_share_one_state() -> None:
    JutilManager().collect_output = True
    assert JutilManager.get_instance().collect_output
    assert Exec("echo kept", LocalExecInfo(hide_output=True)).stdout == {"localhost": "kept\n"}


def test_row16_internals_give_way_to_the_exec_itself() -> None:
    node = LocalExec("echo x", quiet())
    assert not hasattr(node, "exec_") and isinstance(node.get_pid(), int)
    assert (node.stdout, node.exit_code, node.wait()) == ("x\n", 0, 0)


def test_row17_only_a_local_command_waited_for_reads_the_callers_stdin(
        nodes: SandboxCluster) -> None:
    script = ("import sys\nfrom fabexec import Exec, LocalExecInfo, SshExecInfo\n"
              "quiet = dict(collect_output=True, hide_output=True)\n"
              "remote = SshExecInfo(hosts=sys.argv[1], ssh_config=sys.argv[2], **quiet)\n"
              "print(repr(Exec('cat', remote).stdout))\n"
              "print(repr(Exec('cat', LocalExecInfo(exec_async=True, **quiet)).wait()))\n"
              "print(repr(Exec('cat', remote.mod(stdin=sys.stdin.buffer)).stdout))\n")
    caller = subprocess.run([sys.executable, "-c", script, nodes.hosts[0], str(nodes.ssh_config)],
                            input="fed\n", capture_output=True, text=True, timeout=60,
                            cwd=Path(__file__).parents[2])
    host = nodes.hosts[0]
    assert caller.stdout.splitlines() == [repr({host: ""}), "0", repr({host: "fed\n"})], \
        caller.stderr


def here() -> SshExecInfo:
    return SshExecInfo(hosts="localhost", hide_output=True)


def test_row18_a_copy_that_succeeded_gives_0_and_is_over_when_scp_returns(
        nodes: SandboxCluster, tmp_path: Path) -> None:
    local = tmp_path / "x.txt"
    local.write_text("x\n")
    host = nodes.hosts[0]
    with remote_folder(nodes) as folder:
        node = Scp([(str(local), f"{folder}/x.txt")], ssh_info(nodes, host, exec_async=True))
        assert openssh(nodes, host, f"cat {folder}/x.txt").stdout == "x\n"  # before wait()
        assert (node.exit_code, node.failed(), node.wait(), node.stderr) == (0, False, 0, "")


def test_row19_scp_to_localhost_copies_here(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a\n")
    assert Scp([(str(tmp_path / "a.txt"), str(tmp_path / "b.txt"))], here()).exit_code == 0
    assert (tmp_path / "b.txt").read_text() == "a\n"


def test_row20_the_matches_of_a_glob_go_inside_dst_even_when_one_matches(
        tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a\n")
    assert Scp([(f"{tmp_path}/*.txt", str(tmp_path / "dst"))], here()).exit_code == 0
    assert (tmp_path / "dst" / "a.txt").read_text() == "a\n"


def test_row21_a_glob_that_matches_nothing_raises_before_any_host_is_contacted() -> None:
    with pytest.raises(TransferError, match=r"'/nonexistent/\*\.txt' matches no file"):
        Scp("/nonexistent/*.txt", PsshExecInfo(hosts=["never.invalid"]))


def test_row22_a_folder_scp_to_the_same_path_there_becomes_that_folder(
        tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f.txt").write_text("f\n")
    (tmp_path / "dst").mkdir()  # rsync -a src dst would make dst/src
    assert Scp([(str(tmp_path / "src"), str(tmp_path / "dst"))], here()).exit_code == 0
    assert sorted(p.name for p in (tmp_path / "dst").iterdir()) == ["f.txt"]


def test_row23_sftp_keeps_modification_times_to_the_second(nodes: SandboxCluster,
                                                          tmp_path: Path) -> None:
    local = tmp_path / "old.txt"
    local.write_text("old\n")
    os.utime(local, (1_000_000_000.75, 1_000_000_000.75))
    host = nodes.hosts[0]
    with remote_folder(nodes) as folder:
        assert Put(local, f"{folder}/", ssh_info(nodes, host)).exit_code == 0
        assert openssh(nodes, host, f"stat -c %.9Y {folder}/old.txt").stdout == \
            "1000000000.000000000\n"
