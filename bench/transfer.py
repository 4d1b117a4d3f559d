"""Copy speed and memory: fabexec's Put and Get against OpenSSH's scp, in one run.

Brings up its own 16-node sandbox (`fabexec.sandbox`, state in a temporary folder,
stopped at the end, also on error or SIGTERM) and a second sshd of node1 without the
SFTP subsystem (stopped by its PID), then measures, for the speed sections of the
copy issues (17 item 7, 14 "Speed"):

1. one host: 256 MiB and 1 GiB to it (``Put``) and from it (``Get``), against one
   ``scp`` (OpenSSH 9 copies over SFTP too);
2. without SFTP: 256 MiB to and from a host whose sshd has no SFTP subsystem,
   where fabexec streams through the shell, against ``scp -O`` (the old scp
   protocol, also over an exec channel); SFTP's figures from section 1 beside;
3. 16 hosts at once: 256 MiB to every host and from every host, against 16 ``scp``
   processes at once.

Every fabexec copy runs in a child process of its own, so that its peak memory
(``VmHWM``, read by the child at its end) is the copy's: Python and fabexec
themselves take about 45 MB of it; scp's (with its ssh) is sampled every 10 ms.
Its time is that of the call (connecting included, imports not); an ``scp``'s,
that of its process. CPU: the client's user and system time on this machine per
GiB moved (fabexec: the call's, in its process; scp: its processes', each with its
``ssh``), which a loaded machine disturbs far less than wall time. Tools are
interleaved, their order rotated each round, and each figure is the median of
`ROUNDS` rounds.
Timings are printed, never asserted: PASS/FAIL says where a target stands.
About 15 minutes on a loaded 2-core machine; ``python bench/transfer.py
[one] [shell] [fanout]`` (all three by default) or ``inv bench -n transfer``.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple

from fabexec import sandbox

ROOT = Path(__file__).resolve().parent.parent
MIB = 1 << 20
NODES = 16
ROUNDS = 5
#: Seconds any one copy may take before the benchmark gives up.
COPY_TIMEOUT = 600
# Targets: issue 17 item 7 (Get of 1 GB) and issue 14's speed section.
RATIO_MAX = 1.5  # fabexec wall / scp wall
RSS_MAX_MB = 128  # fabexec's peak RSS copying 1 GiB, every run
FABEXEC, SCP = "fabexec", "scp"

CHILD = """
import json, sys, time
from fabexec import Get, Put, PsshExecInfo, SshExecInfo
kind, src, dst, config, hosts = sys.argv[1:6]
hosts = hosts.split(",")
info = (SshExecInfo if len(hosts) == 1 else PsshExecInfo)(
    hosts=hosts, ssh_config=config, hide_output=True, max_parallel=64)
began, cpu = time.perf_counter(), time.process_time()
done = (Put if kind == "put" else Get)(src, dst, info)
seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
with open("/proc/self/status") as status:  # this process's own peak, not its parent's
    peak_kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps({"seconds": seconds, "cpu": cpu, "exit_code": done.exit_code,
                  "peak_kib": peak_kib,
                  "errors": {host: str(error) for host, error in done.errors.items()}}))
