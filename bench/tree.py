"""Tree fan-out speed: what the root client pays per host, direct and through gateways.

Brings up its own sandbox of 1,024 target nodes plus twice 32 gateway nodes (state in a
temporary folder, torn down at the end, also on error or SIGTERM) and runs ``hostname``
on 8, 16, ..., 1,024 targets with every tool connecting anew (cold against cold):

- fabexec direct (``PsshExecInfo``, connection cache emptied before each call);
- fabexec through ``isqrt(N)`` gateways (``PsshExecInfo(gateways=...)``, 32 at 1,024),
  when this fabexec has `fabexec.tree`, else "not available": once through gateways
  that have only Python (fabexec pushed to each, every call), once through gateways
  that hold this fabexec (`install_fabexec`, as a site that installed it);
- Fabric ``ThreadingGroup`` (a new group each time, one thread per host, unbounded);
- parallel-ssh's ``ParallelSSHClient`` (libssh2, a new client each time);
- OpenSSH, one ``ssh`` process per host (64 at once, as fabexec's ``max_parallel``).

CPU is reported in three parts, each measured its own way:

- root: this process, ``time.process_time()`` (every thread), plus its reaped
  children, ``getrusage(RUSAGE_CHILDREN)`` (the ``ssh`` processes);
- gateways: everything the gateway nodes ran (their sshd sessions for the root's
  connections, the probe and the ``fabexec.gateway`` process);
- sshd: everything the target nodes ran (sshd sessions and the commands).

The last two are read from cpuacct control groups (cgroup v1 ``cpuacct.usage`` or v2
``cpu.stat``) that the nodes' daemons are moved into at start: a session inherits its
daemon's group, and a group keeps the CPU of processes that ended, which ``/proc``
forgets. Each call is followed by a wait until the nodes' sessions are gone, so that
the groups hold the whole of it. Without a writable cgroup those two read "n/a".

Last, the protocol-only mode (gateways answer for their targets without connecting,
see `fabexec.gateway`) gives the root's own cost per target at 10,000 targets.

Each figure is the median of the rounds (3 up to 128 hosts and at 1,024, the target's
size; 1 between), tools rotated each round. Prints a table, draws ``bench/tree.png``
(matplotlib, the ``bench`` extra), never asserts: PASS/FAIL says where the target
stands. About 20 minutes;
``python bench/tree.py`` or ``inv bench -n tree``. Needs about 3 GiB of memory; it
skips a call (and says so) when fewer than 8 GiB would stay free; a call that fails
is reported and left out.
"""

from __future__ import annotations

import gc
import io
import math
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import ssh as ssh_bench  # bench/ssh.py, beside this file
from fabric import Config, Connection, ThreadingGroup
from paramiko import SSHConfig
from pssh.clients import ParallelSSHClient

from fabexec import Exec, PsshExecInfo, connections, sandbox

try:
    from fabexec import bundle
    from fabexec.tree import ANSWER_ONLY_VAR
    HAVE_TREE = True
except ImportError:  # a fabexec without gateways: their figures say "not available"
    ANSWER_ONLY_VAR = ""
    HAVE_TREE = False

SIZES = (8, 16, 32, 64, 128, 256, 512, 1024)
TARGETS = max(SIZES)
GATEWAY_NODES = math.isqrt(TARGETS)
PROTOCOL_TARGETS = 10_000
PROTOCOL_GATEWAYS = math.isqrt(PROTOCOL_TARGETS)
ROUNDS_SMALL, ROUNDS_BIG, SMALL = 3, 1, 128
#: Processes of ``ssh`` running at once for OpenSSH (fabexec's default max_parallel).
OPENSSH_PARALLEL = 64
COMMAND_TIMEOUT = 300.0
#: Seconds a connection may take, for every tool: at a load of 30 to 300 (other work on
#: this machine, and a thousand handshakes at once) 10 s failed parallel-ssh at 64
#: hosts; a few of 1,024 handshakes at once still end in EOFError, with 60 s or 300 s
#: (see the README).
CONNECT_TIMEOUT = 300
#: Seconds that the nodes' sessions may take to end after a call.
SETTLE_TIMEOUT = 30.0
#: Memory that must stay free on this shared machine: a call that could take it below
#: this (about 6 MiB per host in flight, client and sshd) is skipped.
MEMORY_FLOOR = 8 << 30
MEMORY_PER_HOST = 6 << 20
ROOT_MS_PER_TARGET_MAX = 0.3  # issue "Ten thousand hosts", at 1,024 targets, 32 gateways
PNG = Path(__file__).with_name("tree.png")
#: Where the installed gateways find fabexec: a folder on the login Python's path, bound
#: over in those nodes' own mount namespaces only (Debian's packages, which fabexec
#: does not need, are hidden there; nothing changes on this machine).
GATEWAY_SITE = "/usr/lib/python3/dist-packages"

