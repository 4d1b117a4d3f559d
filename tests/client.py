"""A test's client program, run apart: where it cannot see the nodes' processes, or as a user
who is not root.

The sandbox's nodes run on this machine's kernel: a client here sees every node's
processes in its /proc and, as root, may signal them, so a remote kill that in fact ended
them from the client's side would pass a test. `isolated` runs the client in a PID
namespace of its own with its own /proc (``unshare --pid --fork --mount-proc``, root
only): there the client sees and may signal its own processes alone, and only the reaper
on the node can end what a command started there. `logged_in` runs it as a login user of
a sandbox node (not root, with the sudo rules the sandbox gives that user), for the local
sudo tests: as root, a command ignoring ``sudo`` would still run as root.

A client is a Python snippet. It finds in its globals ``values`` (the test's keyword
arguments, through JSON), ``cluster`` (the `Cluster` the test gave, if any), ``step(name)``
(tells the test it got to ``name``, then waits until the test lets it go on) and
``result(value)`` (hands ``value`` back to the test, through JSON).
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any, List, Optional

from fabexec.sandbox import Cluster
from fabexec.sandbox.cluster import CLUSTER_FILE

ROOT = Path(__file__).resolve().parent.parent
STEP, RESULT = "@@step ", "@@result "
UNSHARE = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]

#: The first process of the client's PID namespace. The kernel gives a namespace's first
#: process no default signal actions (a SIGTERM to it is dropped, and so is the one that
#: fabexec re-raises on itself when nothing runs): it starts the client as its child,
#: passes Ctrl-C and SIGTERM on, and ends with the client's status (128+N for a signal).
FIRST_PROCESS = textwrap.dedent("""
    import os, signal, sys
    child = os.fork()
    if child == 0:
        os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: os.kill(child, signum))
    code = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
    sys.exit(code if code >= 0 else 128 - code)
""")

#: What a snippet finds in its globals (see the module's docstring).
PRELUDE = textwrap.dedent(f"""
    import json, sys
    from fabexec.sandbox import Cluster
    _given = json.loads(sys.argv[1])
    values = _given["values"]
    cluster = Cluster.load(_given["cluster"]) if _given["cluster"] else None

    def step(name):
        print({STEP!r} + name, flush=True)
        sys.stdin.readline()

    def result(value):
        print({RESULT!r} + json.dumps(value), flush=True)
""")


class ClientEnded(AssertionError):
    """The client ended before it said what the test waited for."""


@functools.cache
def isolation_refused() -> Optional[str]:
    """Why a client cannot have a PID namespace of its own here, or None when it can."""
    if os.geteuid() != 0:
        return "only root may give the client a PID namespace of its own"
    tried = subprocess.run([*UNSHARE, "true"], capture_output=True, text=True, timeout=30,
                           check=False)
    return None if tried.returncode == 0 else f"unshare --pid refused: {tried.stderr.strip()}"


class Client:
    """A running client program; `close` (or leaving its ``with``) ends what is left of it."""

    def __init__(self, argv: List[str], isolated: bool) -> None:
        self._stderr = tempfile.TemporaryFile("w+")
        self.isolated = isolated
        self.process = subprocess.Popen(
            argv, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self._stderr, text=True)
        self.returncode: Optional[int] = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _until(self, prefix: str) -> str:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(prefix):
                return line[len(prefix):].rstrip("\n")
        self.returncode = self.process.wait(timeout=60)
        raise ClientEnded(f"the client ended ({self.returncode}) first: {self.stderr()}")

    def reached(self, name: str) -> None:
        """Wait until the client says it got to step ``name`` (it then waits for `go`)."""
        got = self._until(STEP)
        assert got == name, f"the client got to {got!r}, not {name!r}"

    def go(self) -> None:
        """Let the client go on from the step it waits at."""
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def result(self) -> Any:
        """The value the client handed back; the client has ended when this returns."""
        value = json.loads(self._until(RESULT))
        self.returncode = self.process.wait(timeout=60)
        return value

    def send_signal(self, sig: int) -> None:
        """``sig`` to the client, as Ctrl-C or ``kill`` would send it."""
        os.kill(self._first_process() if self.isolated else self.process.pid, sig)

    def wait(self) -> int:
        """The client's exit status, once it ended."""
        self.returncode = self.process.wait(timeout=120)
        return self.returncode

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()  # unshare's --kill-child takes the whole namespace with it
            self.process.wait(timeout=30)
        for stream in (self.process.stdin, self.process.stdout, self._stderr):
            if stream is not None:
                stream.close()

    def _first_process(self) -> int:
        """The PID, as this machine sees it, of the namespace's first process: unshare's
        child."""
        for entry in os.scandir("/proc"):
            try:
                stat = Path(entry.path, "stat").read_text()
            except (OSError, ValueError):
                continue
            if stat[stat.rfind(")") + 2:].split()[1] == str(self.process.pid):
                return int(entry.name)
        raise ClientEnded(f"the client's namespace has no first process: {self.stderr()}")


def _snippet_argv(snippet: str, cluster: Optional[Cluster], values: Any) -> List[str]:
    given = {"values": values, "cluster": None}
    if cluster is not None:
        if not (cluster.state_dir / CLUSTER_FILE).exists():
            cluster.save()  # the docker cluster's is not written anywhere
        given["cluster"] = str(cluster.state_dir)
    return ["-c", PRELUDE + textwrap.dedent(snippet), json.dumps(given, default=str)]


def python_isolated(args: List[str]) -> Client:
    """``python ARGS`` in a PID namespace of its own (run as is where none can be had)."""
    if isolation_refused():
        return Client([sys.executable, *args], isolated=False)
    return Client([*UNSHARE, sys.executable, "-c", FIRST_PROCESS, *args], isolated=True)


def isolated(snippet: str, cluster: Optional[Cluster] = None, **values: Any) -> Client:
    """``snippet`` run in a PID namespace of its own (see the module's docstring)."""
    return python_isolated(_snippet_argv(snippet, cluster, values))


def run_isolated(snippet: str, cluster: Optional[Cluster] = None, **values: Any) -> Any:
    """`isolated`, run to its end: the value it handed back."""
    with isolated(snippet, cluster, **values) as client:
        return client.result()


def logged_in(cluster: Cluster, host: str, user: str, snippet: str, **values: Any) -> Any:
    """``snippet`` run by ``user`` logged in on ``host`` with OpenSSH: the value it handed back.

    The node runs this machine's Python and this fabexec (the nodes see both).
    """
    command = shlex.join(["env", f"PYTHONPATH={ROOT}", sys.executable,
                          *_snippet_argv(snippet, None, values)])
    argv = ["ssh", "-F", str(cluster.ssh_config), "-o", "BatchMode=yes", "-l", user, host,
            command]
    with Client(argv, isolated=False) as client:
        return client.result()
