"""Issue 12 item 5: given no ``stdin``, a local command reads the caller's, as a bash
script's commands do; async and remote commands read nothing, and leave it whole.

Each test runs a child interpreter whose stdin is a pipe (or closed, or write-only,
as a CI job may start it); pytest's own stdin is /dev/null.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from fabexec.sandbox import SandboxCluster

ROOT = Path(__file__).parents[2]
FED = "one\ntwo\nthree\n"

CHILD = """
import sys
from fabexec import Exec, LocalExecInfo, PsshExecInfo
kind = sys.argv[1]
quiet = dict(collect_output=True, hide_output=True)
if kind == "local":
    info = LocalExecInfo(**quiet)
elif kind == "async":
    info = LocalExecInfo(exec_async=True, **quiet)
else:
    info = PsshExecInfo(hosts=sys.argv[2].split(","), ssh_config=sys.argv[3], **quiet)
node = Exec('read -r first; echo "read:${first-}"', info)
node.wait()
print(sorted(node.stdout.values()), sorted(node.stderr.values()))
try:
    print("left:" + repr(sys.stdin.read()))
except (AttributeError, OSError) as e:  # closed, write-only
    print("left:", type(e).__name__)
"""


def run_child(args: List[str], fed: str = FED, redirect: str = "") -> List[str]:
    """The child's two lines; ``redirect`` is a bash redirection of its fd 0."""
    line = " ".join([f"{sys.executable} -c \"$0\" \"$@\"", redirect])
    done = subprocess.run(["bash", "-c", line, CHILD, *args], input=fed, text=True,
                          capture_output=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_a_local_command_reads_the_callers_stdin_and_leaves_the_rest() -> None:
    assert run_child(["local"]) == ["['read:one\\n'] ['']", "left:'two\\nthree\\n'"]


def test_an_async_command_reads_nothing_and_leaves_it_all() -> None:
    assert run_child(["async"]) == ["['read:\\n'] ['']", f"left:{FED!r}"]


@pytest.mark.parametrize("redirect", ["<&-", "0>/dev/null"], ids=["closed", "write-only"])
def test_a_closed_or_write_only_stdin_gives_an_empty_one(redirect: str) -> None:
    assert run_child(["local"], redirect=redirect)[0] == "['read:\\n'] ['']"


def test_remote_hosts_and_this_one_among_them_read_nothing(nodes: SandboxCluster) -> None:
    hosts = [nodes.hosts[0], "localhost"]
    lines = run_child(["pssh", ",".join(hosts), str(nodes.ssh_config)])
    assert lines == ["['read:\\n', 'read:\\n'] ['', '']", f"left:{FED!r}"]