DIRECT = "fabexec direct"
TREE = "fabexec via gateways, pushed"
INSTALLED = "fabexec via gateways, installed"
FABRIC = "Fabric ThreadingGroup"
PSSH = "parallel-ssh"
OPENSSH = "OpenSSH, ssh per host"
TOOLS = (DIRECT, TREE, INSTALLED, FABRIC, PSSH, OPENSSH)


# --- CPU accounting ----------------------------------------------------------------


class CpuGroups:
    """cpuacct control groups the nodes' daemons are moved into (see the docstring)."""

    def __init__(self, name: str) -> None:
        v1 = Path("/sys/fs/cgroup/cpuacct")
        self.v2 = not (v1 / "cpuacct.usage").exists()
        self.top = (Path("/sys/fs/cgroup") if self.v2 else v1) / name
        self.top.mkdir()
        self.baseline: Dict[str, int] = {}

    def add(self, group: str, pids: Sequence[int]) -> None:
        folder = self.top / group
        folder.mkdir()
        for pid in pids:
            (folder / "cgroup.procs").write_text(f"{pid}\n")
        self.baseline[group] = len(self.procs(group))

    def procs(self, group: str) -> List[str]:
        return (self.top / group / "cgroup.procs").read_text().split()

    def seconds(self, group: str) -> float:
        folder = self.top / group
        if not self.v2:
            return int((folder / "cpuacct.usage").read_text()) / 1e9
        stat = dict(line.split() for line in (folder / "cpu.stat").read_text().splitlines())
        return int(stat["usage_usec"]) / 1e6

    def settle(self) -> List[str]:
        """Wait until every session of every group has ended; what is left after
        ``SETTLE_TIMEOUT`` s (a session the client left half open, which sshd ends after
        its LoginGraceTime), as command lines."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while any(len(self.procs(g)) > n for g, n in self.baseline.items()):
            if time.monotonic() > deadline:
                return [_cmdline(pid) for g in self.baseline for pid in self.procs(g)
                        if not _cmdline(pid).startswith("sshd: /")]  # not a node's daemon
            time.sleep(0.05)
        return []

    def remove(self) -> None:
        """The groups go once the daemons are stopped (a few tries: exits are not instant)."""
        for _ in range(100):
            for folder in [*(self.top / g for g in self.baseline), self.top]:
                try:
                    folder.rmdir()
                except FileNotFoundError:
                    pass
                except OSError:
                    break
            if not self.top.exists():
                return
            time.sleep(0.1)
        print(f"note: could not remove {self.top}")


def cpu_groups(cluster: sandbox.SandboxCluster, gateways: Sequence[str]
               ) -> Optional[CpuGroups]:
    targets = [h for h in cluster.hosts if h not in gateways]
    try:
        groups = CpuGroups(f"fabexec-bench-tree-{os.getpid()}")
    except OSError as e:
        print(f"note: no cgroup to account the nodes' CPU ({e}): gateways and sshd read n/a")
        return None
    try:
        groups.add("targets", [cluster.pid(h) or 0 for h in targets])
        groups.add("gateways", [cluster.pid(h) or 0 for h in gateways])
    except OSError as e:
        print(f"note: cannot move the nodes into {groups.top} ({e}): gateways and sshd read n/a")
        groups.remove()
        return None
    return groups


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:80]
    except OSError:
        return f"{pid} (gone)"


def root_cpu() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def memory_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


# --- one call ----------------------------------------------------------------------


@dataclass
class Sample:
    wall: float
    root: float
    gateways: Optional[float]
    sshd: Optional[float]


@dataclass
class Case:
    """One tool on N hosts; only ``run`` counts for the root, ``close`` is untimed."""

    tool: str
    hosts: int
    run: Callable[[], Any]
    check: Callable[[Any], None]
    close: Callable[[], None] = lambda: None
    in_flight: int = 64


def measure(case: Case, groups: Optional[CpuGroups]) -> Optional[Sample]:
    """One call: its figures, or None (and why, printed) when it was skipped or failed."""
    if memory_available() - case.in_flight * MEMORY_PER_HOST < MEMORY_FLOOR:
        print(f"  skipped {case.tool} on {case.hosts}: less than "
              f"{MEMORY_FLOOR >> 30} GiB would stay free")
        return None
    gc.collect()
    if groups:
        groups.settle()
    before = {g: groups.seconds(g) for g in ("gateways", "targets")} if groups else {}
    cpu0, wall0 = root_cpu(), time.perf_counter()
    try:
        result = case.run()
        wall, cpu = time.perf_counter() - wall0, root_cpu() - cpu0
        case.check(result)
    except Exception as e:  # a tool that did not do the job: its figures mean nothing
        print(f"  {case.tool} on {case.hosts} hosts failed: {type(e).__name__}: "
              f"{str(e)[:300]}")
        return None
    finally:
        case.close()
    if not groups:
        return Sample(wall, cpu, None, None)
    left = groups.settle()
    if left:
        print(f"  note: {case.tool} on {case.hosts} hosts left {len(left)} sessions after "
              f"{SETTLE_TIMEOUT:.0f} s ({', '.join(sorted(set(left)))[:200]}): counted as "
              "far as they went")
    return Sample(wall, cpu, groups.seconds("gateways") - before["gateways"],
                  groups.seconds("targets") - before["targets"])


# --- the tools -----------------------------------------------------------------------


def info(cluster: sandbox.SandboxCluster, hosts: Sequence[str], **kw: Any) -> PsshExecInfo:
    return PsshExecInfo(hosts=list(hosts), ssh_config=str(cluster.ssh_config),
                        hide_output=True, timeout=COMMAND_TIMEOUT,
                        connect_timeout=CONNECT_TIMEOUT, **kw)


def fabric_group(cluster: sandbox.SandboxCluster, hosts: Sequence[str]) -> ThreadingGroup:
    """Each connection given its address, port, user and key: no ssh_config, whose
    look-up in Fabric walks every block (1,056 here) for every host."""
    cfg = Config(ssh_config=SSHConfig())
    kwargs = {"key_filename": str(cluster.key), "look_for_keys": False, "allow_agent": False,
              "timeout": CONNECT_TIMEOUT, "banner_timeout": CONNECT_TIMEOUT,
              "auth_timeout": CONNECT_TIMEOUT}
    return ThreadingGroup.from_connections([
        Connection(cluster.addresses[h][0], port=cluster.addresses[h][1], user=cluster.user,
                   config=cfg, connect_kwargs=kwargs) for h in hosts])


class Pssh(ssh_bench.Pssh):
    """bench/ssh's parallel-ssh client, with the timeouts of a loaded machine (its
    10 s fail at 64 hosts and a load of 30), whose sessions end when it is closed."""

    def connect(self) -> ParallelSSHClient:
        self.client = ParallelSSHClient(self.ips, host_config=self.configs, pkey=self.key,
                                        num_retries=1, timeout=CONNECT_TIMEOUT)
        return self.client

    def close(self) -> None:
        """Each session ended and its socket closed now, not when collected (a private
        attribute of parallel-ssh, as bench/ssh.py reads it): the sshd side is read once
        they have ended."""
        for host_client in getattr(self.client, "_host_clients", {}).values():
            sock, host_client.sock = host_client.sock, None
            session, host_client.session = host_client.session, None
            if session is not None and sock is not None and not sock.closed:
                try:
                    session.disconnect()
                except Exception:  # already gone: the socket closes all the same
                    pass
                sock.close()
        super().close()


def openssh(cluster: sandbox.SandboxCluster, hosts: Sequence[str]) -> Dict[str, int]:
    """``ssh`` per host, ``OPENSSH_PARALLEL`` at once, options on its command line (no
    ssh_config to parse in each process); output to /dev/null, as hide_output."""
    base = ["ssh", "-F", "none", "-i", str(cluster.key), "-l", cluster.user,
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={cluster.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
            "-o", "KexAlgorithms=curve25519-sha256", "-o", f"ConnectTimeout={CONNECT_TIMEOUT}"]
    null = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]
    waiting, running, codes = list(hosts), {}, {}
    deadline = time.monotonic() + COMMAND_TIMEOUT
    while waiting or running:
        while waiting and len(running) < OPENSSH_PARALLEL:
            host = waiting.pop(0)
            ip, port = cluster.addresses[host]
            argv = [*base, "-p", str(port), ip, "hostname"]
            running[os.posix_spawnp("ssh", argv, os.environ, file_actions=null)] = host
        if time.monotonic() > deadline:
            for pid in running:
                os.kill(pid, signal.SIGKILL)
        pid, status = os.waitpid(-1, 0)
        if pid in running:
            codes[running.pop(pid)] = os.waitstatus_to_exitcode(status)
    return codes


def install_fabexec(cluster: sandbox.SandboxCluster, gateways: Sequence[str]) -> bool:
    """Make ``gateways`` hold this fabexec (the bundle the client would push, unpacked
    once), so that the client finds it there and pushes nothing; False where nodes have
    no mount namespace of their own."""
    if not cluster.own_folders:
        print(f"  {INSTALLED}: not available (nodes without their own mount namespace)")
        return False
    site = cluster.state_dir / "site"
    data = bundle.bundle(sys.implementation.cache_tag)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(site, filter="data")
    for top, _, names in os.walk(site):
        os.chmod(top, 0o755)
        for name in names:
            os.chmod(os.path.join(top, name), 0o644)
    for host in gateways:
        subprocess.run(["nsenter", "--target", str(cluster.pid(host)), "--mount", "--",
                        "mount", "--bind", str(site), GATEWAY_SITE], check=True, timeout=30)
    return True


def cases(cluster: sandbox.SandboxCluster, n: int, gateways: Sequence[str],
          installed: Sequence[str]) -> List[Case]:
    hosts = cluster.hosts[:n]
    check = ssh_bench.check_exec(hosts)
    direct = info(cluster, hosts)
    client = Pssh(cluster, hosts)
    groups: List[ThreadingGroup] = []

    def fabric_run() -> Any:
        groups.append(fabric_group(cluster, hosts))
        return groups[-1].run("hostname", hide=True, timeout=COMMAND_TIMEOUT)

    def fabric_close() -> None:
        while groups:
            groups.pop().close()

    found = [
        Case(DIRECT, n, lambda: Exec("hostname", direct), check, connections.close_connections),
        Case(FABRIC, n, fabric_run, ssh_bench.check_group, fabric_close, in_flight=n),
        Case(PSSH, n, lambda: {h: c for h, (c, _) in client.run("hostname", True).items()},
             ssh_bench.check_codes(PSSH), client.close, in_flight=100),
        Case(OPENSSH, n, lambda: openssh(cluster, hosts), ssh_bench.check_codes(OPENSSH),
             in_flight=OPENSSH_PARALLEL),
    ]
    for tool, nodes in ((INSTALLED, installed), (TREE, gateways)):
        if HAVE_TREE and nodes:
            via = info(cluster, hosts, gateways=list(nodes[:max(1, math.isqrt(n))]))
            found.insert(1, Case(tool, n, lambda via=via: Exec("hostname", via), check,
                                 connections.close_connections))
    return found


# --- the run --------------------------------------------------------------------------


def run_curves(cluster: sandbox.SandboxCluster, gateways: Sequence[str],
               installed: Sequence[str], groups: Optional[CpuGroups]
               ) -> Dict[int, Dict[str, Sample]]:
    results: Dict[int, Dict[str, Sample]] = {}
    for n in SIZES:
        found = cases(cluster, n, gateways, installed)
        got: Dict[str, List[Sample]] = {c.tool: [] for c in found}
        for r in range(ROUNDS_SMALL if n <= SMALL or n == TARGETS else ROUNDS_BIG):
            for case in found[r % len(found):] + found[:r % len(found)]:
                sample = measure(case, groups)
                if sample:
                    got[case.tool].append(sample)
        results[n] = {tool: median(s) for tool, s in got.items() if s}
        print(f"  {n} hosts done (load average {os.getloadavg()[0]:.1f})", flush=True)
        if n == TARGETS:  # the target's spread, round by round
            for tool, samples in got.items():
                print(f"    {tool}, root ms/host by round: "
                      f"{', '.join(per_host_ms(s.root, n) for s in samples) or 'none'}")
    return results


def run_protocol_only(cluster: sandbox.SandboxCluster, gateways: Sequence[str],
                      groups: Optional[CpuGroups]) -> Dict[int, Sample]:
    """``PROTOCOL_TARGETS`` made-up targets, and one per gateway, through the gateways
    answering for them (`fabexec.gateway.ANSWER_ONLY`): the difference is the root's
    cost per target alone, without the per-gateway cost (connection, fabexec pushed)."""
    got: Dict[int, List[Sample]] = {n: [] for n in (len(gateways), PROTOCOL_TARGETS)}
    found = []
    for n in got:
        ghosts = [f"ghost{i:05d}" for i in range(n)]
        via = info(cluster, ghosts, gateways=list(gateways))
        found.append(Case(TREE, n, lambda via=via: Exec("hostname", via),
                          ssh_bench.check_exec(ghosts), connections.close_connections))
    os.environ[ANSWER_ONLY_VAR] = "1"
    try:
        for r in range(ROUNDS_SMALL):
            for case in found[r % 2:] + found[:r % 2]:
                sample = measure(case, groups)
                if sample:
                    got[case.hosts].append(sample)
    finally:
        del os.environ[ANSWER_ONLY_VAR]
    return {n: median(s) for n, s in got.items() if s}


def print_protocol(results: Dict[int, Sample], gateways: int, installed: bool
                   ) -> Optional[float]:
    """The figures, and the root's CPU per target at ``PROTOCOL_TARGETS`` (or None)."""
    if PROTOCOL_TARGETS not in results or gateways not in results:
        print("\nProtocol-only mode: not measured")
        return None
    many, few = results[PROTOCOL_TARGETS], results[gateways]
    marginal = (many.root - few.root) / (PROTOCOL_TARGETS - gateways)
    print(f"\nProtocol-only mode: gateways answer for made-up targets without connecting "
          f"({gateways} gateways, fabexec {'installed on' if installed else 'pushed to'} each)")
    ssh_bench.table(["targets", "wall s", "root CPU s", "root ms/target", "gateways CPU s"],
                    [[str(n), f"{s.wall:.2f}", f"{s.root:.2f}", per_host_ms(s.root, n),
                      "n/a" if s.gateways is None else f"{s.gateways:.2f}"]
                     for n, s in results.items()], left=1)
    print(f"  root CPU per target beyond the gateways' own cost: {1000 * marginal:.3f} ms "
          f"(({many.root:.2f} s - {few.root:.2f} s) / {PROTOCOL_TARGETS - gateways}); "
          f"per gateway: {1000 * few.root / gateways:.0f} ms")
    return many.root