"""


class BenchError(RuntimeError):
    """A copy failed: its time means nothing."""


@dataclass
class Run:
    seconds: float
    rss_mb: float  # peak resident memory of the copying process(es)
    cpu: float  # CPU seconds (user and system) of the copying process(es) on this machine


@dataclass
class Case:
    """One tool doing one copy; ``run`` returns its `Run`, ``after`` tidies untimed."""

    tool: str
    run: Callable[[], Run]
    after: Callable[[], None] = lambda: None


@dataclass
class Result:
    runs: Dict[str, List[Run]] = field(default_factory=dict)

    def median(self, tool: str) -> float:
        return statistics.median(r.seconds for r in self.runs[tool])

    def peak_mb(self, tool: str) -> float:
        return max(r.rss_mb for r in self.runs[tool])

    def median_cpu(self, tool: str) -> float:
        return statistics.median(r.cpu for r in self.runs[tool])


# --------------------------------------------------------------------------- processes

def peak_kib(pid: int) -> int:
    """The peak resident memory (VmHWM) of ``pid`` and its children now, in KiB.

    Not ``wait4``'s ``ru_maxrss``: it counts the parent's memory shared at fork.
    """
    total = 0
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as found:
            children = [int(child) for child in found.read().split()]
        for one in [pid, *children]:
            with open(f"/proc/{one}/status") as status:
                total += next(int(line.split()[1]) for line in status
                              if line.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError):
        pass  # ended meanwhile
    return total


def wait_for(procs: Sequence[subprocess.Popen]) -> Tuple[List[int], float]:
    """The exit statuses of ``procs`` and the sum of their peak memories (MB, sampled
    every 10 ms); killed after `COPY_TIMEOUT`."""
    deadline = time.monotonic() + COPY_TIMEOUT
    peaks = [0] * len(procs)
    while any(proc.poll() is None for proc in procs):
        peaks = [max(peak, peak_kib(proc.pid)) for peak, proc in zip(peaks, procs)]
        if time.monotonic() > deadline:
            for proc in procs:
                proc.kill()
        time.sleep(0.01)
    return [proc.returncode for proc in procs], sum(peaks) / 1024


def child_copy(child: str, args: Sequence[str], code: Path, timeout: float,
               what: str) -> Dict[str, Any]:
    """A copy run by the script ``child`` (``python -c``) with ``code`` on its path, in a
    process of its own: the JSON it prints, once it said the copy worked."""
    proc = subprocess.run([sys.executable, "-c", child, *args],
                          env={**os.environ, "PYTHONPATH": str(code)}, cwd=str(code),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise BenchError(f"{what} exited {proc.returncode}: {proc.stderr[-500:]}")
    done = json.loads(proc.stdout)
    if done["exit_code"] != 0:
        raise BenchError(f"{what} failed: {done['errors']}")
    return done


def fabexec_copy(kind: str, src: str, dst: str, config: Path, hosts: Sequence[str]) -> Run:
    """A `Put` or `Get` in a process of its own; the call's time and the process's peak."""
    done = child_copy(CHILD, [kind, src, dst, str(config), ",".join(hosts)], ROOT,
                      COPY_TIMEOUT, f"fabexec {kind}")
    return Run(done["seconds"], done["peak_kib"] / 1024, done["cpu"])


def scp_copies(pairs: Sequence[Tuple[str, str]], config: Path, *options: str) -> Run:
    """One ``scp`` per (from, to) pair, all at once: the wall time of them all, the sum
    of their peaks and their CPU time (each with its ``ssh``)."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    procs = [subprocess.Popen(["scp", "-q", "-F", str(config), "-o", "BatchMode=yes",
                               *options, src, dst], stdin=subprocess.DEVNULL,
                              stderr=subprocess.PIPE) for src, dst in pairs]
    statuses, peak = wait_for(procs)
    seconds = time.perf_counter() - began
    now = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = now.ru_utime + now.ru_stime - used.ru_utime - used.ru_stime
    said = [proc.communicate()[1].decode().strip() for proc in procs]
    failed = [(pair, why) for pair, status, why in zip(pairs, statuses, said) if status != 0]
    if failed:
        raise BenchError(f"scp failed: {failed[:3]}")
    return Run(seconds, peak, cpu)


