"""The chaos soak: commands and copies on many sandbox hosts while nodes freeze and crash,
and a ledger that accounts for every host of every call, every file and every process.

Brings up its own sandbox (`fabexec.sandbox`, state in a temporary folder, stopped at the
end, also on error or SIGTERM). Worker threads run calls until the time is up, each on a
random set of hosts (one, a few, or all): ``Exec`` of a command whose output and exit
status are known in advance (``[token]-[hostname]``, ``seq N``, the hash of the stdin it
was given, a chosen exit status), ``Put`` of a file or a folder, ``Get`` of each host's
own file or folder, an async ``Exec`` killed a moment later, and a command that outlives
its ``timeout``. Meanwhile `fabexec.sandbox.chaos.Chaos` freezes, thaws and crashes
random nodes every few seconds.

The ledger, once the faults have stopped and every node is thawed:

- every host of every call has a result or a typed error (a `fabexec.errors.HostError`
  of that host): a result is the one expected (output byte for byte, exit status), or a
  command killed (128+N) on a node that a crash hit during the call; a call that raises,
  a host missing, an error of another type or host, a wrong output: lost;
- every file is byte-exact under its final name (sha256 against its source) or absent
  where its host's copy failed; a ``.part`` file left on a host whose copy failed (the
  link broke: nothing could remove it) is counted, one anywhere else (on this machine,
  or on a host that reported success) is lost, as is any other stray file;
- nothing is left: on the nodes, no process but the daemon, except processes of a call
  whose kill reported `KillFailedError` on that node (counted, then killed); in this
  process, no descriptor or thread beyond those it had before the first call (after
  `fabexec.close_connections`).

It prints the counts (calls, faults injected, results, errors by type, files checked,
anything lost) and exits 1 if anything was lost. ``python bench/soak.py --minutes 3``
or ``inv soak --minutes 3``; tests/test_soak.py runs 30 seconds of it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Set

from fabexec import Exec, Get, PsshExecInfo, Put, SshExecInfo, close_connections, sandbox
from fabexec.errors import HostError, KillFailedError
from fabexec.info import TAG_VAR
from fabexec.results import HostResults
from fabexec.sandbox.chaos import CRASH, Chaos

#: Call kinds and how often each is drawn.
EXEC, PUT, GET, KILL, TIMEOUT = "exec", "put", "get", "async+kill", "timeout"
WEIGHTS = {EXEC: 5, PUT: 2, GET: 2, KILL: 1, TIMEOUT: 1}
WORKERS = 4
#: SSH settings of every call: a frozen host is given up within seconds.
CONNECT_TIMEOUT = 5
KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 1, 3
#: The `timeout` of a TIMEOUT call, and how long its command would otherwise sleep.
TIMEOUT_S, TIMEOUT_SLEEP = 1, 5
#: Seconds a call may still run after the soak's time is up before it counts as hung.
CALL_BOUND = 180.0
#: Seconds given, once the faults stopped, for the nodes' sessions to end (a thawed
#: command finishing its sleep) and this process's threads and descriptors to go.
SETTLE = 30.0
#: Calls per worker per second of soak, at most (every loop is bounded in count too).
MAX_CALL_RATE = 20
#: Environment variable naming the call on every process it starts on a node.
CALL_VAR = "SOAK_CALL"
KIB = 1024


@dataclass
class Call:
    """One call of the soak, what it should give, and what it gave."""

    id: int
    kind: str
    hosts: List[str]
    start: float = 0.0
    end: float = 0.0
    result: Optional[HostResults] = None
    raised: Optional[str] = None
    stdout: Dict[str, str] = field(default_factory=dict)  # expected, per host (EXEC)
    exit_code: int = 0  # expected (EXEC)
    files: Dict[str, Dict[Path, str]] = field(default_factory=dict)  # host: {path: sha256}
    #: host: where its files land (EXEC: its pipe_stdout file, when it has one)
    folder: Dict[str, Path] = field(default_factory=dict)


@dataclass
class Ledger:
    """What the soak counted; ``lost`` says what went missing or wrong, one line each."""

    calls: Counter = field(default_factory=Counter)
    results: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    files: Counter = field(default_factory=Counter)
    leftovers: Counter = field(default_factory=Counter)
    faults: Dict[str, int] = field(default_factory=dict)
    lost: List[str] = field(default_factory=list)
    longest_call: float = 0.0
    examples: Dict[str, str] = field(default_factory=dict)  # error (call kind): 1st message

    def as_dict(self) -> Dict[str, Any]:
        return {"calls": dict(self.calls), "faults": self.faults,
                "results": dict(self.results), "errors": dict(self.errors),
                "files": dict(self.files), "leftovers": dict(self.leftovers),
                "examples": self.examples, "lost": self.lost,
                "longest_call_s": round(self.longest_call, 1)}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def random_size(rng: random.Random) -> int:
    """Empty, small, medium or large (up to 8 MiB, long enough for a crash to cut)."""
    low, high = rng.choices([(0, 0), (1, 4 * KIB), (4 * KIB, 256 * KIB),
                             (256 * KIB, 8192 * KIB)], [1, 3, 3, 1])[0]
    return rng.randint(low, high)


class Soak:
    """The workers, the chaos and the ledger of one soak on ``cluster``."""

    def __init__(self, cluster: sandbox.SandboxCluster, work: Path, seconds: float,
                 workers: int, seed: int) -> None:
        self.cluster, self.work, self.seconds = cluster, work, seconds
        self.workers, self.seed = workers, seed
        self.calls: List[Call] = []
        self.ledger = Ledger()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.get_sources: Dict[str, Dict[str, str]] = {}  # host: {relative path: sha256}
        self.node_baseline: Dict[str, Set[int]] = {}

    # ------------------------------------------------------------------ setting up

    def home(self, host: str) -> Path:
        """The node's home folder as this machine sees it (each node has its own)."""
        return self.cluster.node_dir(host) / "home" / self.cluster.user

    def prepare_get_sources(self, rng: random.Random) -> None:
        """Every node gets its own ``soak/src/g.bin`` and ``soak/src/gd/``: a Get that
        swapped two hosts' files would not match."""
        user = self.cluster.user
        for host in self.cluster.hosts:
            names = {"g.bin": random_size(rng), "gd/a": random_size(rng),
                     "gd/b": rng.randint(0, 4 * KIB), "gd/sub/c": random_size(rng)}
            self.get_sources[host] = {}
            for name, size in names.items():
                path = self.home(host) / "soak" / "src" / name
                path.parent.mkdir(parents=True, exist_ok=True)
                data = rng.randbytes(size)
                path.write_bytes(data)
                self.get_sources[host][name] = sha256(data)
            for top, dirs, files in os.walk(self.home(host) / "soak"):
                for name in [top, *(os.path.join(top, n) for n in dirs + files)]:
                    shutil.chown(name, user, user)

    def info(self, call: Call, rng: random.Random, **changes: Any) -> Any:
        """How a call reaches its hosts: SSH for one host now and then, else PSSH."""
        settings: Dict[str, Any] = dict(
            hosts=call.hosts, ssh_config=self.cluster.ssh_config, collect_output=True,
            hide_output=True, connect_timeout=CONNECT_TIMEOUT,
            keepalive_interval=KEEPALIVE_INTERVAL, keepalive_count=KEEPALIVE_COUNT,
            max_parallel=rng.choice([8, 64, 64]), env={CALL_VAR: str(call.id)})
        settings.update(changes)
        if len(call.hosts) == 1 and call.kind in (EXEC, PUT) and rng.random() < 0.5:
            return SshExecInfo(**settings)
        return PsshExecInfo(**settings)

    # ------------------------------------------------------------------ the calls

    def run_exec(self, call: Call, rng: random.Random) -> None:
        """Output and exit status known in advance, with stdin read whole by every host."""
        token, lines, nap = f"c{call.id}", rng.randint(0, 3000), rng.choice([0, 0.2, 0.8])
        stdin = rng.randbytes(rng.choice([0, rng.randint(1, 64 * KIB)]))
        call.exit_code = rng.choice([0, 0, 0, 1, 3])
        numbers = "".join(f"{i}\n" for i in range(1, lines + 1))
        call.stdout = {h: f"{token}-{h}\n{numbers}{sha256(stdin)}\n" for h in call.hosts}
        cmd = (f'echo {token}-"$(hostname)"; seq {lines}; sha256sum | cut -c1-64; '
               f"sleep {nap}; exit {call.exit_code}")
        pipe = None
        if rng.random() < 0.5:  # output kept and written to a file per host at once
            pipe = self.work / "out" / f"c{call.id}-{{host}}.out"
            pipe.parent.mkdir(parents=True, exist_ok=True)
            call.folder = {h: Path(str(pipe).replace("{host}", h)) for h in call.hosts}
        call.result = Exec(cmd, self.info(call, rng, stdin=stdin, pipe_stdout=pipe))

    def run_put(self, call: Call, rng: random.Random) -> None:
        """A file or a folder (with a folder inside) into a folder of the call's own."""
        source = self.work / "put" / f"p{call.id}"
        names = ["f"] if rng.random() < 0.6 else ["d/a", "d/b", "d/sub/c"]
        shas = {}
        for name in names:
            path = source / name
            path.parent.mkdir(parents=True, exist_ok=True)
            data = rng.randbytes(random_size(rng))
            path.write_bytes(data)
            shas[name] = sha256(data)
        dst = f"soak/p{call.id}/"
        src = source / names[0].split("/")[0]
        call.result = Put(str(src), dst, self.info(call, rng))
        for host in call.hosts:
            call.folder[host] = self.home(host) / "soak" / f"p{call.id}"
            call.files[host] = {call.folder[host] / name: sha for name, sha in shas.items()}
        shutil.rmtree(source)

    def run_get(self, call: Call, rng: random.Random) -> None:
        """Each host's own file or folder into ``dst/HOST/``."""
        what = rng.choice(["g.bin", "gd"])
        dst = self.work / "get" / f"g{call.id}"
        call.result = Get(f"soak/src/{what}", str(dst) + "/", self.info(call, rng))
        for host in call.hosts:
            call.folder[host] = dst / host
            call.files[host] = {dst / host / name: sha
                                for name, sha in self.get_sources[host].items()
                                if name.split("/")[0] == what}

    def run_kill(self, call: Call, rng: random.Random) -> None:
        """A daemon started async, killed a moment later: nothing of it may be left."""
        node = Exec("echo started; sleep 600", self.info(call, rng, exec_async=True))
        time.sleep(rng.uniform(0, 2))
        node.kill()
        call.result = node

    def run_timeout(self, call: Call, rng: random.Random) -> None:
        call.result = Exec(f"echo c{call.id}; sleep {TIMEOUT_SLEEP}",
                           self.info(call, rng, timeout=TIMEOUT_S))

    RUN: Dict[str, Callable[[Soak, Call, random.Random], None]] = {
        EXEC: run_exec, PUT: run_put, GET: run_get, KILL: run_kill, TIMEOUT: run_timeout}

    def worker(self, index: int, deadline: float) -> None:
        rng = random.Random(self.seed * 1000 + index)
        hosts = self.cluster.hosts
        for _ in range(int(self.seconds * MAX_CALL_RATE) + 1):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            kind = rng.choices(list(WEIGHTS), list(WEIGHTS.values()))[0]
            count = rng.choice([1, rng.randint(2, 8), rng.randint(2, len(hosts)), len(hosts)])
            with self._lock:
                call = Call(len(self.calls), kind, rng.sample(hosts, min(count, len(hosts))))
                self.calls.append(call)
            call.start = time.monotonic()
            try:
                self.RUN[kind](self, call, rng)
            except Exception as e:  # noqa: BLE001 - a call that raises is in the ledger
                call.raised = f"{type(e).__name__}: {e}"
            call.end = time.monotonic()

    # ------------------------------------------------------------------ the whole soak

    def run(self) -> Ledger:
        rng = random.Random(self.seed)
        self.prepare_get_sources(rng)
        self.node_baseline = self.node_processes()
        fds, threads = open_fds(), live_threads()
        deadline = time.monotonic() + self.seconds
        workers = [threading.Thread(target=self.worker, args=(i, deadline), daemon=True,
                                    name=f"soak-worker-{i}") for i in range(self.workers)]
        chaos = Chaos(self.cluster, self.seconds, seed=self.seed)
        chaos.start()
        for thread in workers:
            thread.start()
        try:
            self._stop.wait(self.seconds)
        finally:
            self._stop.set()
            chaos.stop()  # every node thawed: calls still running end sooner
            self.ledger.faults = chaos.counts()
        hung_after = time.monotonic() + CALL_BOUND
        for thread in workers:
            thread.join(max(0.0, hung_after - time.monotonic()))
        for call in self.calls:
            if call.end == 0.0:
                self.ledger.lost.append(f"call {call.id} ({call.kind} on {len(call.hosts)} "
                                        f"hosts) still running {CALL_BOUND:.0f} s after the end")
        self.account_calls(chaos)
        close_connections()
        survivors = self.settle_nodes()
        self.account_files()
        self.account_nodes(survivors)
        self.account_client(fds, threads)
        return self.ledger

    # ------------------------------------------------------------------ the ledger

    def account_calls(self, chaos: Chaos) -> None:
        for call in self.calls:
            if call.end == 0.0:
                continue
            self.ledger.calls[call.kind] += 1
            self.ledger.longest_call = max(self.ledger.longest_call, call.end - call.start)
            if call.result is None:
                self.ledger.lost.append(f"call {call.id} ({call.kind}) raised {call.raised}; "
                                        f"its {len(call.hosts)} hosts have no result")
                continue
            if sorted(call.result.exit_codes) != sorted(call.hosts):
                self.ledger.lost.append(f"call {call.id} ({call.kind}): results for "
                                        f"{sorted(call.result.exit_codes)}, hosts were "
                                        f"{sorted(call.hosts)}")
            for host in call.hosts:
                verdict = self.account_host(call, host, chaos)
                if verdict is not None:
                    self.ledger.lost.append(f"call {call.id} ({call.kind}) on {host}: {verdict}")

    def account_host(self, call: Call, host: str, chaos: Chaos) -> Optional[str]:
        """Count ``host``'s outcome of ``call``; what is wrong with it, if anything."""
        result = call.result
        assert result is not None
        code, error = result.exit_codes.get(host), result.errors.get(host)
        if code is None:
            return "no exit code"
        if error is not None:
            if not isinstance(error, HostError) or error.host != host:
                return f"error {error!r} is not a HostError of this host"
            if code == 0:
                return f"exit code 0 with error {error!r}"
            self.ledger.errors[type(error).__name__] += 1
            self.ledger.examples.setdefault(f"{type(error).__name__} ({call.kind})", str(error))
            return None
        wrong = self.wrong_result(call, host, code)
        if wrong is None:
            self.ledger.results["as expected"] += 1
            return None
        crashed = chaos.hit(host, call.start, call.end, CRASH)
        if crashed and code >= 128:
            self.ledger.results["killed by a crash"] += 1
            return None
        return wrong

    def wrong_result(self, call: Call, host: str, code: int) -> Optional[str]:
        """What differs from the result expected of a host that reported no error."""
        out = getattr(call.result, "stdout", {}).get(host, "")
        if call.kind == EXEC:
            if code != call.exit_code or out != call.stdout[host]:
                return (f"exit {code} (expected {call.exit_code}), stdout {len(out)} chars "
                        f"{'as expected' if out == call.stdout[host] else 'wrong'}: "
                        f"{out[:60]!r}")
            if call.folder:  # pipe_stdout: the file holds the same bytes
                self.ledger.files["checked"] += 1
                written = call.folder[host].read_bytes() if call.folder[host].exists() else b""
                if written != call.stdout[host].encode():
                    return f"{call.folder[host]} holds {len(written)} bytes, not its stdout"
                self.ledger.files["output files byte-exact"] += 1
        elif call.kind == KILL:
            if code < 128 or not "started\n".startswith(out):
                return f"killed daemon ended with {code} and stdout {out[:60]!r}"
        elif call.kind == TIMEOUT:
            return f"outlived its timeout yet ended with {code}, no error"
        elif code != 0:
            return f"copy ended with {code} and no error"
        return None

    def account_files(self) -> None:
        """Each file byte-exact under its final name, or absent where the copy failed."""
        for call in self.calls:
            if call.result is None or not call.files:
                continue
            for host, files in call.files.items():
                failed = host in call.result.errors or call.result.exit_codes.get(host) != 0
                for path, sha in files.items():
                    self.account_file(call, host, path, sha, failed)
                self.account_strays(call, host, failed)

    def account_file(self, call: Call, host: str, path: Path, sha: str, failed: bool) -> None:
        self.ledger.files["checked"] += 1
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            if failed:
                self.ledger.files["absent, its host's copy failed"] += 1
            else:
                self.ledger.lost.append(f"call {call.id} ({call.kind}) on {host}: {path} "
                                        "missing after a copy that succeeded")
            return
        if sha256(data) == sha:
            self.ledger.files["byte-exact"] += 1
        else:
            self.ledger.lost.append(f"call {call.id} ({call.kind}) on {host}: {path} "
                                    f"differs from its source ({len(data)} bytes)")

    def account_strays(self, call: Call, host: str, failed: bool) -> None:
        """Anything under the call's folder that is not one of its files."""
        folder = call.folder[host]
        expected = set(call.files[host])
        for top, _, names in os.walk(folder):
            for name in names:
                path = Path(top) / name
                if path in expected:
                    continue
                remote_part = (call.kind == PUT and name.endswith(".part")
                               and name.startswith("."))
                if remote_part and failed:
                    self.ledger.files[".part left where the host failed mid-copy"] += 1
                else:
                    self.ledger.lost.append(f"call {call.id} ({call.kind}) on {host}: stray "
                                            f"{path} (host {'failed' if failed else 'succeeded'})")

    def node_processes(self) -> Dict[str, Set[int]]:
        """Each node's processes but its daemon and those it had before the first call
        (the ``unshare`` that started it)."""
        return {host: self.cluster.processes(host) - {self.cluster.pid(host)}
                - self.node_baseline.get(host, set()) for host in self.cluster.hosts}

    def settle_nodes(self) -> Dict[str, Dict[int, Optional[Call]]]:
        """Wait (bounded) until the nodes run nothing but what a failed kill explains;
        each node's processes then, with the call each belongs to."""
        deadline = time.monotonic() + SETTLE
        for _ in range(int(SETTLE / 0.5) + 1):
            left = {host: self.owners(pids) for host, pids in self.node_processes().items()}
            unexplained = [pid for host, owners in left.items() for pid, call in owners.items()
                           if not kill_failed(call, host)]
            if not unexplained or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        return left

    def owners(self, pids: Set[int]) -> Dict[int, Optional[Call]]:
        """The call each process belongs to: by its ``SOAK_CALL``, else by the fabexec
        tag it shares with a process that has one (the shells that start a command name
        the tag before the command sets ``SOAK_CALL``)."""
        calls: Dict[int, Optional[Call]] = {}
        tags: Dict[int, Optional[bytes]] = {}
        for pid in pids:
            environ, cmdline = read_proc(pid, "environ"), read_proc(pid, "cmdline")
            number = variable(environ, CALL_VAR)
            calls[pid] = self.calls[int(number)] if number and number.isdigit() \
                and int(number) < len(self.calls) else None
            found = re.search(rb"%s=([^\s\0]+)" % TAG_VAR.encode(), cmdline)
            tags[pid] = variable(environ, TAG_VAR) or (found[1] if found else None)
        by_tag = {tags[pid]: call for pid, call in calls.items() if call and tags[pid]}
        return {pid: calls[pid] or by_tag.get(tags[pid]) for pid in pids}

    def account_nodes(self, survivors: Dict[str, Dict[int, Optional[Call]]]) -> None:
        """No process left on a node, but those of a kill that said it failed there."""
        for host, owners in survivors.items():
            explained = [pid for pid, call in owners.items() if kill_failed(call, host)]
            for pid in explained:
                self.ledger.leftovers["node processes of a failed kill (killed now)"] += 1
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            for pid, call in sorted(owners.items()):
                if pid in explained or not read_proc(pid, "cmdline"):
                    continue  # gone meanwhile
                tagged = variable(read_proc(pid, "environ"), TAG_VAR) is not None
                outcome = ""
                if call is not None and call.result is not None:
                    outcome = (f" of call {call.id} ({call.kind}, host result "
                               f"{call.result.exit_codes.get(host)} "
                               f"{call.result.errors.get(host)!r})")
                self.ledger.leftovers["node processes left"] += 1
                self.ledger.lost.append(f"{host}: {'tagged ' if tagged else ''}process "
                                        f"{describe(pid)} still running{outcome}")

    def account_client(self, fds: Dict[int, str], threads: Set[str]) -> None:
        """No descriptor or thread beyond those this process had before the first call."""
        deadline = time.monotonic() + SETTLE
        extra_fds: Dict[int, str] = {}
        extra_threads: Set[str] = set()
        for _ in range(int(SETTLE / 0.2) + 1):
            now_fds = open_fds()
            extra_fds = {fd: what for fd, what in now_fds.items() if fds.get(fd) != what}
            extra_threads = live_threads() - threads
            if not (extra_fds or extra_threads) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.ledger.leftovers["client descriptors left"] = len(extra_fds)
        self.ledger.leftovers["client threads left"] = len(extra_threads)
        if extra_fds:
            self.ledger.lost.append(f"client: descriptors left open: {sorted(extra_fds.items())}")
        if extra_threads:
            self.ledger.lost.append(f"client: threads left running: {sorted(extra_threads)}")


