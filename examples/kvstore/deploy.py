"""Deploy the key-value service over a cluster, prove it under MPI, and take it all down.

What ``inv deploy`` does, one method per step, each run on every host at once and
reported host by host (OK or FAIL, why, how long):

1. ``push``: make the deploy's private folder, copy the programs into it
   (`fabexec.transfer.Put`), and check that the host's Python can run them.
2. ``start``: run ``kvstore.py serve`` on every host, bound to that host's address, as an
   asynchronous `Exec` (``PsshExecInfo(exec_async=True)``) that lasts as long as it does.
3. ``ready``: wait until every instance answers PING (bounded); an instance whose process
   is gone fails at once with the last line of its log.
4. ``mpi``: one MPI job, ``RANKS_PER_HOST`` ranks per host, each rank storing and reading
   back a key of its own in instance ``rank % hosts`` (``rank_client.py``).

Then, whether those succeeded, failed or were interrupted, the teardown:

5. ``stop``: SIGTERM every service by the PID it wrote, wait for it to exit, then
   ``kill()`` its `Exec` (which ends whatever would be left of it).
6. ``logs``: fetch every host's log into ``LOGS/HOST/`` (`fabexec.transfer.Get`); after
   the stop, so that the logs hold the shutdown, and after a failure too, so that a
   failed start can be read.
7. ``clean``: check over SSH that no process of this deploy runs on any host (``pgrep``
   on the deploy's unique folder), then remove the remote folders.

Every host gets its own folder, ``REMOTE_ROOT/<deploy id>/<host>/`` (program, log, PID
file): where hosts share a filesystem (an NFS home; the sandbox where it cannot give each
node its own /tmp), one host's copy can then never stand in for another's. The MPI
program is the same path on every host (``<deploy id>/job/``), as a job's files are on a
cluster, and pushed to each host like the rest.

Nodes are shared: ``REMOTE_ROOT`` (``--remote-dir``) is where every user's deploys meet,
so whoever makes it first makes it as /tmp is, world-writable with the sticky bit (each
user may remove only their own entries); ``<deploy id>/`` and all below it are private to
the user who deploys (0700). Two users can then deploy to the same nodes one after the
other or at once.
"""

from __future__ import annotations

import re
import secrets
import shlex
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Set, TextIO

import paramiko

from fabexec import (
    Exec,
    ExecInfo,
    Get,
    Hostfile,
    MpiExecInfo,
    PsshExecInfo,
    Put,
    SshExecInfo,
    close_connections,
    sandbox,
)

from .kvstore import Client

HERE = Path(__file__).resolve().parent
SERVICE = "kvstore.py"
RANK_PROGRAM = "rank_client.py"
#: Where the deploy's folders go on every host; each deploy has a folder of its own.
REMOTE_ROOT = "/tmp/fabexec-deploy"
DEFAULT_PORT = 7479
RANKS_PER_HOST = 2
#: Seconds every instance has to answer PING once started.
START_TIMEOUT = 20.0
#: Seconds between two rounds of PINGs; every `LIVENESS_EVERY` rounds the silent hosts
#: are asked whether their service still runs.
PING_INTERVAL = 0.2
LIVENESS_EVERY = 5
#: Seconds a service has to exit after SIGTERM.
STOP_TIMEOUT = 5.0
MPI_TIMEOUT = 120.0
#: Hosts worked on at once (each is a thread waiting on SSH, not a CPU).
MAX_PARALLEL = 32
#: The most hosts a summary line names before it says "and N more".
NAMED_HOSTS = 8


# --------------------------------------------------------------------------- results

@dataclass
class Outcome:
    """How one step went on one host."""

    ok: bool
    detail: str
    seconds: float


@dataclass
class Step:
    """One step's outcome on every host it ran on."""

    name: str
    hosts: Dict[str, Outcome] = field(default_factory=dict)

    def failures(self) -> Dict[str, str]:
        return {host: out.detail for host, out in self.hosts.items() if not out.ok}


class StepFailed(Exception):
    """One host's part of a step went wrong; the message says what the user should read."""