def median(samples: List[Sample]) -> Sample:
    def med(values: List[Optional[float]]) -> Optional[float]:
        return None if None in values else statistics.median(values)  # type: ignore
    return Sample(statistics.median(s.wall for s in samples),
                  statistics.median(s.root for s in samples),
                  med([s.gateways for s in samples]), med([s.sshd for s in samples]))


def per_host_ms(seconds: Optional[float], n: int) -> str:
    return "n/a" if seconds is None else f"{1000 * seconds / n:.2f}"


def print_curves(results: Dict[int, Dict[str, Sample]]) -> None:
    print("\n`hostname` on N hosts, every tool connecting anew (cold against cold); CPU "
          "per host in ms\n  root: this process + its reaped children; gateways: the "
          "gateway nodes; sshd: the target nodes")
    rows = [[str(n), tool, f"{s.wall:.2f}", per_host_ms(s.root, n),
             per_host_ms(s.gateways, n), per_host_ms(s.sshd, n)]
            for n, by_tool in results.items() for tool, s in by_tool.items()]
    ssh_bench.table(["hosts", "tool", "wall s", "root ms/host", "gateways ms/host",
                     "sshd ms/host"], rows)
    if not HAVE_TREE:
        print(f"  {TREE}: not available (this fabexec has no fabexec.tree)")


