"""Tree fan-out speed: what the root client pays per host, direct and through gateways.

Brings up its own sandbox of 1,024 target nodes plus 32 gateway nodes (state in a
temporary folder, torn down at the end, also on error or SIGTERM) and runs ``hostname``
on 8, 16, ..., 1,024 targets with every tool connecting anew (cold against cold):

- fabexec direct (``PsshExecInfo``, connection cache emptied before each call);
- fabexec through ``isqrt(N)`` gateways (``PsshExecInfo(gateways=...)``, 32 at 1,024),
  when this fabexec has `fabexec.tree`, else "not available";
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

Each figure is the median of the rounds (3 up to 128 hosts, 1 above), tools rotated
each round. Prints a table, draws ``bench/tree.png`` (matplotlib, the ``bench``
extra), never asserts: PASS/FAIL says where the target stands. About 15 minutes;
``python bench/tree.py`` or ``inv bench -n tree``. Needs about 3 GiB of memory; it
skips a call (and says so) when fewer than 8 GiB would stay free.
"""

from __future__ import annotations

import gc
import math
import os
import resource
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import ssh as ssh_bench  # bench/ssh.py, beside this file
from fabric import Config, Connection, ThreadingGroup
from paramiko import SSHConfig

from fabexec import Exec, PsshExecInfo, connections, sandbox

try:
    from fabexec import tree as _tree  # noqa: F401  (only whether it exists)
    HAVE_TREE = True
except ImportError:
    HAVE_TREE = False

SIZES = (8, 16, 32, 64, 128, 256, 512, 1024)
TARGETS = max(SIZES)
GATEWAY_NODES = math.isqrt(TARGETS)
PROTOCOL_TARGETS = 10_000
PROTOCOL_GATEWAYS = math.isqrt(PROTOCOL_TARGETS)
ROUNDS_SMALL, ROUNDS_BIG, SMALL = 3, 1, 128
#: Processes of ``ssh`` running at once for OpenSSH (fabexec's default max_parallel).
OPENSSH_PARALLEL = 64
COMMAND_TIMEOUT = 600.0
#: Seconds that the nodes' sessions may take to end after a call.
SETTLE_TIMEOUT = 20.0
#: Memory that must stay free on this shared machine: a call that could take it below
#: this (about 6 MiB per host in flight, client and sshd) is skipped.
MEMORY_FLOOR = 8 << 30
MEMORY_PER_HOST = 6 << 20
ROOT_MS_PER_TARGET_MAX = 0.3  # issue "Ten thousand hosts", at 1,024 targets, 32 gateways
PNG = Path(__file__).with_name("tree.png")

