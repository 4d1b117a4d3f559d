"""SSH speed: fabexec against Fabric, parallel-ssh and OpenSSH, in one run on a sandbox.

Brings up its own 64-node sandbox (`fabexec.sandbox`, state in a temporary folder,
torn down at the end, also on error or SIGTERM) and prints, for the targets of the
SSH issue's "Speed" section and the CPU-per-host target of the faults issue, the
figures of every tool measured in this run and the ratios against them:

1. fan-out: ``hostname`` on 8, 32 and 64 hosts, every tool connecting anew;
2. reuse: ten ``true`` in a row on 32 hosts, over cached or new connections;
3. throughput: 64 MiB from one host into a file;
4. a command on a cached connection: ``true`` on one host over a connection already
   open, against OpenSSH's ControlMaster (a master already running).

Tools are interleaved (their order rotated each round) and each figure is the median
of the rounds, so that a noisy machine shifts them all alike. Client CPU is user +
system time of this process and of its reaped children, so the OpenSSH processes
count too; it is read with ``getrusage``, exact where ``os.times()`` counts 10 ms
ticks (too coarse for 8 hosts). Timings are printed, never asserted: PASS/FAIL says
where a target stands. Two to three minutes; ``python bench/ssh.py`` or
``inv bench ssh``.
"""

from __future__ import annotations

import gc
import io
import logging
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import fabric
import paramiko
from fabric import Config, ThreadingGroup
from pssh.clients import ParallelSSHClient
from pssh.config import HostConfig
from ssh2 import session as ssh2_session

from fabexec import Exec, PsshExecInfo, SshExecInfo, connections, sandbox

NODES = 64
FANOUT_SIZES = (8, 32, 64)
FANOUT_ROUNDS = 5
#: Rounds that run whatever the budget says, so that a median means something.
MIN_ROUNDS = 3
REUSE_HOSTS = 32
REUSE_RUNS = 10
REUSE_ROUNDS = 3
REUSE_MIN_ROUNDS = 2  # a round takes 15 s or more: ten new connections to 32 hosts
THROUGHPUT_BYTES = 64 * 1024 * 1024
THROUGHPUT_ROUNDS = 5
CACHED_COMMANDS = 20  # in a row per round; the figure is per command
CACHED_ROUNDS = 7
CACHED_MIN_ROUNDS = 5
#: Seconds each section may spend on rounds past the minimum: no round starts that
#: the previous one says would end later.
FANOUT_BUDGET, REUSE_BUDGET, THROUGHPUT_BUDGET, CACHED_BUDGET = 75.0, 45.0, 15.0, 10.0
#: Seconds one command of any tool may take before the benchmark gives up.
COMMAND_TIMEOUT = 60.0
CONNECT_TIMEOUT = 10

# Targets (issue "SSH and parallel SSH", Speed; issue "Faults", CPU per host).
FANOUT_WALL_MAX = 1.1  # fabexec wall / Fabric ThreadingGroup wall, at 64 hosts
FANOUT_CPU_MAX = 1.2  # fabexec client CPU / Fabric's, at 64 hosts
CPU_PER_HOST_MAX_MS = 2.5
REUSE_SPEEDUP_MIN = 3.0  # new connections each time / cached connections
REUSE_VS_FABRIC_MAX = 1.0  # fabexec cached / one Fabric group reused
THROUGHPUT_MAX = 1.5  # fabexec pipe_stdout / OpenSSH ``ssh host cmd > file``
CACHED_MAX = 1.5  # fabexec on a cached connection / OpenSSH ControlMaster, per command
STDIN_BYTES = 50 * 1024 * 1024
STDIN_ROUNDS = 5
STDIN_BUDGET = 120.0
STDIN_MAX = 1.5  # fabexec stdin=bytes (or a file) / OpenSSH ``ssh host cmd < file``, both warm

FABEXEC = "fabexec"
FABRIC = "Fabric ThreadingGroup"
PSSH = "parallel-ssh"
OPENSSH = "OpenSSH, a process per host"


class BenchError(RuntimeError):
    """A tool did not do the job (a host failed, output missing): its times mean nothing."""


@dataclass
class Sample:
    wall: float
    cpu: float


