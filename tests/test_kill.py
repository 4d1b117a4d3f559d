"""kill() and timeout end a local command and every process it started.

Each command starts a tree whose children escape in every usual way (see
`proctree.escaping_tree`); ``pgrep`` then proves that none of it is left.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fabexec import CommandTimeoutError, Exec, LocalExecInfo
from fabexec.command import TAG_VAR
from fabexec.reaper import kill_local
from tests.proctree import (
    TREE_SIZE,
    escaping_tree,
    eventually,
    once_started,
    sleeping,
)


def start_tree(tag: str, marker: Path, **info: object) -> Exec:
    node = Exec(escaping_tree(tag, str(marker)),
                LocalExecInfo(exec_async=True, hide_output=True, **info))
    assert eventually(lambda: len(sleeping(tag)) == TREE_SIZE), "the tree never came up"
    return node


def test_kill_ends_every_process_the_command_started(tag: str, tmp_path: Path) -> None:
    node = start_tree(tag, tmp_path / "started")
    node.kill()
    assert sleeping(tag) == []


def test_kill_returns_the_shell_status_of_a_terminated_command(tag: str) -> None:
    node = Exec(f"sleep {tag}", LocalExecInfo(exec_async=True, hide_output=True))
    assert eventually(lambda: len(sleeping(tag)) == 1)
    assert node.kill() == 128 + 15  # SIGTERM, as bash reports it
    assert node.exit_codes == {"localhost": 143}
    assert node.failed()


def test_kill_escalates_to_sigkill_when_sigterm_is_ignored(tag: str) -> None:
    node = Exec(f"trap '' TERM\nsleep {tag}", LocalExecInfo(exec_async=True, hide_output=True))
    assert eventually(lambda: len(sleeping(tag)) == 1)
    node.kill()
    assert sleeping(tag) == []
    assert node.exit_code == 128 + 9


def test_kill_ends_an_async_daemon_whose_launcher_already_exited(tag: str) -> None:
    daemon = f"setsid sleep {tag} </dev/null >/dev/null 2>&1 &"
    node = Exec(daemon, LocalExecInfo(exec_async=True, hide_output=True))
    assert eventually(lambda: len(sleeping(tag)) == 1)
    node.kill()
    assert sleeping(tag) == []


def test_kill_after_wait_still_ends_a_daemon_the_command_left_running(tag: str) -> None:
    daemon = f"setsid sleep {tag} </dev/null >/dev/null 2>&1 &"
    node = Exec(daemon, LocalExecInfo(exec_async=True, hide_output=True))
    assert node.wait() == 0
    assert eventually(lambda: len(sleeping(tag)) == 1)
    node.kill()
    assert sleeping(tag) == []


def test_kill_after_the_command_finished_keeps_its_exit_code() -> None:
    node = Exec("exit 7", LocalExecInfo(exec_async=True, hide_output=True))
    assert node.wait() == 7
    assert node.kill() == 7
    assert node.errors == {}


def test_timeout_ends_every_process_the_command_started(tag: str, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    node = once_started(
        lambda timeout: Exec(escaping_tree(tag, str(marker)),
                             LocalExecInfo(timeout=timeout, hide_output=True)),
        lambda node: marker.exists())
    assert sleeping(tag) == []
    assert node.exit_code == 124


def test_timeout_records_a_command_timeout_error_for_localhost(tag: str) -> None:
    node = Exec(f"sleep {tag}", LocalExecInfo(timeout=0.5, hide_output=True))
    assert isinstance(node.errors["localhost"], CommandTimeoutError)
    assert node.errors["localhost"].host == "localhost"
    assert node.exit_codes == {"localhost": 124}
    assert node.failed()


def test_timeout_of_an_async_command_fires_without_wait_being_called(tag: str,
                                                                    tmp_path: Path) -> None:
    marker = tmp_path / "started"

    def run(timeout: float) -> Exec:
        node = Exec(f"touch {marker}; sleep {tag}",
                    LocalExecInfo(exec_async=True, timeout=timeout, hide_output=True))
        eventually(lambda: marker.exists() and not sleeping(tag))
        return node

    node = once_started(run, lambda node: marker.exists())
    assert sleeping(tag) == [], "the timeout never ended the command"
    assert node.wait() == 124
    assert isinstance(node.errors["localhost"], CommandTimeoutError)


def test_timeout_keeps_the_output_produced_before_it(tag: str, tmp_path: Path) -> None:
    said = tmp_path / "said"
    node = once_started(
        lambda timeout: Exec(f"echo before\ntouch {said}\nsleep {tag}",
                             LocalExecInfo(timeout=timeout, hide_output=True,
                                           collect_output=True)),
        lambda node: said.exists())
    assert node.stdout["localhost"] == "before\n"


def test_a_command_that_ends_before_its_timeout_has_no_error() -> None:
    node = Exec("exit 0", LocalExecInfo(timeout=60, hide_output=True))
    assert node.exit_code == 0
    assert node.errors == {}


@pytest.mark.timeout(30)
def test_zombies_count_as_ended(tag: str) -> None:
    """A group whose last member is a zombie nobody collects has ended.

    The leader's parent (this test) collects it only after `kill_local`
    returned: were zombies counted as alive, kill_local would wait its whole
    hour of grace, and pytest-timeout would end the test.
    """
    leader = subprocess.Popen(["sleep", tag], start_new_session=True,
                              env={**os.environ, TAG_VAR: tag})
    try:
        assert eventually(lambda: sleeping(tag) == [leader.pid])
        kill_local(leader.pid, tag, grace=3600)  # no reap: it stays a zombie
        assert sleeping(tag) == []
    finally:
        leader.kill()
        leader.wait()


def test_kill_outlasts_a_supervisor_that_ignores_sigterm_and_respawns(tag: str) -> None:
    """Children started while the SIGKILL pass looks at /proc are ended too."""
    supervisor = ("trap '' TERM\n"
                  f"while :; do setsid sleep {tag} </dev/null >/dev/null 2>&1 & sleep 0.005; done")
    node = Exec(supervisor, LocalExecInfo(exec_async=True, hide_output=True))
    assert eventually(lambda: len(sleeping(tag)) > 3)
    node.kill()
    assert sleeping(tag) == []


def test_a_timeout_ends_a_child_that_ignores_sigterm_even_if_the_program_exits_at_once(
        tag: str) -> None:
    """The 124 comes once the kill is over: nothing is left for a daemon thread to finish."""
    program = textwrap.dedent(f"""
        from fabexec import Exec, LocalExecInfo
        from tests.proctree import once_started
        node = once_started(
            lambda timeout: Exec('(trap "" TERM; echo ignoring; exec sleep {tag}) & wait',
                                 LocalExecInfo(timeout=timeout, hide_output=True,
                                               collect_output=True)),
            lambda node: node.stdout["localhost"] == "ignoring\\n")
        print(node.exit_code)
    """)
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=60, check=False, cwd=Path(__file__).parent.parent)
    assert done.stdout == "124\n", done.stderr
    assert sleeping(tag) == []