DIRECT = "fabexec direct"
TREE = "fabexec via gateways"
FABRIC = "Fabric ThreadingGroup"
PSSH = "parallel-ssh"
OPENSSH = "OpenSSH, ssh per host"
TOOLS = (DIRECT, TREE, FABRIC, PSSH, OPENSSH)


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

    def settle(self) -> None:
        """Return once every session of every group has ended (bounded)."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while any(len(self.procs(g)) > n for g, n in self.baseline.items()):
            if time.monotonic() > deadline:
                left = [_cmdline(pid) for g in self.baseline for pid in self.procs(g)]
                raise ssh_bench.BenchError(f"sessions still running after {SETTLE_TIMEOUT} s: "
                                           f"{left}")
            time.sleep(0.05)

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
    finally:
        case.close()
    if not groups:
        return Sample(wall, cpu, None, None)
    try:
        groups.settle()
    except ssh_bench.BenchError as e:
        raise ssh_bench.BenchError(f"{case.tool} on {case.hosts} hosts: {e}") from None
    return Sample(wall, cpu, groups.seconds("gateways") - before["gateways"],
                  groups.seconds("targets") - before["targets"])


# --- the tools -----------------------------------------------------------------------


def info(cluster: sandbox.SandboxCluster, hosts: Sequence[str], **kw: Any) -> PsshExecInfo:
    return PsshExecInfo(hosts=list(hosts), ssh_config=str(cluster.ssh_config),
                        hide_output=True, timeout=COMMAND_TIMEOUT, **kw)


def fabric_group(cluster: sandbox.SandboxCluster, hosts: Sequence[str]) -> ThreadingGroup:
    """Each connection given its address, port, user and key: no ssh_config, whose
    look-up in Fabric walks every block (1,056 here) for every host."""
    cfg = Config(ssh_config=SSHConfig())
    kwargs = {"key_filename": str(cluster.key), "look_for_keys": False, "allow_agent": False,
              # a thousand handshakes at once on two cores: paramiko's 15 s is too short
              "banner_timeout": COMMAND_TIMEOUT, "auth_timeout": COMMAND_TIMEOUT}
    return ThreadingGroup.from_connections([
        Connection(cluster.addresses[h][0], port=cluster.addresses[h][1], user=cluster.user,
                   config=cfg, connect_kwargs=kwargs) for h in hosts])


def pssh_close(client: ssh_bench.Pssh) -> None:
    """Its sessions end now, not when collected (a private attribute of parallel-ssh, as
    bench/ssh.py reads it): the sshd side is read once they have."""
    if client.client is not None:
        for host_client in getattr(client.client, "_host_clients", {}).values():
            host_client._disconnect()
    client.close()


def openssh(cluster: sandbox.SandboxCluster, hosts: Sequence[str]) -> Dict[str, int]:
    """``ssh`` per host, ``OPENSSH_PARALLEL`` at once, options on its command line (no
    ssh_config to parse in each process); output to /dev/null, as hide_output."""
    base = ["ssh", "-F", "none", "-i", str(cluster.key), "-l", cluster.user,
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={cluster.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
            "-o", "KexAlgorithms=curve25519-sha256"]
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


def cases(cluster: sandbox.SandboxCluster, n: int, gateways: Sequence[str]) -> List[Case]:
    hosts = [h for h in cluster.hosts if h not in gateways][:n]
    check = ssh_bench.check_exec(hosts)
    direct = info(cluster, hosts)
    client = ssh_bench.Pssh(cluster, hosts)
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
             ssh_bench.check_codes(PSSH), lambda: pssh_close(client), in_flight=100),
        Case(OPENSSH, n, lambda: openssh(cluster, hosts), ssh_bench.check_codes(OPENSSH),
             in_flight=OPENSSH_PARALLEL),
    ]
    if HAVE_TREE:
        via = info(cluster, hosts, gateways=list(gateways[:max(1, math.isqrt(n))]))
        found.insert(1, Case(TREE, n, lambda: Exec("hostname", via), check,
                             connections.close_connections))
    return found


# --- the run --------------------------------------------------------------------------


def run_curves(cluster: sandbox.SandboxCluster, gateways: Sequence[str],
               groups: Optional[CpuGroups]) -> Dict[int, Dict[str, Sample]]:
    results: Dict[int, Dict[str, Sample]] = {}
    for n in SIZES:
        found = cases(cluster, n, gateways)
        got: Dict[str, List[Sample]] = {c.tool: [] for c in found}
        for r in range(ROUNDS_SMALL if n <= SMALL else ROUNDS_BIG):
            for case in found[r % len(found):] + found[:r % len(found)]:
                sample = measure(case, groups)
                if sample:
                    got[case.tool].append(sample)
        results[n] = {tool: median(s) for tool, s in got.items() if s}
        print(f"  {n} hosts done (load average {os.getloadavg()[0]:.1f})", flush=True)
    return results


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
    at = results.get(TARGETS, {})
    if TREE not in at or DIRECT not in at:
        print(f"\nTarget (root CPU per target at {TARGETS} through {GATEWAY_NODES} gateways "
              f"<= {ROOT_MS_PER_TARGET_MAX} ms): not measured")
        return
    ours, direct = (1000 * at[t].root / TARGETS for t in (TREE, DIRECT))
    ok = "PASS" if ours <= ROOT_MS_PER_TARGET_MAX else "FAIL"
    print(f"\nTarget: root CPU per target at {TARGETS} targets through {GATEWAY_NODES} "
          f"gateways {ours:.2f} ms (direct {direct:.2f} ms, {direct / ours:.0f}x less), "
          f"target <= {ROOT_MS_PER_TARGET_MAX} ms: {ok}")


def main() -> int:
    folder = Path(tempfile.mkdtemp(prefix="fabexec-bench-tree-"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` tears down
    started = time.monotonic()
    groups = None
    try:
        cluster = sandbox.up(TARGETS + GATEWAY_NODES, state_dir=folder / "sandbox", timeout=300)
        gateways = cluster.hosts[TARGETS:]
        groups = cpu_groups(cluster, gateways)
        print(f"fabexec tree benchmark: {TARGETS} target and {GATEWAY_NODES} gateway sshd "
              f"nodes (sandbox up in {time.monotonic() - started:.0f} s), {os.cpu_count()} "
              f"CPUs shared with them, load average {os.getloadavg()[0]:.1f}")
        ssh_bench.check_exec(cluster.hosts[:8])(Exec("hostname", info(cluster,
                                                                        cluster.hosts[:8])))
        connections.close_connections()
        results = run_curves(cluster, gateways, groups)
        print_curves(results)
        protocol = None
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