@dataclass
class Case:
    """One tool doing one job; only ``run`` is timed, ``repeat`` times in a row.

    ``before_each`` runs untimed before every repetition (fabexec's ``close_connections()``
    for a cold cache); ``check`` raises `BenchError` when a result is wrong.
    """

    name: str
    run: Callable[[], Any]
    check: Callable[[Any], None]
    setup: Callable[[], None] = lambda: None
    before_each: Callable[[], None] = lambda: None
    teardown: Callable[[], None] = lambda: None
    repeat: int = 1


def _cpu() -> float:
    own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                           resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(case: Case) -> Sample:
    gc.collect()
    case.setup()
    wall = cpu = 0.0
    try:
        for _ in range(case.repeat):
            case.before_each()
            cpu0, wall0 = _cpu(), time.perf_counter()
            result = case.run()
            wall += time.perf_counter() - wall0
            cpu += _cpu() - cpu0
            case.check(result)
    finally:
        case.teardown()
    return Sample(wall, cpu)


@dataclass
class Medians:
    wall: float
    cpu: float
    rounds: int


def interleave(cases: Sequence[Case], rounds: int, budget: float,
               min_rounds: int = MIN_ROUNDS) -> Dict[str, Medians]:
    """Every case once per round, the order rotated each round; medians per case.

    Stops after ``rounds`` rounds, or, once ``min_rounds`` have run, before a
    round that would likely end more than ``budget`` seconds after the start.
    """
    samples: Dict[str, List[Sample]] = {case.name: [] for case in cases}
    deadline = time.monotonic() + budget
    for r in range(rounds):
        began = time.monotonic()
        for case in cases[r % len(cases):] + cases[:r % len(cases)]:
            samples[case.name].append(measure(case))
        if r + 1 >= min_rounds and 2 * time.monotonic() - began > deadline:
            break
    return {name: Medians(statistics.median(s.wall for s in got),
                          statistics.median(s.cpu for s in got), len(got))
            for name, got in samples.items()}


# --- the tools ------------------------------------------------------------------


def fabexec_info(cluster: sandbox.SandboxCluster, hosts: Sequence[str], **kw: Any
                 ) -> PsshExecInfo:
    return PsshExecInfo(hosts=list(hosts), ssh_config=str(cluster.ssh_config),
                        hide_output=True, connect_timeout=CONNECT_TIMEOUT,
                        timeout=COMMAND_TIMEOUT, **kw)


def check_exec(expected_hosts: Sequence[str]) -> Callable[[Exec], None]:
    def check(node: Exec) -> None:
        bad = {h: node.exit_codes.get(h) for h in expected_hosts if node.exit_codes.get(h) != 0}
        if bad or node.exit_code != 0:
            raise BenchError(f"fabexec: hosts failed {bad}: {node.errors}")
    return check


def check_group(result: Any) -> None:
    failed = {c.original_host: r for c, r in result.items() if getattr(r, "exited", 1) != 0}
    if failed:
        raise BenchError(f"Fabric: hosts failed: {failed}")


def check_codes(tool: str) -> Callable[[Dict[str, int]], None]:
    def check(codes: Dict[str, int]) -> None:
        bad = {h: code for h, code in codes.items() if code != 0}
        if bad:
            raise BenchError(f"{tool}: hosts failed: {bad}")
    return check


class Pssh:
    """parallel-ssh's native client (libssh2), key and port per host via HostConfig."""

    def __init__(self, cluster: sandbox.SandboxCluster, hosts: Sequence[str]) -> None:
        self.ips = [cluster.addresses[h][0] for h in hosts]
        self.names = dict(zip(self.ips, hosts))
        self.configs = [HostConfig(user=cluster.user, port=cluster.addresses[h][1],
                                   private_key=str(cluster.key)) for h in hosts]
        self.key = str(cluster.key)
        self.client: Optional[ParallelSSHClient] = None

    def connect(self) -> ParallelSSHClient:
        self.client = ParallelSSHClient(self.ips, host_config=self.configs, pkey=self.key,
                                        num_retries=1, timeout=CONNECT_TIMEOUT)
        return self.client

    def run(self, command: str, fresh: bool) -> Dict[str, Any]:
        """``{host: (exit code, stdout lines)}``, output read to the end."""
        client = self.connect() if fresh or self.client is None else self.client
        output = client.run_command(command)
        client.join(output, timeout=COMMAND_TIMEOUT)
        lines = {o.host: list(o.stdout or ()) for o in output}  # to EOF: then exit_code is set
        return {self.names[o.host]: (o.exit_code, lines[o.host]) for o in output}

    def close(self) -> None:
        self.client = None  # its SSH clients disconnect when collected
        gc.collect()


