"""Exec on localhost: the command, its shell, env, cwd, stdin, async runs and results.

Output routing is in test_output.py, ExecInfo checks in test_execinfo.py,
kill and timeout in test_kill.py.
"""

from __future__ import annotations

import errno
import gc
import io
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from invoke import Responder

import fabexec.exec
from fabexec import (
    CommandError,
    Exec,
    ExecInfoError,
    LocalExecInfo,
    PathNotFoundError,
    StdinReadError,
)
from fabexec.sandbox import Cluster
from tests.client import logged_in
from tests.proctree import eventually, sleeping


def run(cmd: Any, **info: Any) -> Exec:
    """Run ``cmd`` quietly, collecting its output."""
    info.setdefault("collect_output", True)
    info.setdefault("hide_output", True)
    return Exec(cmd, LocalExecInfo(**info))


def out(cmd: Any, **info: Any) -> str:
    return run(cmd, **info).stdout["localhost"]


# ---- the command and its shell ---------------------------------------------

@pytest.mark.parametrize("code", [0, 1, 3, 255])
def test_the_exit_code_is_the_commands(code: int) -> None:
    node = run(f"exit {code}")
    assert node.exit_code == code
    assert node.exit_codes == {"localhost": code}


def test_a_command_killed_by_a_signal_exits_128_plus_its_number() -> None:
    assert run("kill -TERM $$").exit_code == 128 + 15


def test_the_shell_is_bash() -> None:
    assert out('[[ -n "$BASH_VERSION" ]] && echo bash') == "bash\n"


def test_a_list_of_commands_runs_like_lines_of_one_script() -> None:
    assert out(["cd /", "X=kept", 'echo "$PWD $X"']) == "/ kept\n"


def test_a_list_of_commands_exits_with_the_last_ones_code() -> None:
    assert run(["false", "true"]).exit_code == 0
    assert run(["true", "echo fine", "(exit 4)"]).exit_code == 4


def test_a_failing_line_does_not_stop_the_lines_after_it() -> None:
    assert out(["false", "echo after"]) == "after\n"


def test_a_tuple_of_commands_is_a_list_of_commands() -> None:
    assert out(("echo a", "echo b")) == "a\nb\n"


BIG = 200_000  # bytes: past Linux's 128 KiB cap on one argument


@pytest.mark.parametrize("cmd, env, expected", [
    ("echo " + "x" * BIG, None, "x" * BIG + "\n"),
    ([f"echo line {n:08d}" for n in range(10_000)], None,
     "".join(f"line {n:08d}\n" for n in range(10_000))),
    ('printf %s "$A" | wc -c; : ' + "y" * 20_000, {"A": "z" * 120_000}, "120000\n"),
], ids=["one long line", "ten thousand lines", "a long env value"])
def test_a_command_of_any_size_runs(cmd: Any, env: Any, expected: str) -> None:
    node = run(cmd, env=env)
    assert (node.exit_code, node.stdout["localhost"]) == (0, expected)


def test_a_long_script_leaves_the_command_no_extra_descriptor() -> None:
    small = out("ls /proc/self/fd | wc -l")
    assert out("ls /proc/self/fd | wc -l\n: " + "y" * BIG) == small


def test_a_command_that_cannot_start_raises_its_own_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FABEXEC_TEST_HUGE", "x" * BIG)  # execve refuses it: E2BIG
    with pytest.raises(OSError) as raised:
        run("true")
    assert raised.value.errno == errno.E2BIG


@pytest.mark.parametrize("cmd", [5, None, b"echo", [], "", "   \n", ["echo a", 5], ["", " "]],
                         ids=repr)
def test_a_bad_command_raises_command_error_before_anything_runs(cmd: Any) -> None:
    with pytest.raises(CommandError):
        Exec(cmd)


def test_exec_info_must_be_an_exec_info() -> None:
    with pytest.raises(TypeError):
        Exec("true", {"collect_output": True})  # type: ignore[arg-type]


# ---- env -------------------------------------------------------------------

ENV_VALUES = [
    "two words", "it's", 'say "hi"', "$HOME and ${PATH}", "`whoami` $(id -u)",
    "back\\slash\\", "line 1\nline 2\n", "tab\there", "*", "", "ünïcødé €", "; echo pwned",
    "-n", "a=b", "!!",
]


@pytest.mark.parametrize("value", ENV_VALUES, ids=repr)
def test_an_env_value_reaches_the_command_exactly(value: str) -> None:
    assert out('printf "%s" "$FABEXEC_V"', env={"FABEXEC_V": value}) == value