def draw(results: Dict[int, Dict[str, Sample]], protocol: Optional[float]) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        print("note: no matplotlib (pip install -e '.[bench]'): no picture")
        return
    figure, axes = pyplot.subplots(figsize=(7, 4.2), dpi=100)
    for tool in TOOLS:
        points = [(n, 1000 * r[tool].root / n) for n, r in results.items() if tool in r]
        if points:
            axes.plot(*zip(*points), marker="o", label=tool)
    if protocol is not None:
        axes.plot([PROTOCOL_TARGETS], [1000 * protocol / PROTOCOL_TARGETS], marker="*",
                  markersize=12, linestyle="", label="gateways answering, no connection")
    axes.axhline(ROOT_MS_PER_TARGET_MAX, color="grey", linestyle=":", label="target 0.3 ms")
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xlabel("hosts")
    axes.set_ylabel("root client CPU per host (ms)")
    axes.set_title(f"`hostname`, cold connections, {os.cpu_count()} cores, "
                   f"load {os.getloadavg()[0]:.1f}")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(PNG)
    print(f"\npicture: {PNG}")


def verdict(results: Dict[int, Dict[str, Sample]]) -> None:
    """The issue's target, for gateways that hold fabexec and for those it is pushed to."""
    at = results.get(TARGETS, {})
    print(f"\nTarget: root CPU per target at {TARGETS} targets through {GATEWAY_NODES} "
          f"gateways <= {ROOT_MS_PER_TARGET_MAX} ms (direct, measured here: "
          f"{per_host_ms(at[DIRECT].root if DIRECT in at else None, TARGETS)} ms)")
    for tool in (INSTALLED, TREE):
        if tool not in at:
            print(f"  {tool}: not measured")
            continue
        ours = 1000 * at[tool].root / TARGETS
        ok = "PASS" if ours <= ROOT_MS_PER_TARGET_MAX else "FAIL"
        print(f"  {tool}: {ours:.2f} ms  {ok}")


