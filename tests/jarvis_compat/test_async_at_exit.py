"""Issue 12 item 4: an async command never waited for is waited for at exit, as in
jarvis-util, and is never killed by its own output (SIGPIPE once the interpreter's
reading thread or SSH connection is gone).

Each test runs a child interpreter that starts the command and returns from its
script at once. The command writes its output only once the test says ``go``,
which it says after the child's script ended and the child had its chance to exit
(as it did before: then the output had no reader and the command died of SIGPIPE).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

from fabexec.sandbox import SandboxCluster
from tests.proctree import eventually, sleeping

ROOT = Path(__file__).parents[2]
LINES = 1000

CHILD = """
import sys
from pathlib import Path
from fabexec import Exec, LocalExecInfo, SshExecInfo
folder, where, output = sys.argv[1:4]
outputs = dict(collect_output=True, hide_output=output == "collected")
if where == "local":
    info = LocalExecInfo(exec_async=True, **outputs)
else:
    info = SshExecInfo(hosts=where, ssh_config=sys.argv[4], exec_async=True, **outputs)
command = (f"( until [ -e {folder}/go ]; do sleep 0.05; done; seq {LINES} ); "
           f"echo $? > {folder}/status")
node = Exec(command, info)
if sys.argv[5:] == ["drop"]:
    del node  # dropped: finished in the background, then at exit
Path(folder, "script-ended").touch()
"""


def settled(path: Path, seconds: float = 60) -> Optional[str]:
    """``path``'s text once it is written (None if it never is); bounded, not timed."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().endswith("\n"):
            return path.read_text().strip()
        time.sleep(0.05)
    return None


@pytest.fixture
def folder(cluster: SandboxCluster) -> Iterator[Path]:
    """A folder this machine and every node see (/srv is shared), writable by the nodes' user."""
    shared = "/srv" if os.access("/srv", os.W_OK) else None
    path = Path(tempfile.mkdtemp(prefix="fabexec-at-exit-", dir=shared))
    if os.geteuid() == 0:
        entry = pwd.getpwnam(cluster.user)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run_child(folder: Path, args: List[str]) -> subprocess.CompletedProcess:
    child = subprocess.Popen([sys.executable, "-c", CHILD.replace("{LINES}", str(LINES)),
                              str(folder), *args], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (folder / "script-ended").exists() and child.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            child.wait(timeout=2)  # before: it exited here, its command still waiting
        except subprocess.TimeoutExpired:
            pass  # now: it waits for its command at exit
        (folder / "go").touch()
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    return subprocess.CompletedProcess(args, child.returncode, out, err)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("output", ["printed", "collected"])
@pytest.mark.parametrize("drop", [False, True], ids=["kept", "dropped"])
def test_a_local_async_command_is_waited_for_at_exit(folder: Path, output: str,
                                                     drop: bool) -> None:
    done = run_child(folder, ["local", output, "-", *(["drop"] if drop else [])])
    assert settled(folder / "status") == "0", done.stderr  # 141: killed by SIGPIPE
    assert done.returncode == 0, done.stderr
    expected = "".join(f"{i}\n" for i in range(1, LINES + 1)) if output == "printed" else ""
    assert done.stdout == expected


@pytest.mark.timeout(180)
@pytest.mark.parametrize("output", ["printed", "collected"])
@pytest.mark.parametrize("drop", [False, True], ids=["kept", "dropped"])
def test_a_remote_async_command_is_waited_for_at_exit(nodes: SandboxCluster, folder: Path,
                                                      output: str, drop: bool) -> None:
    host = nodes.hosts[0]
    done = run_child(folder, [host, output, str(nodes.ssh_config), *(["drop"] if drop else [])])
    assert settled(folder / "status") == "0", done.stderr
    assert done.returncode == 0, done.stderr
    expected = "".join(f"{i}\n" for i in range(1, LINES + 1)) if output == "printed" else ""
    assert done.stdout == expected


@pytest.mark.timeout(120)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupt_while_waiting_at_exit_ends_the_command(folder: Path, tag: str,
                                                             signum: int) -> None:
    """A daemon forgotten by its script holds the exit up; Ctrl-C or SIGTERM ends it."""
    program = (f"from pathlib import Path\nfrom fabexec import Exec, LocalExecInfo\n"
               f"Exec('sleep {tag}', LocalExecInfo(exec_async=True))\n"
               f"Path({str(folder)!r}, 'script-ended').touch()\n")
    child = subprocess.Popen([sys.executable, "-c", program], cwd=ROOT, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert eventually(lambda: (folder / "script-ended").exists() and bool(sleeping(tag)))
        child.send_signal(signum)
        child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert eventually(lambda: sleeping(tag) == [])  # the exit status is the script's: 0