def openssh(cluster: sandbox.SandboxCluster, hosts: Sequence[str], command: str
            ) -> Dict[str, Any]:
    """One ``ssh -F ssh_config host command`` per host, all at once, as jarvis-util does."""
    procs = {h: subprocess.Popen(["ssh", "-F", str(cluster.ssh_config), "-o", "BatchMode=yes",
                                  h, command], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for h in hosts}
    deadline = time.monotonic() + COMMAND_TIMEOUT
    results = {}
    try:
        for h, proc in procs.items():
            out, _ = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
            results[h] = (proc.returncode, out.decode().split())
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


# --- negotiated algorithms --------------------------------------------------------


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def paramiko_algorithms(connect: Callable[[], None]) -> Dict[str, str]:
    """What paramiko agreed on for one connection, from its own debug log."""
    logger = logging.getLogger("paramiko.transport")
    capture, level = _Capture(), logger.level
    logger.addHandler(capture)
    logger.setLevel(logging.DEBUG)
    try:
        connect()
    finally:
        logger.removeHandler(capture)
        logger.setLevel(level)
    agreed = dict(line.split(": ", 1) for line in capture.lines
                  if line.split(": ", 1)[0] in ("Kex", "HostKey", "Cipher", "MAC"))
    return {key.lower(): value for key, value in agreed.items()}


def libssh2_algorithms(cluster: sandbox.SandboxCluster, host: str) -> Dict[str, str]:
    client = Pssh(cluster, [host])
    client.run("true", fresh=True)
    try:
        # A private attribute of parallel-ssh: the only way to its libssh2 session.
        session = next(iter(client.client._host_clients.values())).session
        return {"kex": session.methods(ssh2_session.LIBSSH2_METHOD_KEX),
                "hostkey": session.methods(ssh2_session.LIBSSH2_METHOD_HOSTKEY),
                "cipher": session.methods(ssh2_session.LIBSSH2_METHOD_CRYPT_SC),
                "mac": session.methods(ssh2_session.LIBSSH2_METHOD_MAC_SC)}
    except (AttributeError, StopIteration):  # parallel-ssh changed its insides
        return {}
    finally:
        client.close()


def openssh_algorithms(cluster: sandbox.SandboxCluster, host: str) -> Dict[str, str]:
    proc = subprocess.run(["ssh", "-v", "-F", str(cluster.ssh_config), "-o", "BatchMode=yes",
                           host, "true"], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=COMMAND_TIMEOUT)
    found = {}
    for line in proc.stderr.splitlines():
        for key, marker in (("kex", "kex: algorithm: "), ("hostkey", "kex: host key algorithm: "),
                            ("cipher", "kex: server->client cipher: "), ("mac", " MAC: ")):
            if marker in line and key not in found:
                found[key] = line.split(marker, 1)[1].split()[0]
    return found


def print_setup(cluster: sandbox.SandboxCluster) -> None:
    """The cluster, the machine, and which algorithms each tool agreed on with sshd."""
    host = cluster.hosts[0]
    ssh_version = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()
    first, last = (cluster.addresses[h][0] for h in (cluster.hosts[0], cluster.hosts[-1]))

    def fabexec_connect() -> None:
        connections.close_connections()
        Exec("true", SshExecInfo(hosts=host, ssh_config=str(cluster.ssh_config),
                                 hide_output=True, connect_timeout=CONNECT_TIMEOUT))
        connections.close_connections()

    def fabric_connect() -> None:
        config = Config(runtime_ssh_path=str(cluster.ssh_config))
        with fabric.Connection(host, config=config) as cxn:
            cxn.open()

    print(f"Sandbox: {len(cluster.hosts)} OpenSSH sshd daemons on loopback ({first}..{last}), "
          f"login user {cluster.user}, ed25519 keys, state in {cluster.state_dir}")
    print(f"Client: {os.cpu_count()} CPUs shared with the daemons, Python "
          f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f} at start")
    agreed = {
        f"fabexec (paramiko {paramiko.__version__})": paramiko_algorithms(fabexec_connect),
        f"Fabric {fabric.__version__} (paramiko)": paramiko_algorithms(fabric_connect),
        f"parallel-ssh {version('parallel-ssh')} (libssh2)": libssh2_algorithms(cluster, host),
        ssh_version.split(",")[0]: openssh_algorithms(cluster, host),
    }
    print("Algorithms agreed with sshd (probed on one connection of each tool, in this run):")
    table(["tool", "kex", "host key", "cipher", "mac"],
          [[tool, *(got.get(k, "?") for k in ("kex", "hostkey", "cipher", "mac"))]
           for tool, got in agreed.items()], left=5)
    kexes = {got.get("kex", "?").split("@")[0] for got in agreed.values()}
    print(f"  Key exchange: {'the same for all: ' if len(kexes) == 1 else 'DIFFERS: '}"
          f"{', '.join(sorted(kexes))}. The sandbox ssh_config sets KexAlgorithms "
          "curve25519-sha256 for OpenSSH,\n  whose own default (sntrup761x25519) costs ~80 ms "
          "of CPU per connection; paramiko and libssh2 choose curve25519 themselves.\n"
          "  Ciphers differ, as the table says: fabexec offers AES-GCM first, the others "
          "keep their own defaults.\n"
          "  Host keys: fabexec and OpenSSH check known_hosts; Fabric (AutoAddPolicy) and "
          "parallel-ssh check nothing.")


# --- the sections -----------------------------------------------------------------


def fanout_cases(cluster: sandbox.SandboxCluster, n: int, cfg: Config) -> List[Case]:
    hosts = cluster.hosts[:n]
    info = fabexec_info(cluster, hosts)
    groups: List[Any] = []
    client = Pssh(cluster, hosts)

    def fabric_run() -> Any:
        group = ThreadingGroup(*hosts, config=cfg)
        groups.append(group)
        return group.run("hostname", hide=True, timeout=COMMAND_TIMEOUT)

    def fabric_close() -> None:
        while groups:
            groups.pop().close()

    return [
        Case(FABEXEC, lambda: Exec("hostname", info), check_exec(hosts),
             before_each=connections.close_connections, teardown=connections.close_connections),
        Case(FABRIC, fabric_run, check_group, teardown=fabric_close),
        Case(PSSH, lambda: {h: c for h, (c, _) in client.run("hostname", fresh=True).items()},
             check_codes(PSSH), teardown=client.close),
        Case(OPENSSH, lambda: {h: c for h, (c, _) in openssh(cluster, hosts, "hostname").items()},
             check_codes(OPENSSH)),
    ]


def warm_up(cluster: sandbox.SandboxCluster, cfg: Config) -> None:
    """Each tool once on 8 hosts (imports, first-use costs), its output checked."""
    hosts = cluster.hosts[:8]
    expected = {h: [h] for h in hosts} if cluster.own_hostnames else None
    connections.close_connections()
    node = Exec("hostname", fabexec_info(cluster, hosts, collect_output=True))
    check_exec(hosts)(node)
    got = {"fabexec": {h: node.stdout[h].split() for h in hosts}}
    group = ThreadingGroup(*hosts, config=cfg)
    result = group.run("hostname", hide=True, timeout=COMMAND_TIMEOUT)
    check_group(result)
    got["Fabric"] = {c.original_host: r.stdout.split() for c, r in result.items()}
    group.close()
    client = Pssh(cluster, hosts)
    got["parallel-ssh"] = {h: out for h, (_, out) in client.run("hostname", True).items()}
    client.close()
    got["OpenSSH"] = {h: out for h, (_, out) in openssh(cluster, hosts, "hostname").items()}
    connections.close_connections()
    for tool, outputs in got.items():
        if expected is not None and outputs != expected:
            raise BenchError(f"{tool}: `hostname` gave {outputs}, expected {expected}")


def run_fanout(cluster: sandbox.SandboxCluster, cfg: Config) -> Dict[int, Dict[str, Medians]]:
    results = {}
    budget = FANOUT_BUDGET / sum(FANOUT_SIZES)
    for n in FANOUT_SIZES:
        results[n] = interleave(fanout_cases(cluster, n, cfg), FANOUT_ROUNDS, budget * n)
    return results


def run_reuse(cluster: sandbox.SandboxCluster, cfg: Config) -> Dict[str, Medians]:
    hosts = cluster.hosts[:REUSE_HOSTS]
    info = fabexec_info(cluster, hosts)
    check = check_exec(hosts)
    state: Dict[str, Any] = {}
    client = Pssh(cluster, hosts)

    def warm_cache() -> None:
        connections.close_connections()
        check(Exec("true", info))

    def fabric_open() -> None:
        state["group"] = ThreadingGroup(*hosts, config=cfg)
        check_group(state["group"].run("true", hide=True, timeout=COMMAND_TIMEOUT))

    def fabric_close() -> None:
        state.pop("group").close()

    def pssh_open() -> None:
        check_codes(PSSH)({h: c for h, (c, _) in client.run("true", fresh=True).items()})

    cases = [
        Case("fabexec, cached connections", lambda: Exec("true", info), check,
             setup=warm_cache, teardown=connections.close_connections, repeat=REUSE_RUNS),
        Case("fabexec, new connections each time", lambda: Exec("true", info), check,
             before_each=connections.close_connections, teardown=connections.close_connections,
             repeat=REUSE_RUNS),
        Case("Fabric ThreadingGroup, one reused",
             lambda: state["group"].run("true", hide=True, timeout=COMMAND_TIMEOUT),
             check_group, setup=fabric_open, teardown=fabric_close, repeat=REUSE_RUNS),
        Case("parallel-ssh client, one reused",
             lambda: {h: c for h, (c, _) in client.run("true", fresh=False).items()},
             check_codes(PSSH), setup=pssh_open, teardown=client.close, repeat=REUSE_RUNS),
    ]
    return interleave(cases, REUSE_ROUNDS, REUSE_BUDGET, REUSE_MIN_ROUNDS)


def run_throughput(cluster: sandbox.SandboxCluster, folder: Path) -> Dict[str, Medians]:
    host = cluster.hosts[0]
    command = f"head -c {THROUGHPUT_BYTES // (1024 * 1024)}M /dev/zero"
    fabexec_file, openssh_file = folder / "fabexec.out", folder / "openssh.out"
    info = SshExecInfo(hosts=host, ssh_config=str(cluster.ssh_config), hide_output=True,
                       pipe_stdout=str(fabexec_file), connect_timeout=CONNECT_TIMEOUT,
                       timeout=COMMAND_TIMEOUT)

    def check_file(path: Path) -> Callable[[Any], None]:
        def check(returncode: Any) -> None:
            if returncode != 0:
                raise BenchError(f"{path.name}: the command exited with {returncode}")
            size = path.stat().st_size if path.exists() else None
            if size != THROUGHPUT_BYTES:
                raise BenchError(f"{path.name}: {size} bytes, expected {THROUGHPUT_BYTES}")
            path.unlink()
        return check

    def ssh_to_file() -> int:
        with open(openssh_file, "wb") as out:
            return subprocess.run(["ssh", "-F", str(cluster.ssh_config), "-o", "BatchMode=yes",
                                   host, command], stdin=subprocess.DEVNULL, stdout=out,
                                  timeout=COMMAND_TIMEOUT).returncode

    def check_exec_file(node: Exec) -> None:
        check_exec([host])(node)
        check_file(fabexec_file)(node.exit_code)

    cases = [
        Case("fabexec pipe_stdout, hide_output", lambda: Exec(command, info), check_exec_file,
             before_each=connections.close_connections, teardown=connections.close_connections),
        Case("OpenSSH `ssh host cmd > file`", ssh_to_file, check_file(openssh_file)),
    ]
    return interleave(cases, THROUGHPUT_ROUNDS, THROUGHPUT_BUDGET)


CACHED_FABEXEC = "fabexec, cached connection"
CACHED_OPENSSH = "OpenSSH, ControlMaster running"


def run_cached(cluster: sandbox.SandboxCluster, folder: Path) -> Dict[str, Medians]:
    """``true`` on one host, both tools warm: the connection (fabexec) or the master
    (OpenSSH ``ControlMaster=auto``, ``ControlPersist``) opened before, untimed."""
    host = cluster.hosts[0]
    info = SshExecInfo(hosts=host, ssh_config=str(cluster.ssh_config), hide_output=True,
                       connect_timeout=CONNECT_TIMEOUT, timeout=COMMAND_TIMEOUT)
    ssh = ["ssh", "-F", str(cluster.ssh_config), "-o", "BatchMode=yes",
           "-o", f"ControlPath={folder}/master-%C"]
    master = [*ssh, "-o", "ControlMaster=auto", "-o", "ControlPersist=60", host]

    def openssh_true() -> Dict[str, int]:
        return {host: subprocess.run([*master, "true"], stdin=subprocess.DEVNULL,
                                     timeout=COMMAND_TIMEOUT).returncode}

    def warm_fabexec() -> None:
        connections.close_connections()
        check_exec([host])(Exec("true", info))

    def stop_master() -> None:
        subprocess.run([*ssh, "-O", "exit", host], capture_output=True, timeout=COMMAND_TIMEOUT)

    cases = [
        Case(CACHED_FABEXEC, lambda: Exec("true", info), check_exec([host]),
             setup=warm_fabexec, teardown=connections.close_connections, repeat=CACHED_COMMANDS),
        Case(CACHED_OPENSSH, openssh_true, check_codes(OPENSSH),
             setup=lambda: check_codes(OPENSSH)(openssh_true()), teardown=stop_master,
             repeat=CACHED_COMMANDS),
    ]
    return interleave(cases, CACHED_ROUNDS, CACHED_BUDGET, CACHED_MIN_ROUNDS)


STDIN_OPENSSH = "OpenSSH `ssh host wc -c < file`, ControlMaster"


def run_stdin(cluster: sandbox.SandboxCluster, folder: Path) -> Dict[str, Medians]:
    """``wc -c`` reading 50 MiB of stdin on one host, both tools warm: every kind of
    stdin fabexec takes (it was quadratic for bytes: 50 MB took 15 s) against OpenSSH."""
    host = cluster.hosts[0]
    data = os.urandom(STDIN_BYTES)
    source = folder / "stdin.bin"
    source.write_bytes(data)
    info = SshExecInfo(hosts=host, ssh_config=str(cluster.ssh_config), hide_output=True,
                       collect_output=True, connect_timeout=CONNECT_TIMEOUT,
                       timeout=COMMAND_TIMEOUT)
    ssh = ["ssh", "-F", str(cluster.ssh_config), "-o", "BatchMode=yes",
           "-o", f"ControlPath={folder}/stdin-master-%C", "-o", "ControlMaster=auto",
           "-o", "ControlPersist=60", host]
    expected = f"{STDIN_BYTES}\n"

    def check(node: Exec) -> None:
        check_exec([host])(node)
        if node.stdout[host] != expected:
            raise BenchError(f"wc -c read {node.stdout[host]!r}, expected {expected!r}")

    def openssh_wc() -> str:
        with open(source, "rb") as stdin:
            return subprocess.run([*ssh, "wc -c"], stdin=stdin, capture_output=True, text=True,
                                  timeout=COMMAND_TIMEOUT).stdout

    def check_openssh(out: str) -> None:
        if out != expected:
            raise BenchError(f"OpenSSH: wc -c read {out!r}")

    def with_file() -> Exec:
        with open(source, "rb") as stdin:
            return Exec("wc -c", info.mod(stdin=stdin))

    def warm() -> None:
        check_exec([host])(Exec("true", info))

    cases = [
        Case("fabexec stdin=bytes", lambda: Exec("wc -c", info.mod(stdin=data)), check,
             setup=warm),
        Case("fabexec stdin=BytesIO", lambda: Exec("wc -c", info.mod(stdin=io.BytesIO(data))),
             check),
        Case("fabexec stdin=open file", with_file, check),
        Case(STDIN_OPENSSH, openssh_wc, check_openssh,
             setup=lambda: check_openssh(openssh_wc()),
             teardown=lambda: subprocess.run([*ssh[:-1], "-O", "exit", host],
                                             capture_output=True, timeout=COMMAND_TIMEOUT)),
    ]
    return interleave(cases, STDIN_ROUNDS, STDIN_BUDGET)


# --- printing ---------------------------------------------------------------------


@dataclass
class Verdicts:
    rows: List[List[str]] = field(default_factory=list)

    def add(self, what: str, against: str, measured: float, target: str, ok: bool,
            unit: str = "x") -> None:
        value = f"{measured:.2f}{unit}" if unit == "x" else f"{measured:.2f} {unit}"
        self.rows.append([what, against, value, target, "PASS" if ok else "FAIL"])


def table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 2) -> None:
    """Columns aligned, the first ``left`` ones to the left, figures to the right."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        cells = [str(c).ljust(w) if i < left else str(c).rjust(w)
                 for i, (c, w) in enumerate(zip(row, widths))]
        print("  " + "  ".join(cells).rstrip())


def print_fanout(results: Dict[int, Dict[str, Medians]]) -> None:
    print("\n1. Fan-out: `hostname` on N hosts, each tool connecting anew every time "
          "(fabexec: connection cache emptied by close_connections() before each call)")
    rows = []
    for n, by_tool in results.items():
        for tool, m in by_tool.items():
            rows.append([str(n), tool, f"{m.wall:.3f}", f"{m.cpu:.3f}",
                         f"{1000 * m.cpu / n:.1f}", str(m.rounds)])
    table(["hosts", "tool", "wall s", "client CPU s", "CPU ms/host", "rounds"], rows)


def print_sections(title: str, results: Dict[str, Medians], note: str = "") -> None:
    print(f"\n{title}")
    if note:
        print(f"  {note}")
    table(["tool", "wall s", "client CPU s", "rounds"],
          [[tool, f"{m.wall:.3f}", f"{m.cpu:.3f}", str(m.rounds)] for tool, m in results.items()],
          left=1)


def print_cached(results: Dict[str, Medians]) -> None:
    print(f"\n4. A command on a cached connection: `true` on one host, {CACHED_COMMANDS} in a "
          "row, connection or master opened before (untimed)")
    table(["tool", "wall ms/command", "client CPU ms/command", "rounds"],
          [[tool, f"{1000 * m.wall / CACHED_COMMANDS:.2f}",
            f"{1000 * m.cpu / CACHED_COMMANDS:.2f}", str(m.rounds)]
           for tool, m in results.items()], left=1)


def verdicts(fanout: Dict[int, Dict[str, Medians]], reuse: Dict[str, Medians],
             throughput: Dict[str, Medians], cached: Dict[str, Medians],
             stdin: Dict[str, Medians]) -> Verdicts:
    v = Verdicts()
    n = max(FANOUT_SIZES)
    ours, fab = fanout[n][FABEXEC], fanout[n][FABRIC]
    v.add(f"fan-out {n} hosts: fabexec wall", f"Fabric ThreadingGroup ({fab.wall:.2f} s)",
          ours.wall / fab.wall, f"<= {FANOUT_WALL_MAX:.2f}x",
          ours.wall <= FANOUT_WALL_MAX * fab.wall)
    v.add(f"fan-out {n} hosts: fabexec client CPU", f"Fabric ThreadingGroup ({fab.cpu:.2f} s)",
          ours.cpu / fab.cpu, f"<= {FANOUT_CPU_MAX:.2f}x", ours.cpu <= FANOUT_CPU_MAX * fab.cpu)
    for size in FANOUT_SIZES:
        per_host = 1000 * fanout[size][FABEXEC].cpu / size
        peer = 1000 * fanout[size][PSSH].cpu / size
        v.add(f"fan-out {size} hosts: fabexec CPU per host", f"absolute (parallel-ssh "
              f"{peer:.1f} ms)", per_host, f"<= {CPU_PER_HOST_MAX_MS} ms",
              per_host <= CPU_PER_HOST_MAX_MS, unit="ms")
    warm = reuse["fabexec, cached connections"]
    cold = reuse["fabexec, new connections each time"]
    group = reuse["Fabric ThreadingGroup, one reused"]
    v.add(f"reuse {REUSE_RUNS}x{REUSE_HOSTS}: new connections / cached (speed-up)",
          f"fabexec cached ({warm.wall:.2f} s)", cold.wall / warm.wall,
          f">= {REUSE_SPEEDUP_MIN:.2f}x", cold.wall >= REUSE_SPEEDUP_MIN * warm.wall)
    v.add(f"reuse {REUSE_RUNS}x{REUSE_HOSTS}: fabexec cached wall",
          f"one Fabric group reused ({group.wall:.2f} s)", warm.wall / group.wall,
          f"<= {REUSE_VS_FABRIC_MAX:.2f}x", warm.wall <= REUSE_VS_FABRIC_MAX * group.wall)
    ours, ref = throughput.values()
    v.add(f"throughput {THROUGHPUT_BYTES >> 20} MiB: fabexec pipe_stdout wall",
          f"OpenSSH > file ({ref.wall:.2f} s)", ours.wall / ref.wall,
          f"<= {THROUGHPUT_MAX:.2f}x", ours.wall <= THROUGHPUT_MAX * ref.wall)
    ours, ref = cached[CACHED_FABEXEC], cached[CACHED_OPENSSH]
    v.add("cached connection: fabexec `true` wall", f"OpenSSH ControlMaster "
          f"({1000 * ref.wall / CACHED_COMMANDS:.1f} ms)", ours.wall / ref.wall,
          f"<= {CACHED_MAX:.2f}x", ours.wall <= CACHED_MAX * ref.wall)
    ref = stdin[STDIN_OPENSSH]
    for tool, m in stdin.items():
        if tool != STDIN_OPENSSH:
            v.add(f"stdin {STDIN_BYTES >> 20} MiB: {tool} wall", f"OpenSSH < file "
                  f"({ref.wall:.2f} s)", m.wall / ref.wall, f"<= {STDIN_MAX:.2f}x",
                  m.wall <= STDIN_MAX * ref.wall)
    return v


def main() -> int:
    folder = Path(tempfile.mkdtemp(prefix="fabexec-bench-ssh-"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` tears down
    started = time.monotonic()
    try:
        cluster = sandbox.up(NODES, state_dir=folder / "sandbox")
        print(f"fabexec SSH benchmark (sandbox up in {time.monotonic() - started:.1f} s)")
        print_setup(cluster)
        cfg = Config(runtime_ssh_path=str(cluster.ssh_config))  # parsed once, as fabexec does
        warm_up(cluster, cfg)
        print("\nEach figure: median of interleaved rounds (order rotated per round); "
              "client CPU = user+sys of this process and its children (getrusage).")
        fanout = run_fanout(cluster, cfg)
        print_fanout(fanout)
        reuse = run_reuse(cluster, cfg)
        print_sections(f"2. Reuse: {REUSE_RUNS} successive `true` on {REUSE_HOSTS} hosts "
                       "(total of the ten)", reuse,
                       "connection set-up and close_connections() are untimed; "
                       "only the ten calls count")
        throughput = run_throughput(cluster, folder)
        print_sections(f"3. Remote throughput: {THROUGHPUT_BYTES >> 20} MiB from one host "
                       "(`head -c 64M /dev/zero`) into a file, connecting included", throughput)
        cached = run_cached(cluster, folder)
        print_cached(cached)
        stdin = run_stdin(cluster, folder)
        print_sections(f"5. stdin: `wc -c` reading {STDIN_BYTES >> 20} MiB on one host, "
                       "connection or master open (untimed)", stdin)
        print("\nTargets (ratio = fabexec / peer unless said otherwise; measured in this run)")
        table(["check", "against", "measured", "target", "verdict"], verdicts(
            fanout, reuse, throughput, cached, stdin).rows)
        print(f"\nload average {os.getloadavg()[0]:.1f} at the end; "
              f"total {time.monotonic() - started:.0f} s")
    finally:
        connections.close_connections()
        sandbox.down(folder / "sandbox")
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