def interleave(title: str, cases: Sequence[Case], rounds: int = ROUNDS) -> Result:
    """Every case once per round, the order rotated each round."""
    result = Result({case.tool: [] for case in cases})
    for r in range(rounds):
        for case in cases[r % len(cases):] + cases[:r % len(cases)]:
            try:
                result.runs[case.tool].append(case.run())
            finally:
                case.after()
        print(f"  {title}: round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    return result


# --------------------------------------------------------------------------- the set-up

@dataclass
class Bench:
    cluster: sandbox.SandboxCluster
    folder: Path  # the sources, readable by the nodes' user
    remote: Path  # where the nodes' user writes
    local: Path  # where copies to this machine land
    config: Path  # the cluster's ssh_config plus ``nosftp``
    sources: Dict[int, Path] = field(default_factory=dict)

    def source(self, size: int) -> Path:
        """A file of ``size`` random bytes (made once; the nodes read it too)."""
        if size not in self.sources:
            path = self.folder / f"src-{size // MIB}M.bin"
            with open("/dev/urandom", "rb") as random, open(path, "wb") as out:
                for _ in range(size // MIB):
                    out.write(random.read(MIB))
            path.chmod(0o644)
            self.sources[size] = path
        return self.sources[size]

    def clear(self) -> None:
        """Remove what the last copies wrote (their pages are then never written back)."""
        for where in (self.remote, self.local):
            for entry in where.iterdir():
                if entry.is_dir():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()


def no_sftp_block(cluster: sandbox.SandboxCluster, address: Tuple[str, int], folder: Path
                  ) -> str:
    """An ssh_config block ``nosftp`` that reaches a second sshd of a node, without SFTP."""
    ip, port = address
    return (f"Host nosftp\n    HostName {ip}\n    Port {port}\n    User {cluster.user}\n"
            f"    IdentityFile {cluster.key}\n    IdentitiesOnly yes\n"
            f"    UserKnownHostsFile {folder / 'known_hosts'}\n"
            "    StrictHostKeyChecking no\n    KexAlgorithms curve25519-sha256\n\n")


def make_bench(cluster: sandbox.SandboxCluster, folder: Path, no_sftp_block: str) -> Bench:
    folder.chmod(0o755)  # the nodes' user reads the sources
    remote, local = folder / "remote", folder / "local"
    remote.mkdir()
    local.mkdir()
    if os.geteuid() == 0:
        shutil.chown(remote, cluster.user)
    config = folder / "ssh_config"
    config.write_text(no_sftp_block + cluster.ssh_config.read_text())
    return Bench(cluster, folder, remote, local, config)


# --------------------------------------------------------------------------- the sections

def one_host(bench: Bench, size: int, host: str, scp_options: Sequence[str] = ()
             ) -> Dict[str, Result]:
    """``size`` bytes to ``host`` and back from it, fabexec against one scp."""
    src = str(bench.source(size))
    put_to, get_to = f"{bench.remote}/put.bin", f"{bench.local}/get.bin"
    label = f"{size // MIB} MiB {host}"
    put = interleave(f"{label} put", [
        Case(FABEXEC, lambda: fabexec_copy("put", src, put_to, bench.config, [host]),
             bench.clear),
        Case(SCP, lambda: scp_copies([(src, f"{host}:{put_to}")], bench.config, *scp_options),
             bench.clear)])
    get = interleave(f"{label} get", [
        Case(FABEXEC, lambda: fabexec_copy("get", src, get_to, bench.config, [host]),
             bench.clear),
        Case(SCP, lambda: scp_copies([(f"{host}:{src}", get_to)], bench.config, *scp_options),
             bench.clear)])
    return {"put": put, "get": get}


def fan_out(bench: Bench, size: int) -> Dict[str, Result]:
    """``size`` bytes to every node and from every node, at once."""
    hosts = bench.cluster.hosts
    src = str(bench.source(size))
    put_to = f"{bench.remote}/put.bin"
    put = interleave(f"{len(hosts)} hosts put", [
        Case(FABEXEC, lambda: fabexec_copy("put", src, put_to, bench.config, hosts),
             bench.clear),
        # Each scp its own file, as each fabexec host writes its own temporary file.
        Case(SCP, lambda: scp_copies([(src, f"{h}:{bench.remote}/{h}.bin") for h in hosts],
                                     bench.config), bench.clear)])
    get = interleave(f"{len(hosts)} hosts get", [
        Case(FABEXEC, lambda: fabexec_copy("get", src, f"{bench.local}/", bench.config, hosts),
             bench.clear),
        Case(SCP, lambda: scp_copies([(f"{h}:{src}", f"{bench.local}/{h}.bin") for h in hosts],
                                     bench.config), bench.clear)])
    return {"put": put, "get": get}


# --------------------------------------------------------------------------- the report

def table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 2) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        cells = [str(c).ljust(w) if i < left else str(c).rjust(w)
                 for i, (c, w) in enumerate(zip(row, widths))]
        print("  " + "  ".join(cells).rstrip())


def rows_of(what: str, results: Dict[str, Result], gib: float, baseline: str = SCP,
            rss_target: bool = False) -> List[List[str]]:
    """One row per direction; ``gib``: the GiB one copy moves, all hosts together."""
    rows = []
    for direction, result in results.items():
        ours, theirs = result.median(FABEXEC), result.median(SCP)
        ratio = ours / theirs
        cpu, their_cpu = result.median_cpu(FABEXEC) / gib, result.median_cpu(SCP) / gib
        rss = result.peak_mb(FABEXEC)
        verdict = "PASS" if ratio <= RATIO_MAX else "FAIL"
        if rss_target and rss >= RSS_MAX_MB:
            verdict += ", RSS FAIL"
        rows.append([f"{what} {direction}", baseline, f"{ours:.2f}", f"{theirs:.2f}",
                     f"{ratio:.2f}x", f"{cpu:.2f}", f"{their_cpu:.2f}",
                     f"{cpu / their_cpu:.2f}x", f"{rss:.0f}", f"{result.peak_mb(SCP):.0f}",
                     f"<= {RATIO_MAX}x" + (f", < {RSS_MAX_MB} MB" if rss_target else ""),
                     verdict, str(len(result.runs[FABEXEC]))])
    return rows


HEADER = ["copy", "against", "fabexec s", "baseline s", "ratio", "fabexec CPU s/GiB",
          "baseline CPU s/GiB", "CPU ratio", "fabexec peak MB", "baseline peak MB", "target",
          "verdict", "rounds"]


def main(sections: Sequence[str]) -> int:
    # Under /srv, which the sandbox's nodes share with this machine (their /tmp is their
    # own): the sources they read and the folder they write are the same files here.
    shared = "/srv" if os.access("/srv", os.W_OK) else None
    folder = Path(tempfile.mkdtemp(prefix="fabexec-bench-transfer-", dir=shared))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` tears down
    started = time.monotonic()
    daemons = ExitStack()
    try:
        cluster = sandbox.up(NODES, state_dir=folder / "sandbox")
        address = daemons.enter_context(sandbox.second_sshd(cluster, cluster.hosts[0]))
        bench = make_bench(cluster, folder, no_sftp_block(cluster, address, folder))
        print(f"fabexec copy benchmark: {NODES} sandbox nodes up in "
              f"{time.monotonic() - started:.1f} s; {os.cpu_count()} CPUs shared with the "
              f"daemons, load average {os.getloadavg()[0]:.1f} at start")
        print(f"Each figure: median of {ROUNDS} interleaved rounds; peak MB: the largest of "
              "the rounds (fabexec: its child process, Python included; scp: the sum of "
              "its processes, each with its ssh)")
        rows = []
        if "one" in sections:
            host = cluster.hosts[0]
            rows += rows_of("256 MiB, one host", one_host(bench, 256 * MIB, host), 0.25)
            rows += rows_of("1 GiB, one host", one_host(bench, 1024 * MIB, host), 1.0,
                            rss_target=True)
        if "shell" in sections:
            rows += rows_of("256 MiB, no SFTP (shell)",
                            one_host(bench, 256 * MIB, "nosftp", ["-O"]), 0.25, "scp -O")
        if "fanout" in sections:
            rows += rows_of(f"256 MiB, {NODES} hosts at once", fan_out(bench, 256 * MIB),
                            NODES * 0.25, f"{NODES} scp at once")
        print()
        table(HEADER, rows)
        print(f"\nload average {os.getloadavg()[0]:.1f} at the end; "
              f"total {time.monotonic() - started:.0f} s")
    finally:
        daemons.close()
        sandbox.down(folder / "sandbox")
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["one", "shell", "fanout"]))
