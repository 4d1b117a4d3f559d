"""A host that hangs mid-command ends with 255 and the reason; the others keep their output.

The node is frozen (its whole sshd tree SIGSTOPped): its kernel still acknowledges TCP,
so only keepalives that want a reply notice it, as OpenSSH's ServerAlive does.
"""

from __future__ import annotations

import random
import uuid
from pathlib import Path
from typing import Any

from fabexec import Exec, HostStoppedAnsweringError
from fabexec.sandbox import SandboxCluster
from tests.clusters import expected_hostname, on_every_host, openssh, pssh_info, ssh_info
from tests.faults.breaking import Breaker
from tests.proctree import sleeping

FROZEN = "node3"


def run_and_freeze(cluster: SandboxCluster, **changes: Any) -> Exec:
    """A command on every node that says ``done`` once told to, `FROZEN` frozen first.

    Each node sleeps in rounds (a ``sleep`` whose argument no other process uses) until
    a file appears in its own /tmp; once every node runs the command, `FROZEN` is frozen
    and the file made on the others, so no node can finish before the freeze.
    """
    seconds = f"0.{random.randrange(10**8, 10**9)}"
    go = f"/tmp/fabexec-go-{uuid.uuid4().hex}"
    live = [host for host in cluster.hosts if host != FROZEN]

    def freeze_then_go() -> None:
        cluster.freeze(FROZEN)
        on_every_host(cluster, lambda host: host in live and openssh(cluster, host, f"touch {go}"))

    breaker = Breaker(lambda: len(sleeping(seconds)) == len(cluster.hosts), freeze_then_go)
    node = Exec(f"for _ in $(seq 1200); do [ -e {go} ] && break; sleep {seconds}; done; "
                f"[ -e {go} ] && echo done", pssh_info(cluster, **changes))
    assert breaker.done(), "the command never ran on every node: nothing was frozen"
    return node


def assert_only_frozen_host_failed(cluster: SandboxCluster, node: Exec, silent: str) -> None:
    live = [h for h in cluster.hosts if h != FROZEN]
    assert node.stdout == {**{h: "done\n" for h in live}, FROZEN: ""}
    assert node.exit_codes == {**{h: 0 for h in live}, FROZEN: 255}
    assert list(node.errors) == [FROZEN]
    error = node.errors[FROZEN]
    assert isinstance(error, HostStoppedAnsweringError)
    assert "stopped answering" in str(error)
    assert silent in str(error), "the error must say for how long the host was silent"
    assert str(error) in node.stderr[FROZEN]


def test_frozen_host_ends_with_255_and_the_live_hosts_keep_their_output(
        breakable: SandboxCluster) -> None:
    node = run_and_freeze(breakable, keepalive_interval=1, keepalive_count=3)
    assert_only_frozen_host_failed(breakable, node, "3 keepalives unanswered over 3 s")


def test_server_alive_settings_of_the_ssh_config_apply_when_no_keyword_is_given(
        breakable: SandboxCluster, tmp_path: Path) -> None:
    """The counts in the error prove the file's values were used, not the 15 s x 3 default."""
    config = tmp_path / "ssh_config"
    config.write_text(breakable.ssh_config.read_text()
                      + "\nHost *\n    ServerAliveInterval 1\n    ServerAliveCountMax 2\n")
    node = run_and_freeze(breakable, ssh_config=config)
    assert_only_frozen_host_failed(breakable, node, "2 keepalives unanswered over 2 s")


def test_frozen_host_answers_the_next_exec_once_thawed(breakable: SandboxCluster) -> None:
    """Its dead connection was dropped from the cache: the next Exec connects anew."""
    run_and_freeze(breakable, keepalive_interval=1, keepalive_count=3)
    breakable.thaw(FROZEN)
    node = Exec("hostname", ssh_info(breakable, FROZEN, keepalive_interval=1))
    assert node.exit_codes == {FROZEN: 0}, node.stderr
    assert node.stdout == {FROZEN: expected_hostname(breakable, FROZEN) + "\n"}