class DeployFailed(Exception):
    """A step failed on some hosts; ``hosts`` maps each of them to its reason."""

    def __init__(self, step: str, hosts: Dict[str, str]) -> None:
        self.step, self.hosts = step, hosts
        first = next(iter(hosts.values()), "")
        super().__init__(f"deploy failed at step {step!r} on {hosts_named(hosts)}: {first}")


# --------------------------------------------------------------------------- where

@dataclass
class Target:
    """The cluster to deploy on: its hosts, how to reach them, what the service binds to.

    ``addresses`` is each host's address as the other hosts and this machine reach it;
    ``ssh_ports`` is where its sshd listens (a port certainly taken, for `Deployment`'s
    injected failure).
    """

    hosts: List[str]
    addresses: Dict[str, str]
    ssh_ports: Dict[str, int]
    hostfile: Optional[Path] = None
    user: Optional[str] = None
    key: Optional[str] = None
    ssh_config: Optional[Path] = None

    @classmethod
    def from_sandbox(cls, cluster: sandbox.Cluster, nodes: int) -> Target:
        """The first ``nodes`` nodes of a sandbox: its ssh_config says everything."""
        hosts = cluster.hosts[:nodes]
        return cls(hosts=hosts,
                   addresses={h: cluster.addresses[h][0] for h in hosts},
                   ssh_ports={h: cluster.addresses[h][1] for h in hosts},
                   hostfile=cluster.hostfile if hosts == cluster.hosts else None,
                   ssh_config=cluster.ssh_config)

    @classmethod
    def from_hostfile(cls, hostfile: str, user: Optional[str] = None, key: Optional[str] = None,
                      ssh_config: Optional[str] = None) -> Target:
        """A real cluster: every host of ``hostfile``, resolved through the SSH config.

        The service binds to the host's ``HostName`` in the config (or the name itself),
        the address the other hosts reach it by.
        """
        hosts = Hostfile(path=hostfile).hosts
        config_path = Path(ssh_config or "~/.ssh/config").expanduser()
        config = (paramiko.SSHConfig.from_path(str(config_path)) if config_path.is_file()
                  else paramiko.SSHConfig())
        entries = {h: config.lookup(h) for h in hosts}
        return cls(hosts=hosts,
                   addresses={h: entries[h].get("hostname", h) for h in hosts},
                   ssh_ports={h: int(entries[h].get("port", 22)) for h in hosts},
                   hostfile=Path(hostfile), user=user, key=key,
                   ssh_config=Path(ssh_config) if ssh_config else None)

    def info(self, info_class: type = PsshExecInfo, **changes: object) -> ExecInfo:
        """An `ExecInfo` reaching the hosts as configured, output collected and hidden."""
        return info_class(user=self.user, pkey=self.key, ssh_config=self.ssh_config,
                          collect_output=True, hide_output=True, **changes)


def running_sandbox(state_dir: Optional[Path] = None) -> Optional[sandbox.SandboxCluster]:
    """The sandbox whose every node runs, if there is one in ``state_dir``."""
    try:
        cluster = sandbox.SandboxCluster.load(state_dir or sandbox.default_state_dir())
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return cluster if set(cluster.status().values()) == {"running"} else None


@contextmanager
def sandbox_target(nodes: int, state_dir: Optional[Path] = None,
                   echo: Callable[[str], None] = print) -> Iterator[Target]:
    """The sandbox's first ``nodes`` nodes; started if none runs, and then stopped after.

    A running sandbox that is too small is refused rather than restarted, since it may
    be someone's work in progress.
    """
    cluster = running_sandbox(state_dir)
    started = cluster is None
    if cluster is None:
        begin = time.monotonic()
        cluster = sandbox.up(nodes, state_dir)
        echo(f"sandbox: started {nodes} nodes in {time.monotonic() - begin:.1f} s "
             f"({cluster.state_dir})")
    elif len(cluster.hosts) < nodes:
        raise DeployFailed("sandbox", {"sandbox": (
            f"the running sandbox has {len(cluster.hosts)} nodes, fewer than {nodes}: "
            "stop it (inv cluster.down) or ask for fewer nodes")})
    else:
        echo(f"sandbox: using the running one ({cluster.state_dir})")
    try:
        yield Target.from_sandbox(cluster, nodes)
    finally:
        if started:
            close_connections()  # our connections end before their daemons do
            sandbox.down(cluster.state_dir)
            echo("sandbox: stopped")