def main() -> int:
    folder = Path(tempfile.mkdtemp(prefix="fabexec-bench-tree-"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` tears down
    started = time.monotonic()
    groups = None
    try:
        cluster = sandbox.up(TARGETS + 2 * GATEWAY_NODES, state_dir=folder / "sandbox",
                             timeout=300)
        gateways = cluster.hosts[TARGETS:TARGETS + GATEWAY_NODES]
        installed = cluster.hosts[TARGETS + GATEWAY_NODES:]
        groups = cpu_groups(cluster, cluster.hosts[TARGETS:])
        print(f"fabexec tree benchmark: {TARGETS} target and 2 x {GATEWAY_NODES} gateway sshd "
              f"nodes (sandbox up in {time.monotonic() - started:.0f} s), {os.cpu_count()} "
              f"CPUs shared with them, load average {os.getloadavg()[0]:.1f}")
        if not (HAVE_TREE and install_fabexec(cluster, installed)):
            installed = []
        ssh_bench.check_exec(cluster.hosts[:8])(Exec("hostname", info(cluster,
                                                                        cluster.hosts[:8])))
        connections.close_connections()
        results = run_curves(cluster, gateways, installed, groups)
        print_curves(results)
        protocol = None
        if HAVE_TREE:
            answering = installed or gateways
            protocol = print_protocol(run_protocol_only(cluster, answering, groups),
                                      len(answering), answering is installed)
        verdict(results)
        draw(results, protocol)
        print(f"\nload average {os.getloadavg()[0]:.1f} at the end; "
              f"total {time.monotonic() - started:.0f} s")
    finally:
        connections.close_connections()
        sandbox.down(folder / "sandbox")
        if groups:
            groups.remove()
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