def test_env_is_exported_to_the_commands_children() -> None:
    value = "child's $value"
    assert out("""bash -c 'printf "%s" "$FABEXEC_V"'""", env={"FABEXEC_V": value}) == value


def test_env_is_merged_over_the_current_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FABEXEC_OUTER", "outer")
    assert out('echo "$FABEXEC_OUTER $FABEXEC_INNER"', env={"FABEXEC_INNER": "inner"}) == (
        "outer inner\n")


def test_env_overrides_a_variable_of_the_current_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FABEXEC_X", "old")
    assert out('echo "$FABEXEC_X"', env={"FABEXEC_X": "new"}) == "new\n"


def test_the_current_environment_is_seen_without_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FABEXEC_OUTER", "outer value")
    assert out('echo "$FABEXEC_OUTER"') == "outer value\n"


# ---- cwd -------------------------------------------------------------------

def test_cwd_is_where_the_command_runs(tmp_path: Path) -> None:
    assert out("pwd -P", cwd=tmp_path) == f"{tmp_path.resolve()}\n"


def test_cwd_with_spaces_quotes_and_dollars_in_its_name(tmp_path: Path) -> None:
    folder = tmp_path / "my dir's $HOME \"x\""
    folder.mkdir()
    assert out("pwd -P", cwd=str(folder)) == f"{folder.resolve()}\n"