# --------------------------------------------------------------------------- the deployment

class Deployment:
    """One deploy of the service on ``target``; `run` does every step and the teardown.

    ``fail_host`` injects a failure: that host's service is told to bind its host's SSH
    port, which sshd holds, so it cannot start.
    """

    def __init__(self, target: Target, *, port: int = DEFAULT_PORT,
                 fail_host: Optional[str] = None, python: str = "python3",
                 mpiexec: str = "mpiexec", logs: Path = Path("deploy-logs"),
                 remote_root: str = REMOTE_ROOT, start_timeout: float = START_TIMEOUT,
                 out: Optional[TextIO] = None) -> None:
        if fail_host is not None and fail_host not in target.hosts:
            raise ValueError(f"fail_host={fail_host!r} is not one of the hosts "
                             f"({', '.join(target.hosts)})")
        self.target, self.port, self.fail_host = target, port, fail_host
        self.python, self.mpiexec, self.logs = python, mpiexec, Path(logs)
        if not remote_root.startswith("/"):
            raise ValueError(f"remote_dir={remote_root!r}: an absolute path, the same on "
                             "every host")
        self.start_timeout = start_timeout
        self.out = out
        self.id = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        self.root = remote_root.rstrip("/") or "/"
        self.base = f"{self.root.rstrip('/')}/{self.id}"
        self.steps: List[Step] = []
        self.services: Dict[str, Exec] = {}
        self.pushed: Set[str] = set()
        self._print_lock = threading.Lock()
        self.began = time.monotonic()

    # ----------------------------------------------------------------- paths

    def folder(self, host: str) -> str:
        return f"{self.base}/{host}"

    @property
    def job_folder(self) -> str:
        return f"{self.base}/job"

    def instance(self, host: str) -> str:
        return f"{self.target.addresses[host]}:{self.port}"

    def marker(self, host: str) -> str:
        """A ``pgrep -f`` pattern for this deploy's processes on ``host``.

        The ``[.]`` keeps the pattern from matching the shell line that runs ``pgrep``.
        """
        return f"{_ere(self.base)}/({_ere(host)}|job)/[a-z_]+[.]py"

    # ----------------------------------------------------------------- the whole run

    def run(self) -> List[Step]:
        """Every step, then the teardown; raises `DeployFailed` naming the failing hosts.

        A failure, Ctrl-C or SIGTERM at any step still tears down what was started,
        then goes on up to the caller.
        """
        self.began = time.monotonic()
        self.say(f"deploy {self.id}: {len(self.target.hosts)} hosts, service port "
                 f"{self.port}, remote folder {self.base}")
        with _sigterm_unwinds():
            try:
                for step in (self.push, self.start, self.wait_ready, self.run_mpi):
                    self.require(step())
            except BaseException as e:
                self.teardown(_stopped_by(e))
                raise
            steps = self.teardown()
        for step in steps:
            self.require(step)
        return self.steps

    def teardown(self, stopped_by: str = "") -> List[Step]:
        """Stop what was started, fetch the logs, check nothing is left, print the summary.

        An error in one of its steps is printed and the next step runs. A first Ctrl-C
        or SIGTERM meanwhile is held until the teardown is over, then raised; a second
        one stops it at once.
        """
        steps = []
        with _interrupts_held(self.say) as held:
            for step in (self.stop, self.fetch_logs, self.clean):
                try:
                    steps.append(step())
                except Exception as e:  # noqa: BLE001 - the next teardown steps must still run
                    self.say(f"teardown: {step.__name__}: {type(e).__name__}: {e}")
                    stopped_by = stopped_by or f"teardown error: {e}"
            if held and not stopped_by:
                stopped_by = _stopped_by(held[0])
            self.say(self.summary(stopped_by))
        if held:
            raise held[0]
        return steps

    def require(self, step: Step) -> None:
        failures = step.failures()
        if failures:
            raise DeployFailed(step.name, failures)

    # ----------------------------------------------------------------- steps

    def push(self) -> Step:
        return self.on_hosts("push", self.target.hosts, self._push)

    def _push(self, host: str) -> str:
        programs = [str(HERE / SERVICE), str(HERE / RANK_PROGRAM)]
        self.pushed.add(host)  # from the first byte on, the teardown cleans up there
        self._remote(self._private_base(), host)
        for folder in (self.folder(host), self.job_folder):
            done = Put(programs, f"{folder}/", self.target.info(SshExecInfo, hosts=host))
            if done.failed():
                raise StepFailed(str(done.errors[host]))
        version = self._remote(f"{shlex.quote(self.python)} -c 'import sys; "
                               "assert sys.version_info >= (3, 7), sys.version; "
                               "print(sys.version.split()[0])'", host)
        return f"{len(programs)} files in {host}/ and job/; python {version.strip()}"

    def _private_base(self) -> str:
        """Shell that makes the shared root (sticky, as /tmp) if missing, then this
        deploy's folder in it, private; or says whose root is in the way.

        The root is made with umask 0 so that it is never, even for a moment, a
        folder that only its maker can write (another user deploying at once would
        fail there); its missing parents, like every other folder, are private.
        """
        root, base, q = shlex.quote(self.root), shlex.quote(self.base), shlex.quote
        whose = (f"{q(f'cannot make {self.base}: {self.root} belongs to ')}"
                 f"\"$(stat -c '%U, mode %a' -- {root})\"{q(', which ')}\"$(id -un)\"" +
                 q(f" cannot write: give --remote-dir, or have its owner run chmod 1777 "
                   f"{self.root}"))
        return "\n".join([
            "umask 077",
            f'mkdir -p -- "$(dirname -- {root})" || exit 1',
            f"[ -d {root} ] || (umask 0 && mkdir -m 1777 -- {root}) 2>/dev/null "
            f"|| [ -d {root} ] || {{ echo {q(f'cannot make {self.root}')} >&2; exit 1; }}",
            f"mkdir -- {base} 2>/dev/null || {{ [ -d {base} ] && [ -O {base} ]; }} && exit 0",
            f"echo {whose} >&2",
            "exit 1",
        ])

    def start(self) -> Step:
        return self.on_hosts("start", self.in_order(self.pushed), self._start)

    def _start(self, host: str) -> str:
        port = self.port
        injected = ""
        if host == self.fail_host:
            port = self.target.ssh_ports[host]
            injected = f" (injected failure: {port} is the host's SSH port)"
        folder = self.folder(host)
        argv = [self.python, f"{folder}/{SERVICE}", "serve",
                "--bind", self.target.addresses[host], "--port", str(port),
                "--log", f"{folder}/kvstore.log", "--pidfile", f"{folder}/kvstore.pid"]
        self.services[host] = Exec(shlex.join(argv),
                                   self.target.info(hosts=[host], exec_async=True))
        return f"serving {self.target.addresses[host]}:{port}{injected}"

    def wait_ready(self) -> Step:
        """PING every instance until it answers; a service that died fails at once."""
        step = self.new_step("ready")
        begin = time.monotonic()
        pending = self.in_order(self.services)
        for tries in range(1, int(self.start_timeout / PING_INTERVAL) + 2):
            for host, ok in zip(list(pending), self.parallel(pending, self._pong)):
                if ok:
                    self.record(step, host, True, f"PONG from {self.instance(host)} "
                                f"after {tries} tries", time.monotonic() - begin)
                    pending.remove(host)
            if pending and tries % LIVENESS_EVERY == 0:
                for host, gone in zip(list(pending), self.parallel(pending, self._gone_why)):
                    if gone is not None:
                        self.record(step, host, False, gone, time.monotonic() - begin)
                        pending.remove(host)
            if not pending or time.monotonic() - begin > self.start_timeout:
                break
            time.sleep(PING_INTERVAL)
        for host in pending:
            self.record(step, host, False, f"no PONG from {self.instance(host)} within "
                        f"{self.start_timeout:.0f} s", time.monotonic() - begin)
        return step

    def _pong(self, host: str) -> bool:
        address = (self.target.addresses[host], self.port)
        try:
            with Client(address, timeout=2.0) as client:
                return client.request("PING") == "PONG"
        except OSError:
            return False

    def _gone_why(self, host: str) -> Optional[str]:
        """None while the host's service process runs; else why it does not."""
        log = shlex.quote(f"{self.folder(host)}/kvstore.log")
        check = Exec(f"pgrep -f -- {shlex.quote(self.marker(host))} >/dev/null && exit 0; "
                     f"tail -n 1 {log} 2>/dev/null; exit 1",
                     self.target.info(SshExecInfo, hosts=host))
        if check.errors:
            return f"cannot check the service: {check.errors[host]}"
        if check.exit_code == 0:
            return None
        said = _log_message(check.stdout[host].strip())
        return f"service exited: {said or 'nothing in its log'}"

    def run_mpi(self) -> Step:
        """One rank per (host, slot); rank R checks instance R % hosts; every one must say ok."""
        step = self.new_step("mpi")
        hosts = self.in_order(self.services)
        nprocs = RANKS_PER_HOST * len(hosts)
        where = ({"hostfile": self.target.hostfile} if self.target.hostfile is not None
                 and hosts == self.target.hosts else {"hosts": hosts})
        argv = [self.python, f"{self.job_folder}/{RANK_PROGRAM}",
                "--instances", ",".join(self.instance(h) for h in hosts), "--job", self.id]
        begin = time.monotonic()
        # Ranks start in the launcher's folder unless told, and this machine's folder
        # need not exist, or be readable, on the hosts: Hydra and Open MPI both take -wdir.
        job = Exec(shlex.join(argv), self.target.info(
            MpiExecInfo, nprocs=nprocs, ppn=RANKS_PER_HOST, mpiexec=self.mpiexec,
            mpi_args=["-wdir", self.job_folder], timeout=MPI_TIMEOUT, **where))
        seconds = time.monotonic() - begin
        ranks = _rank_lines(job.stdout.get("localhost", ""))
        problem = _job_problem(job)
        for index, host in enumerate(hosts):
            served = range(index, nprocs, len(hosts))
            bad = [f"rank {r}: {ranks[r][1]}" if r in ranks else f"rank {r}: no answer"
                   for r in served if ranks.get(r, ("", ""))[1] != "ok"]
            if problem and not ranks:
                self.record(step, host, False, problem, seconds)
            elif bad or problem:
                self.record(step, host, False, "; ".join(bad + ([problem] if problem else [])),
                            seconds)
            else:
                from_hosts = ", ".join(sorted({ranks[r][0] for r in served}))
                self.record(step, host, True, f"ranks {', '.join(map(str, served))} ok "
                            f"(running on {from_hosts})", seconds)
        return step

    def stop(self) -> Step:
        return self.on_hosts("stop", self.in_order(self.services), self._stop)

    def _stop(self, host: str) -> str:
        pidfile = shlex.quote(f"{self.folder(host)}/kvstore.pid")
        rounds = int(STOP_TIMEOUT / 0.05)
        service = self.services[host]
        try:
            said = self._remote(
                f'pid=$(cat {pidfile} 2>/dev/null) || {{ echo "was not running"; exit 0; }}; '
                f'kill -TERM "$pid" 2>/dev/null || {{ echo "was not running"; exit 0; }}; '
                f"for i in $(seq {rounds}); do "
                f'kill -0 "$pid" 2>/dev/null || {{ echo "stopped by SIGTERM"; exit 0; }}; '
                f"sleep 0.05; done; "
                f'echo "pid $pid still runs {STOP_TIMEOUT:.0f} s after SIGTERM"; exit 1', host)
        finally:
            code = service.kill()  # whatever SIGTERM did, nothing of it is left after this
        reason = service.stderr[host].strip().splitlines()[-1:] if code else []
        return f"{said.strip()}; exit code {code}" + (f": {reason[0]}" if reason else "")

    def fetch_logs(self) -> Step:
        return self.on_hosts("logs", self.in_order(self.services), self._fetch_log)

    def _fetch_log(self, host: str) -> str:
        destination = self.logs / host
        done = Get(f"{self.folder(host)}/kvstore.log", f"{destination}/",
                   self.target.info(SshExecInfo, hosts=host))
        if done.failed():
            raise StepFailed(str(done.errors[host]))
        lines = (destination / "kvstore.log").read_text(errors="replace").count("\n")
        return f"{destination / 'kvstore.log'} ({lines} lines)"

    def clean(self) -> Step:
        return self.on_hosts("clean", self.in_order(self.pushed), self._clean)

    def _clean(self, host: str) -> str:
        left = Exec(f"pgrep -af -- {shlex.quote(self.marker(host))}",
                    self.target.info(SshExecInfo, hosts=host))
        if left.errors:
            raise StepFailed(str(left.errors[host]))
        if left.exit_code == 0:
            raise StepFailed(f"still running: {left.stdout[host].strip()}")
        if left.exit_code != 1:
            raise StepFailed(f"pgrep failed ({left.exit_code}): {left.stderr[host].strip()}")
        self._remote(f"rm -rf -- {shlex.join([self.folder(host), self.job_folder])}; "
                     f"rmdir -- {shlex.quote(self.base)} 2>/dev/null; true", host)
        return f"no process left; {self.folder(host)} removed"

    # ----------------------------------------------------------------- helpers

    def _remote(self, command: str, host: str) -> str:
        """Run ``command`` on ``host``; its stdout, or `StepFailed` with its last error line."""
        done = Exec(command, self.target.info(SshExecInfo, hosts=host))
        if done.failed():
            said = (done.stderr[host] or done.stdout[host]).strip().splitlines()
            raise StepFailed(str(done.errors.get(host) or (said[-1] if said else
                                                           f"exit code {done.exit_code}")))
        return done.stdout[host]

    def in_order(self, hosts: Iterable[str]) -> List[str]:
        """``hosts`` in the target's order (threads finish in any order)."""
        chosen = set(hosts)
        return [host for host in self.target.hosts if host in chosen]

    def new_step(self, name: str) -> Step:
        step = Step(name)
        self.steps.append(step)
        return step

    def on_hosts(self, name: str, hosts: Sequence[str], work: Callable[[str], str]) -> Step:
        """``work(host)`` on every host at once, each outcome recorded and printed."""
        step = self.new_step(name)

        def one(host: str) -> None:
            begin = time.monotonic()
            try:
                ok, detail = True, work(host)
            except StepFailed as e:
                ok, detail = False, str(e)
            except Exception as e:  # noqa: BLE001 - one host's surprise is that host's FAIL
                ok, detail = False, f"{type(e).__name__}: {e}"
            self.record(step, host, ok, detail, time.monotonic() - begin)

        self.parallel(hosts, one)
        return step

    def parallel(self, hosts: Sequence[str], work: Callable[[str], object]) -> List[object]:
        if not hosts:
            return []
        with ThreadPoolExecutor(min(len(hosts), MAX_PARALLEL),
                                thread_name_prefix="deploy") as pool:
            return list(pool.map(work, hosts))

    def record(self, step: Step, host: str, ok: bool, detail: str, seconds: float) -> None:
        step.hosts[host] = Outcome(ok, detail, seconds)
        self.say(f"{step.name:<6} {host:<10} {'OK' if ok else 'FAIL':<4} {seconds:6.2f}s  "
                 f"{detail}")

    def say(self, text: str) -> None:
        with self._print_lock:
            print(text, file=self.out, flush=True)

    def summary(self, stopped_by: str = "") -> str:
        """A table, one row per host, one column per step; then every failure's reason.

        ``stopped_by`` says what ended the run early, when something did.
        """
        width = max([len("host")] + [len(h) for h in self.target.hosts])
        header = f"{'host':<{width}}  " + "  ".join(f"{s.name:<11}" for s in self.steps)
        rows = [header, "-" * len(header.rstrip())]
        for host in self.target.hosts:
            cells = []
            for step in self.steps:
                out = step.hosts.get(host)
                cells.append("-" if out is None else
                             f"{'OK' if out.ok else 'FAIL'} {out.seconds:.2f}s")
            rows.append(f"{host:<{width}}  " + "  ".join(f"{c:<11}" for c in cells))
        failures = [f"  {step.name} {host}: {detail}" for step in self.steps
                    for host, detail in step.failures().items()]
        if failures:
            verdict = "\n".join([stopped_by or "failed:", *failures])
        else:
            verdict = stopped_by or "every step OK"
        took = f"{time.monotonic() - self.began:.1f} s"
        return "\n".join(["", f"summary of deploy {self.id} ({took})", *rows, verdict])