def kill_failed(call: Optional[Call], host: str) -> bool:
    """Whether ``call``'s kill reported failing on ``host``: what it started may live on."""
    return (call is not None and call.result is not None
            and isinstance(call.result.errors.get(host), KillFailedError))


def variable(environ: bytes, name: str) -> Optional[bytes]:
    """The value of ``name`` in a process environment read from /proc."""
    prefix = f"{name}=".encode()
    for entry in environ.split(b"\0"):
        if entry.startswith(prefix):
            return entry[len(prefix):]
    return None


def read_proc(pid: int, name: str) -> bytes:
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read()
    except OSError:
        return b""


def describe(pid: int) -> str:
    """A process as a reader of the ledger needs it: command line, state, parent, stdin."""
    def cmdline(of: int) -> str:
        return read_proc(of, "cmdline").replace(b"\0", b" ").decode(errors="replace")[:120]

    stat = read_proc(pid, "stat").decode(errors="replace").rsplit(")", 1)[-1].split()
    state, parent = (stat[0], int(stat[1])) if len(stat) > 1 else ("?", 0)
    try:
        stdin = os.readlink(f"/proc/{pid}/fd/0")
    except OSError:
        stdin = "?"
    wchan = read_proc(pid, "wchan").decode(errors="replace")
    return (f"{pid} {cmdline(pid)!r} (state {state}, in {wchan or '?'}, stdin {stdin}; "
            f"parent {parent} {cmdline(parent)!r})")