def test_a_relative_cwd_is_relative_to_ours(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    assert out("pwd -P", cwd="sub") == f"{(tmp_path / 'sub').resolve()}\n"


@pytest.mark.parametrize("make", ["missing", "a file"])
def test_a_cwd_that_is_no_folder_raises_naming_it_before_anything_runs(
    make: str, tmp_path: Path,
) -> None:
    cwd = tmp_path / "nowhere"
    if make == "a file":
        cwd.write_text("")
    marker = tmp_path / "ran"
    with pytest.raises(PathNotFoundError) as caught:
        Exec(f"touch {marker}", LocalExecInfo(cwd=cwd))
    assert (caught.value.field, caught.value.path) == ("cwd", str(cwd))
    assert str(cwd) in str(caught.value)
    assert not marker.exists()


# ---- stdin -----------------------------------------------------------------

def test_stdin_as_text_is_fed_to_the_command() -> None:
    assert out("cat", stdin="hello\nwörld\n") == "hello\nwörld\n"


def test_stdin_as_bytes_is_fed_byte_for_byte(tmp_path: Path) -> None:
    data = os.urandom(4 * 1024 * 1024)  # more than a pipe holds: fed while output is read
    run("cat", stdin=data, pipe_stdout=tmp_path / "out", collect_output=False)
    assert (tmp_path / "out").read_bytes() == data


@pytest.mark.parametrize("mode", ["rb", "r"])
def test_stdin_as_an_open_file_is_read_by_the_command(mode: str, tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("from a file\n" * 10_000)
    with open(source, mode) as f:
        assert out("cat", stdin=f) == source.read_text()


@pytest.mark.parametrize("make", [lambda: io.BytesIO(b"in memory\n"),
                                  lambda: io.StringIO("in memory\n")],
                         ids=["BytesIO", "StringIO"])
def test_stdin_as_an_in_memory_file_is_fed_to_the_command(make: Any) -> None:
    assert out("cat", stdin=make()) == "in memory\n"


def test_a_closed_stdin_file_raises_naming_stdin_before_anything_runs(tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("data\n")
    with open(source, "rb") as f:
        pass
    with pytest.raises(ExecInfoError, match="stdin"):
        run("cat", stdin=f)


class FailingStream(io.RawIOBase):
    """A stream whose every read fails, as a broken device or socket would."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        raise OSError(errno.EIO, "the device broke")


@pytest.mark.timeout(60)
def test_a_stdin_whose_read_raises_ends_the_commands_input_and_is_its_error() -> None:
    node = run("cat; echo read to the end", stdin=FailingStream(), timeout=30)
    assert node.stdout["localhost"] == "read to the end\n"  # cat got EOF, not a timeout
    error = node.errors["localhost"]
    assert isinstance(error, StdinReadError) and "stdin" in str(error)
    assert "the device broke" in str(error)
    assert node.failed()


def test_without_stdin_a_read_gets_the_callers_here_empty() -> None:
    """The caller's stdin, as in a bash script (tests/jarvis_compat/test_stdin_inherited.py);
    /dev/null here, as pytest makes it, also under ``pytest -s`` at a terminal."""
    saved = os.dup(0)
    try:
        with open(os.devnull) as null:
            os.dup2(null.fileno(), 0)
        assert out('read -r line; echo "read exit $?"') == "read exit 1\n"
        assert out("cat") == ""
    finally:
        os.dup2(saved, 0)
        os.close(saved)


def test_stdin_the_command_never_reads_does_not_block_it() -> None:
    assert run("true", stdin=b"x" * (8 * 1024 * 1024)).exit_code == 0


# ---- watchers --------------------------------------------------------------

PROMPT_SCRIPT = "printf 'name? '; read -r x; echo \"hi $x\""


def test_a_responder_answers_a_prompt() -> None:
    answer = Responder(pattern=r"name\? ", response="bob\n")
    assert out(PROMPT_SCRIPT, watchers=[answer]) == "name? hi bob\n"


def test_a_responder_answers_even_when_the_output_is_neither_shown_nor_kept(
        tmp_path: Path) -> None:
    answer = Responder(pattern=r"name\? ", response="bob\n")
    reply = tmp_path / "reply"
    node = Exec(f"printf 'name? '; read -r x; echo \"hi $x\" > {reply}",
                LocalExecInfo(hide_output=True, watchers=[answer], timeout=20))
    assert (node.exit_code, reply.read_text()) == (0, "hi bob\n")


def test_a_responder_answers_again_after_much_more_output_than_its_window() -> None:
    answer = Responder(pattern=r"name\? ", response="bob\n")
    flood = "head -c 300000 /dev/zero | tr '\\0' x; echo"
    node = run(["printf 'name? '; read -r a", flood, "printf 'name? '; read -r b",
                'echo "got $a $b"'], watchers=[answer])
    assert node.stdout["localhost"].endswith("name? got bob bob\n")


def test_a_responder_answering_after_stdin_was_closed_is_ignored() -> None:
    answer = Responder(pattern=r"more\?", response="yes\n")
    node = run("cat >/dev/null; echo 'more?'", stdin=b"data", watchers=[answer])
    assert (node.exit_code, node.stdout["localhost"]) == (0, "more?\n")


# ---- sudo ------------------------------------------------------------------

def test_sudo_runs_the_script_under_non_interactive_sudo_keeping_the_environment() -> None:
    node = run("true", sudo=True)
    assert node.cmd.startswith('sudo -n -E FABEXEC_TAG="$FABEXEC_TAG" bash -c ')


# Run as root, a command that ignored ``sudo`` would still run as root: these run their
# `Exec` as a login user of a sandbox node (not root; sudo as the sandbox's rules give it).

SUDO_PROBE = """
import os
from fabexec import Exec, LocalExecInfo
os.environ["FABEXEC_CALLER"] = "here"
runs = {name: Exec('echo "$(id -u) $FABEXEC_V ${FABEXEC_CALLER:-reset}"',
                   LocalExecInfo(collect_output=True, hide_output=True, env={"FABEXEC_V": "a b"},
                                 **info))
        for name, info in values["infos"].items()}
result({"uid": os.getuid(), **{name: [node.exit_code, node.stdout["localhost"]]
                              for name, node in runs.items()}})
"""


@pytest.fixture
def sudo_cluster(cluster: Cluster) -> Cluster:
    if not cluster.sudo:
        pytest.skip(f"{cluster.user} has no sudo on this sandbox (not started as root)")
    return cluster


def test_sudo_runs_the_command_as_root_keeping_the_callers_environment_unless_told(
        sudo_cluster: Cluster) -> None:
    seen = logged_in(sudo_cluster, sudo_cluster.hosts[0], sudo_cluster.user, SUDO_PROBE,
                     infos={"plain": {}, "sudo": {"sudo": True},
                            "reset": {"sudo": True, "sudoenv": False}})
    assert seen["uid"] != 0
    assert seen["plain"] == [0, f"{seen['uid']} a b here\n"]
    assert seen["sudo"] == [0, "0 a b here\n"]
    assert seen["reset"] == [0, "0 a b reset\n"]  # env is the command's own: still there


def test_sudo_of_a_user_with_a_password_runs_with_sudo_password_and_fails_without_it(
        sudo_cluster: Cluster) -> None:
    user, password = sudo_cluster.password_user, sudo_cluster.sudo_password
    if user is None or password is None:
        pytest.skip("this sandbox has no user whose sudo asks for a password")
    seen = logged_in(sudo_cluster, sudo_cluster.hosts[0], user, SUDO_PROBE,
                     infos={"given": {"sudo": True, "sudo_password": password},
                            "none": {"sudo": True}})
    assert seen["uid"] != 0
    assert seen["given"] == [0, "0 a b here\n"]
    assert seen["none"][0] != 0 and seen["none"][1] == ""


# ---- async, sleep_ms -------------------------------------------------------

def wait_for(path: Path) -> str:
    """A command that waits (boundedly) for ``path`` to appear."""
    return f"for _ in $(seq 3000); do [ -e '{path}' ] && break; sleep 0.01; done"


def test_exec_async_returns_before_the_command_ends(tmp_path: Path) -> None:
    go = tmp_path / "go"
    node = run([wait_for(go), "echo done", "exit 4"], exec_async=True)
    assert not node.done
    assert node.exit_code is None
    go.touch()
    assert node.wait() == 4


def test_wait_fills_the_results_of_an_async_command(tmp_path: Path) -> None:
    go = tmp_path / "go"
    node = run([wait_for(go), "echo out; echo err >&2"], exec_async=True)
    go.touch()
    node.wait()
    assert (node.stdout, node.stderr) == ({"localhost": "out\n"}, {"localhost": "err\n"})
    assert node.done


def test_progress_counts_the_local_host_once_it_ended(tmp_path: Path) -> None:
    go = tmp_path / "go"
    node = run([wait_for(go), "exit 3"], exec_async=True)
    assert node.progress() == (0, 0, 1)
    go.touch()
    assert eventually(lambda: node.progress() == (1, 1, 1))
    node.wait()
    assert node.progress() == (1, 1, 1)


def test_wait_again_returns_the_same_exit_code() -> None:
    node = run("exit 5", exec_async=True)
    assert node.wait() == 5
    assert node.wait() == 5


def test_sleep_ms_waits_after_starting_an_async_command(tag: str, monkeypatch: Any) -> None:
    waits = []

    def sleep(seconds: float) -> None:
        # Were the wait before the start, the command could not start meanwhile.
        waits.append((seconds, eventually(lambda: len(sleeping(tag)) == 1, seconds=10)))

    monkeypatch.setattr(fabexec.exec, "time", SimpleNamespace(sleep=sleep))
    node = run(f"sleep {tag}", exec_async=True, sleep_ms=300)
    try:
        assert waits == [(0.3, True)]
    finally:
        node.kill()


# ---- results ---------------------------------------------------------------

def test_a_successful_command_has_no_failure() -> None:
    node = run("echo fine")
    assert (node.exit_code, node.exit_codes, node.errors) == (0, {"localhost": 0}, {})
    assert not node.failed()


def test_a_failing_command_is_a_result_not_an_exception() -> None:
    node = run("echo partial; exit 3")
    assert node.failed()
    assert node.exit_code == 3
    assert node.errors == {}
    assert node.stdout == {"localhost": "partial\n"}


def test_results_are_keyed_by_localhost() -> None:
    node = run("echo out; echo err >&2")
    assert node.hosts == ["localhost"]
    assert node.stdout == {"localhost": "out\n"}
    assert node.stderr == {"localhost": "err\n"}


def test_output_not_collected_is_an_empty_string() -> None:
    node = run("echo out; echo err >&2", collect_output=False)
    assert (node.stdout, node.stderr) == ({"localhost": ""}, {"localhost": ""})


def test_cmd_is_the_command_line_that_ran() -> None:
    node = run("echo from-cmd", env={"FABEXEC_V": "1"})
    assert "echo from-cmd" in node.cmd
    assert "FABEXEC_V=1" in node.cmd


def test_exec_info_defaults_to_a_local_run(capfd: pytest.CaptureFixture[str]) -> None:
    node = Exec("echo default")
    assert node.exec_info == LocalExecInfo()
    assert capfd.readouterr().out == "default\n"
    assert node.exit_code == 0


def test_an_info_reused_with_a_stdin_file_gives_each_exec_the_whole_file(
        tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("line 1\nline 2\n")
    with open(source, "rb") as f:
        info = LocalExecInfo(stdin=f, collect_output=True, hide_output=True)
        assert [Exec("cat", info).stdout["localhost"] for _ in range(2)] == [
            "line 1\nline 2\n"] * 2


def test_async_commands_dropped_without_wait_are_reaped() -> None:
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        run("sleep 0.1", exec_async=True)  # dropped at once
    gc.collect()
    children = f"/proc/{os.getpid()}/task/{os.getpid()}/children"

    def settled() -> bool:
        with open(children) as f:
            left = f.read().split()
        return not left and len(os.listdir("/proc/self/fd")) <= before + 1
    assert eventually(settled)


def test_cwd_tilde_is_the_home_and_dash_a_folder_named_dash(tmp_path: Path,
                                                           monkeypatch: Any) -> None:
    (tmp_path / "-").mkdir()
    monkeypatch.chdir(tmp_path)
    assert out("pwd", cwd="-") == f"{tmp_path}/-\n"
    assert out("pwd", cwd="~") == f"{os.path.expanduser('~')}\n"