# --------------------------------------------------------------------------- reading output

_RANK_LINE = re.compile(r"^rank (\d+) host (\S+) -> instance \d+ (.*)$", re.MULTILINE)


def _rank_lines(stdout: str) -> Dict[int, tuple]:
    """rank -> (host it ran on, outcome) from the job's merged output."""
    return {int(m.group(1)): (m.group(2), m.group(3).strip())
            for m in _RANK_LINE.finditer(stdout)}


def _job_problem(job: Exec) -> str:
    """What the launcher said went wrong, or '' when the job exited 0."""
    if not job.failed():
        return ""
    error = job.errors.get("localhost")
    lines = [line for line in job.stderr.get("localhost", "").splitlines() if line.strip()]
    said = str(error) if error else (lines[0] if lines else "no message")
    return f"mpiexec exited {job.exit_code}: {said}"


@contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """SIGTERM raises ``SystemExit(143)`` during the whole run, as Ctrl-C raises
    KeyboardInterrupt: its default ends the process on the spot, between two `Exec`
    calls too, and would leave the hosts' services running."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def unwind(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, unwind)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _interrupts_held(say: Callable[[str], None]) -> Iterator[List[BaseException]]:
    """Hold the first SIGINT or SIGTERM (as the exception it would raise) in the list
    yielded, so that a teardown is not cut half-way; raise at a second one."""
    held: List[BaseException] = []
    if threading.current_thread() is not threading.main_thread():
        yield held
        return

    def hold(signum: int, frame: object) -> None:
        error = KeyboardInterrupt() if signum == signal.SIGINT else SystemExit(128 + signum)
        if held:
            raise error
        held.append(error)
        say("interrupted: finishing the teardown first (interrupt again to stop it now)")

    previous = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield held
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stopped_by(error: BaseException) -> str:
    """What the summary says about the exception that ended the steps early."""
    if isinstance(error, DeployFailed):
        return f"failed at step {error.step!r}:"
    if isinstance(error, KeyboardInterrupt):
        return "interrupted (Ctrl-C): torn down"
    if isinstance(error, SystemExit):
        return f"stopped by a signal (exit {error.code}): torn down"
    return f"stopped by an error: {type(error).__name__}: {error}"


def _log_message(line: str) -> str:
    """A kvstore log line without its time, host and PID."""
    return re.sub(r"^.*? kvstore\[\d+\] [A-Z]+ ", "", line)


def _ere(text: str) -> str:
    """``text`` as a literal in a POSIX extended regular expression (``pgrep``'s)."""
    return re.sub(r"([][.^$*+?(){}|\\])", r"\\\1", text)


def hosts_named(hosts: Iterable[str]) -> str:
    hosts = list(hosts)
    more = f" and {len(hosts) - NAMED_HOSTS} more" if len(hosts) > NAMED_HOSTS else ""
    return ", ".join(hosts[:NAMED_HOSTS]) + more