def open_fds() -> Dict[int, str]:
    """This process's descriptors and what each is open on."""
    found = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            found[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass  # the listing's own descriptor, closed meanwhile
    return found


def live_threads() -> Set[str]:
    return {f"{t.name}#{t.ident}" for t in threading.enumerate()}


def report(ledger: Ledger, hosts: int, seconds: float, seed: int, took: float) -> str:
    def spell(counter: Dict[str, int]) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(counter.items(), key=lambda kv: -kv[1]))

    results = sum(ledger.results.values())
    errors = sum(ledger.errors.values())
    lines = [
        f"soak: {hosts} sandbox hosts, {seconds:.0f} s of chaos, seed {seed}, "
        f"{took:.0f} s in all, load average {os.getloadavg()[0]:.1f} at the end",
        f"calls            {sum(ledger.calls.values()):6}  ({spell(ledger.calls)}); "
        f"longest {ledger.longest_call:.1f} s",
        f"faults injected  {sum(ledger.faults.values()):6}  ({spell(ledger.faults)})",
        f"host outcomes    {results + errors:6}  results {results} ({spell(ledger.results)}); "
        f"typed errors {errors}",
        f"errors by type   {errors:6}  ({spell(ledger.errors) or 'none'})",
        f"files checked    {ledger.files['checked']:6}  "
        f"({spell({k: v for k, v in ledger.files.items() if k != 'checked'}) or 'none'})",
        *(f"  e.g. {kind}: {message[:150]}" for kind, message in sorted(ledger.examples.items())),
        f"left at the end  {spell(ledger.leftovers) or 'nothing'}",
        f"lost             {len(ledger.lost):6}",
    ]
    lines += [f"  LOST: {line}" for line in ledger.lost[:50]]
    if len(ledger.lost) > 50:
        lines.append(f"  ... and {len(ledger.lost) - 50} more")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="how long the chaos lasts")
    parser.add_argument("--hosts", type=int, default=64, help="sandbox nodes")
    parser.add_argument("--workers", type=int, default=WORKERS, help="calls at once")
    parser.add_argument("--seed", type=int, default=None, help="repeat the random choices")
    parser.add_argument("--json", type=Path, default=None, help="write the counts there too")
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="the sandbox's folder (default: a new temporary one); what a "
                             "killed run left there is stopped first")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("the soak needs root: it reads each node's own files and processes",
              file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else random.randrange(10**6)
    seconds = args.minutes * 60
    folder = Path(tempfile.mkdtemp(prefix="fabexec-soak-"))
    state = args.state_dir or folder / "sandbox"
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` tears down
    started = time.monotonic()
    try:
        sandbox.down(state)  # never a running cluster's files and processes: a fresh one
        cluster = sandbox.up(args.hosts, state, timeout=300)
        if not (cluster.own_folders and cluster.own_processes):
            print("the soak needs nodes with their own folders and processes (namespaces)",
                  file=sys.stderr)
            return 2
        print(f"soak: {args.hosts} nodes up; {args.workers} workers for {seconds:.0f} s, "
              f"seed {seed}", flush=True)
        ledger = Soak(cluster, folder / "work", seconds, args.workers, seed).run()
    finally:
        close_connections()
        sandbox.down(state)
        shutil.rmtree(folder, ignore_errors=True)
    print(report(ledger, args.hosts, seconds, seed, time.monotonic() - started))
    if args.json is not None:
        args.json.write_text(json.dumps(ledger.as_dict(), indent=2) + "\n")
    return 1 if ledger.lost else 0


if __name__ == "__main__":
    sys.exit(main())
