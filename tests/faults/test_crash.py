"""A host whose sessions die mid-command ends at once with 255; what it sent is kept.

`SandboxCluster.crash` SIGKILLs the node's sessions, as a crash or an sshd restart
would: the connection ends with no exit status.
"""

from __future__ import annotations

import random
from pathlib import Path

from fabexec import ConnectionLostError, Exec, HostStoppedAnsweringError
from fabexec.sandbox import SandboxCluster
from tests.clusters import expected_hostname, pssh_info, ssh_info
from tests.faults.breaking import Breaker

CRASHED = "node2"


def lines_then_sleep() -> str:
    """Two lines, a pause of about 5 s (a unique ``sleep``), then a last line.

    The pause is the time the crash has to land, on a loaded machine too.
    """
    return f"echo line1; echo line2; sleep 5.{random.randrange(10**8, 10**9)}; echo line3"


WHOLE = "line1\nline2\nline3\n"


def crash_after_first_output(cluster: SandboxCluster, outputs: Path) -> Exec:
    """`lines_then_sleep` on every node with per-host files; `CRASHED` crashes once its
    file shows output."""
    crashed_file = outputs / f"{CRASHED}.out"
    breaker = Breaker(lambda: crashed_file.exists() and crashed_file.stat().st_size > 0,
                      lambda: cluster.crash(CRASHED))
    node = Exec(lines_then_sleep(), pssh_info(cluster, pipe_stdout=outputs / "{host}.out",
                                              keepalive_interval=1))
    assert breaker.done(), f"{CRASHED} never wrote output: nothing was crashed"
    return node


def test_crashed_host_ends_with_255_and_keeps_its_partial_output_file(
        breakable: SandboxCluster, tmp_path: Path) -> None:
    node = crash_after_first_output(breakable, tmp_path)
    partial = (tmp_path / f"{CRASHED}.out").read_text()
    assert partial and WHOLE.startswith(partial) and partial != WHOLE
    assert node.stdout[CRASHED] == partial, "memory and file must hold the same output"
    assert node.exit_codes[CRASHED] == 255
    error = node.errors[CRASHED]
    assert isinstance(error, ConnectionLostError)
    assert not isinstance(error, HostStoppedAnsweringError), "a reset is not a silence"
    assert str(error) in node.stderr[CRASHED]


def test_a_crash_leaves_the_other_hosts_files_whole(breakable: SandboxCluster,
                                                    tmp_path: Path) -> None:
    node = crash_after_first_output(breakable, tmp_path)
    live = [h for h in breakable.hosts if h != CRASHED]
    assert {h: (tmp_path / f"{h}.out").read_text() for h in live} == {h: WHOLE for h in live}
    assert {h: node.exit_codes[h] for h in live} == {h: 0 for h in live}
    assert list(node.errors) == [CRASHED]


def test_next_exec_to_a_crashed_host_reconnects_by_itself(breakable: SandboxCluster,
                                                          tmp_path: Path) -> None:
    crash_after_first_output(breakable, tmp_path)
    node = Exec("hostname", ssh_info(breakable, CRASHED))
    assert node.exit_codes == {CRASHED: 0}, node.stderr
    assert node.stdout == {CRASHED: expected_hostname(breakable, CRASHED) + "\n"}
