"""Faults: how each tool returns when a host hangs mid-command; client CPU per host.

Brings up its own sandboxes (`fabexec.sandbox`, state in temporary folders, torn down at
the end, also on error or SIGTERM) and prints:

1. a hung host: ``sleep 4; echo done`` on 4 hosts, host 3 frozen (its whole sshd tree
   SIGSTOPped: its kernel still acknowledges TCP) 1.5 s after the tool starts. For each
   tool, the time it takes to return (capped at 30 s: a tool still running then is
   killed) and whether the three live hosts' ``done`` was kept. fabexec uses keepalive
   2 s x 3, OpenSSH ``ServerAliveInterval=2 ServerAliveCountMax=3``, parallel-ssh
   ``timeout=10``, Fabric its defaults. Target: fabexec at most 1.2x OpenSSH's time, all
   live output kept.
2. client CPU per host (user + system time of this process, ``time.process_time()``,
   exact where ``os.times()`` counts 10 ms ticks) running
   ``hostname`` on 8, 64 and 256 hosts over new connections: fabexec, paramiko alone
   (the floor of anything built on it), libssh2 alone (ssh2-python: the floor of an
   engine on a C SSH library) and parallel-ssh (libssh2 with gevent), taking turns.
   Target: fabexec at most 2.5 ms a host, flat from 8 to 256 hosts.
3. the CPU a second of 256 idle cached connections, fabexec's transport threads
   waking once a second against paramiko's default of ten times (reported).

Each tool of section 1 runs in a child process (this file, ``--peer TOOL``) that says
when it starts and prints its results: a tool that never returns is abandoned without
harm. Timings are printed, never asserted; PASS/FAIL says where a target stands. About
three to four minutes; ``python bench/faults.py`` or ``inv bench faults``.
"""

from __future__ import annotations

import gc
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import paramiko
from paramiko import Transport

from fabexec import Exec, PsshExecInfo, connections, sandbox
from fabexec.connections import HostTransport
from fabexec.seams import idle_wakeup, set_idle_wakeup

HUNG_NODES = 4
FROZEN = "node3"
FREEZE_AFTER = 1.5
CAP = 30.0
KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 2, 3
PSSH_TIMEOUT = 10
CPU_SIZES = (8, 64, 256)
CPU_ROUNDS = 5
#: Seconds the CPU section may spend on rounds of one size; one round always runs.
CPU_BUDGET = 40.0
CONNECT_TIMEOUT = 10
IDLE_SETTLE, IDLE_SECONDS, IDLE_ROUNDS = 1.0, 3.0, 3
MAX_PARALLEL = 64  # fabexec's default, and parallel-ssh's pool for the same fan-out

# Targets (issue "Faults survived, nothing lost").
HUNG_RATIO_MAX = 1.2  # fabexec's time to return / OpenSSH's
CPU_PER_HOST_MAX_MS = 2.5

FABEXEC = "fabexec"
FABRIC = "Fabric ThreadingGroup"
PSSH = "parallel-ssh"
PARAMIKO = "paramiko alone"
LIBSSH2 = "libssh2 alone"
OPENSSH = "OpenSSH, a process per host"
TOOLS = (FABEXEC, OPENSSH, FABRIC, PSSH)

#: What a peer prints when it starts, and before its results.
GO, RESULTS = "go", "results "

Results = Dict[str, Tuple[int, str]]  # host: (exit code, stdout)


def command() -> str:
    """``sleep 4; echo done``, with a sleep of 4 s whose argument no other process uses."""
    return f"sleep 4.{random.randrange(10**8, 10**9)}; echo done"


# --- the peers, each run in a child process ----------------------------------------


def peer_fabexec(cluster: sandbox.SandboxCluster, cmd: str) -> Results:
    node = Exec(cmd, PsshExecInfo(hosts=cluster.hosts, ssh_config=str(cluster.ssh_config),
                                  collect_output=True, hide_output=True,
                                  connect_timeout=CONNECT_TIMEOUT,
                                  keepalive_interval=KEEPALIVE_INTERVAL,
                                  keepalive_count=KEEPALIVE_COUNT))
    return {h: (node.exit_codes[h] or 0, node.stdout[h]) for h in cluster.hosts}


def peer_fabric(cluster: sandbox.SandboxCluster, cmd: str) -> Results:
    from fabric import Config, ThreadingGroup
    from fabric.exceptions import GroupException

    group = ThreadingGroup(*cluster.hosts,
                           config=Config(runtime_ssh_path=str(cluster.ssh_config)))
    try:
        result = group.run(cmd, hide=True, warn=True)
    except GroupException as e:
        result = e.result
    return {c.original_host: (getattr(r, "exited", 255), getattr(r, "stdout", ""))
            for c, r in result.items()}


def peer_pssh(cluster: sandbox.SandboxCluster, cmd: str) -> Results:
    from pssh.clients import ParallelSSHClient
    from pssh.config import HostConfig

    ips = [cluster.addresses[h][0] for h in cluster.hosts]
    configs = [HostConfig(user=cluster.user, port=cluster.addresses[h][1],
                          private_key=str(cluster.key)) for h in cluster.hosts]
    client = ParallelSSHClient(ips, host_config=configs, pkey=str(cluster.key),
                               timeout=PSSH_TIMEOUT)
    output = client.run_command(cmd, stop_on_errors=False)
    client.join(output)
    names = dict(zip(ips, cluster.hosts))
    return {names[o.host]: (o.exit_code if o.exit_code is not None else 255,
                            "".join(f"{line}\n" for line in (o.stdout or ())))
            for o in output}


def peer_openssh(cluster: sandbox.SandboxCluster, cmd: str) -> Results:
    procs = {h: subprocess.Popen(
        ["ssh", "-F", str(cluster.ssh_config), "-o", "BatchMode=yes",
         "-o", f"ConnectTimeout={CONNECT_TIMEOUT}",
         "-o", f"ServerAliveInterval={KEEPALIVE_INTERVAL}",
         "-o", f"ServerAliveCountMax={KEEPALIVE_COUNT}", h, cmd],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for h in cluster.hosts}
    outputs = {h: proc.communicate(timeout=2 * CAP)[0] for h, proc in procs.items()}
    return {h: (proc.returncode, outputs[h]) for h, proc in procs.items()}


PEERS: Dict[str, Callable[[sandbox.SandboxCluster, str], Results]] = {
    FABEXEC: peer_fabexec, FABRIC: peer_fabric, PSSH: peer_pssh, OPENSSH: peer_openssh}


def peer_main(tool: str, state_dir: str, cmd: str) -> None:
    """The child: imports done, say `GO`, run, print the results as JSON."""
    cluster = sandbox.SandboxCluster.load(state_dir)
    run = PEERS[tool]
    print(GO, flush=True)
    results = run(cluster, cmd)
    print(RESULTS + json.dumps(results), flush=True)


# --- section 1: a hung host --------------------------------------------------------


@dataclass
class HungRun:
    tool: str
    seconds: Optional[float]  # None: still running at the cap, killed
    results: Results
    started_when_frozen: int  # hosts running the command at the freeze

    def live_output_kept(self, hosts: Sequence[str]) -> bool:
        return all(self.results.get(h) == (0, "done\n") for h in hosts if h != FROZEN)


def running(cmd: str) -> int:
    """How many hosts run ``cmd``'s unique sleep (this machine sees every node's processes)."""
    found = subprocess.run(["pgrep", "-f", "^" + cmd.split(";")[0]], capture_output=True,
                           text=True, timeout=30, check=False)
    return len(found.stdout.split())


def run_hung(cluster: sandbox.SandboxCluster, tool: str) -> HungRun:
    """One tool on the cluster, `FROZEN` frozen `FREEZE_AFTER` s after it said `GO`."""
    cmd = command()
    child = subprocess.Popen([sys.executable, __file__, "--peer", tool, str(cluster.state_dir),
                              cmd], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines: List[str] = []
    reader = threading.Thread(target=lambda: lines.extend(child.stdout), daemon=True)
    started: List[int] = []
    try:
        reader.start()
        deadline = time.monotonic() + CAP
        while GO not in (line.strip() for line in lines) and time.monotonic() < deadline \
                and child.poll() is None:
            time.sleep(0.005)
        began = time.monotonic()

        def freeze() -> None:
            started.append(running(cmd))
            cluster.freeze(FROZEN)

        freezer = threading.Timer(FREEZE_AFTER, freeze)
        freezer.start()
        reader.join(CAP)
        took = time.monotonic() - began if not reader.is_alive() else None
        freezer.join()
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        reader.join(5)
        cluster.thaw(FROZEN)
        cluster.crash(FROZEN)  # the frozen sessions, now of no client
    found = [line[len(RESULTS):] for line in lines if line.startswith(RESULTS)]
    results = {h: (code, out) for h, (code, out) in json.loads(found[0]).items()} \
        if found else {}
    return HungRun(tool, took, results, started[0] if started else 0)


def print_hung(runs: List[HungRun], hosts: Sequence[str]) -> bool:
    print(f"\n1. A hung host: `sleep 4; echo done` on {len(hosts)} hosts, {FROZEN} frozen "
          f"(SIGSTOP of its sshd tree) {FREEZE_AFTER:g} s in; cap {CAP:g} s")
    rows = []
    for run in runs:
        took = f"{run.seconds:.1f} s" if run.seconds is not None else f"> {CAP:g} s (killed)"
        frozen = run.results.get(FROZEN)
        rows.append([run.tool, took, "yes" if run.live_output_kept(hosts) else "NO",
                     "-" if frozen is None else f"exit {frozen[0]}",
                     f"{run.started_when_frozen}/{len(hosts)}"])
    table(["tool", "returned after", "live output kept", f"{FROZEN}",
           "running when frozen"], rows)
    by_tool = {run.tool: run for run in runs}
    ours, openssh = by_tool[FABEXEC], by_tool[OPENSSH]
    if ours.seconds is None or openssh.seconds is None:
        print(f"  FAIL  fabexec returned: {ours.seconds is not None}, "
              f"OpenSSH returned: {openssh.seconds is not None}")
        return False
    ratio = ours.seconds / openssh.seconds
    ok = ratio <= HUNG_RATIO_MAX and ours.live_output_kept(hosts)
    print(f"  {'PASS' if ok else 'FAIL'}  fabexec / OpenSSH time to return = {ratio:.2f} "
          f"(target <= {HUNG_RATIO_MAX}), live output kept: "
          f"{'yes' if ours.live_output_kept(hosts) else 'NO'}")
    return ok


# --- section 2: client CPU per host ------------------------------------------------


def cpu_fabexec(cluster: sandbox.SandboxCluster, hosts: Sequence[str]) -> Dict[str, str]:
    info = PsshExecInfo(hosts=list(hosts), ssh_config=str(cluster.ssh_config),
                        collect_output=True, hide_output=True, connect_timeout=CONNECT_TIMEOUT)
    node = Exec("hostname", info)
    connections.close_connections()
    return {h: node.stdout[h] for h in hosts if node.exit_codes[h] == 0}


def cpu_paramiko(cluster: sandbox.SandboxCluster, hosts: Sequence[str]) -> Dict[str, str]:
    """paramiko alone: connect, authenticate, run, read, close; as many threads as
    fabexec's ``max_parallel``. The floor of any tool built on paramiko."""
    key = paramiko.PKey.from_path(str(cluster.key))

    def one(host: str) -> str:
        transport = paramiko.Transport(socket.create_connection(cluster.addresses[host],
                                                                CONNECT_TIMEOUT))
        try:
            transport.start_client(timeout=CONNECT_TIMEOUT)
            transport.auth_publickey(cluster.user, key)
            channel = transport.open_session()
            channel.exec_command("hostname")
            out = b"".join(iter(lambda: channel.recv(65536), b""))
            return out.decode() if channel.recv_exit_status() == 0 else ""
        finally:
            transport.close()

    with ThreadPoolExecutor(min(len(hosts), MAX_PARALLEL)) as pool:
        return dict(zip(hosts, pool.map(one, hosts)))


def cpu_libssh2(cluster: sandbox.SandboxCluster, hosts: Sequence[str]) -> Dict[str, str]:
    """libssh2 alone (ssh2-python, which parallel-ssh drives), in the same threads:
    the floor of an engine built on a C SSH library instead."""
    from ssh2.session import Session

    def one(host: str) -> str:
        with socket.create_connection(cluster.addresses[host], CONNECT_TIMEOUT) as sock:
            session = Session()
            session.handshake(sock)
            session.userauth_publickey_fromfile(cluster.user, str(cluster.key))
            channel = session.open_session()
            channel.execute("hostname")
            chunks = []
            size, data = channel.read()
            while size > 0:
                chunks.append(data)
                size, data = channel.read()
            channel.wait_eof()
            channel.close()
            channel.wait_closed()
            ok = channel.get_exit_status() == 0
            session.disconnect()
            return b"".join(chunks).decode() if ok else ""

    with ThreadPoolExecutor(min(len(hosts), MAX_PARALLEL)) as pool:
        return dict(zip(hosts, pool.map(one, hosts)))


def cpu_pssh(cluster: sandbox.SandboxCluster, hosts: Sequence[str]) -> Dict[str, str]:
    from pssh.clients import ParallelSSHClient
    from pssh.config import HostConfig

    ips = [cluster.addresses[h][0] for h in hosts]
    configs = [HostConfig(user=cluster.user, port=cluster.addresses[h][1],
                          private_key=str(cluster.key)) for h in hosts]
    client = ParallelSSHClient(ips, host_config=configs, pkey=str(cluster.key),
                               pool_size=MAX_PARALLEL, timeout=CONNECT_TIMEOUT)
    output = client.run_command("hostname")
    client.join(output)
    names = dict(zip(ips, hosts))
    got = {names[o.host]: "".join(f"{line}\n" for line in (o.stdout or ())) for o in output}
    del client, output
    gc.collect()  # its sessions disconnect when collected: inside the measurement
    return got


CPU_TOOLS: Dict[str, Callable[[sandbox.SandboxCluster, Sequence[str]], Dict[str, str]]] = {
    FABEXEC: cpu_fabexec, PARAMIKO: cpu_paramiko, LIBSSH2: cpu_libssh2, PSSH: cpu_pssh}


def cpu_ms_per_host(cluster: sandbox.SandboxCluster, tool: str, n: int) -> float:
    """``tool``'s CPU for ``hostname`` on the first ``n`` hosts, cold, in ms a host."""
    hosts = cluster.hosts[:n]
    connections.close_connections()
    gc.collect()
    before = time.process_time()
    outputs = CPU_TOOLS[tool](cluster, hosts)
    cpu = time.process_time() - before
    failed = [h for h in hosts if not outputs.get(h, "").strip()]
    if failed:
        raise RuntimeError(f"{tool}: hostname failed on {len(failed)} of {n} hosts: "
                           f"{failed[:5]}")
    return 1000 * cpu / n


CpuResults = Dict[int, Dict[str, Tuple[float, int]]]  # size: tool: (median, rounds)


def run_cpu(cluster: sandbox.SandboxCluster) -> CpuResults:
    """Median ms a host and rounds, per size and tool; the tools take turns."""
    for tool in CPU_TOOLS:
        cpu_ms_per_host(cluster, tool, CPU_SIZES[0])  # warm-up: first-use costs
    results: CpuResults = {}
    for n in CPU_SIZES:
        samples: Dict[str, List[float]] = {tool: [] for tool in CPU_TOOLS}
        deadline = time.monotonic() + CPU_BUDGET
        for _ in range(CPU_ROUNDS):
            began = time.monotonic()
            for tool in CPU_TOOLS:
                samples[tool].append(cpu_ms_per_host(cluster, tool, n))
            if 2 * time.monotonic() - began > deadline:
                break
        results[n] = {tool: (statistics.median(got), len(got)) for tool, got in samples.items()}
    return results


def print_cpu(results: CpuResults) -> bool:
    print("\n2. Client CPU per host: `hostname`, cold connections (user + system of this "
          "process, time.process_time(), median of rounds)")
    tools = list(CPU_TOOLS)
    table(["hosts", *(f"{t} ms" for t in tools), f"{FABEXEC} / {PARAMIKO}", "rounds"],
          [[str(n), *(f"{by_tool[t][0]:.2f}" for t in tools),
            f"{by_tool[FABEXEC][0] / by_tool[PARAMIKO][0]:.2f}x", str(by_tool[FABEXEC][1])]
           for n, by_tool in results.items()])
    worst = max(by_tool[FABEXEC][0] for by_tool in results.values())
    ok = worst <= CPU_PER_HOST_MAX_MS
    flat = results[CPU_SIZES[-1]][FABEXEC][0] / results[CPU_SIZES[0]][FABEXEC][0]
    floor = {tool: min(by_tool[tool][0] for by_tool in results.values())
             for tool in (PARAMIKO, LIBSSH2)}
    print(f"  {'PASS' if ok else 'FAIL'}  fabexec worst {worst:.2f} ms a host (target <= "
          f"{CPU_PER_HOST_MAX_MS}); {CPU_SIZES[-1]} hosts / {CPU_SIZES[0]} hosts = {flat:.2f} "
          f"(flat is 1); at best, paramiko alone needs {floor[PARAMIKO]:.2f}, libssh2 alone "
          f"{floor[LIBSSH2]:.2f}")
    return ok


# --- section 3: idle cached connections ------------------------------------------


def idle_cpu_ms_per_s(cluster: sandbox.SandboxCluster, wake_up: float) -> float:
    """CPU a second while every host's connection sits idle in the cache, with
    paramiko's transport threads waking every ``wake_up`` seconds."""
    default = idle_wakeup(HostTransport)
    set_idle_wakeup(HostTransport, wake_up)  # read by each new transport
    try:
        connections.close_connections()
        node = Exec("true", PsshExecInfo(hosts=cluster.hosts, ssh_config=str(cluster.ssh_config),
                                         hide_output=True, max_parallel=len(cluster.hosts),
                                         connect_timeout=CONNECT_TIMEOUT))
        if node.exit_code != 0:
            raise RuntimeError(f"fabexec: true failed: {node.errors}")
        time.sleep(IDLE_SETTLE)
        before, began = time.process_time(), time.monotonic()
        time.sleep(IDLE_SECONDS)
        return 1000 * (time.process_time() - before) / (time.monotonic() - began)
    finally:
        connections.close_connections()
        set_idle_wakeup(HostTransport, default)


def run_idle(cluster: sandbox.SandboxCluster) -> Dict[str, List[float]]:
    """Both wake-ups, taking turns."""
    samples: Dict[str, List[float]] = {"fabexec": [], "paramiko's default": []}
    for _ in range(IDLE_ROUNDS):
        samples["fabexec"].append(idle_cpu_ms_per_s(cluster, idle_wakeup(HostTransport)))
        samples["paramiko's default"].append(
            idle_cpu_ms_per_s(cluster, idle_wakeup(Transport)))
    return samples


def print_idle(samples: Dict[str, List[float]], hosts: int) -> None:
    ours, theirs = (statistics.median(v) for v in samples.values())
    print(f"\n3. Idle cached connections: {hosts} open, nothing running (CPU of this "
          f"process, ms a second, median of {IDLE_ROUNDS})")
    table(["wake-up", "ms / s"],
          [[f"fabexec ({idle_wakeup(HostTransport):g} s)", f"{ours:.1f}"],
           [f"paramiko's default ({idle_wakeup(Transport):g} s)", f"{theirs:.1f}"]])
    print(f"  fabexec / paramiko's default = {ours / theirs:.2f} (reported, no target)")


# --- output and main ---------------------------------------------------------------


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  " + "  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip())


def main() -> int:
    folders = [Path(tempfile.mkdtemp(prefix="fabexec-bench-faults-")) for _ in range(2)]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` tears down
    print(f"Sandbox on loopback, {os.cpu_count()} CPUs shared with the daemons, load average "
          f"{os.getloadavg()[0]:.1f} at start")
    try:
        began = time.monotonic()
        small = sandbox.up(HUNG_NODES, folders[0])
        runs = [run_hung(small, tool) for tool in TOOLS]
        hung_ok = print_hung(runs, small.hosts)
        sandbox.down(folders[0])
        big = sandbox.up(CPU_SIZES[-1], folders[1], timeout=300)
        cpu_ok = print_cpu(run_cpu(big))
        print_idle(run_idle(big), len(big.hosts))
        print(f"\nTargets: hung host {'PASS' if hung_ok else 'FAIL'}, CPU per host "
              f"{'PASS' if cpu_ok else 'FAIL'}. Whole run {time.monotonic() - began:.0f} s, "
              f"load average {os.getloadavg()[0]:.1f} at the end")
        return 0
    finally:
        connections.close_connections()
        for folder in folders:
            sandbox.down(folder)
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--peer"]:
        peer_main(*sys.argv[2:5])
    else:
        sys.exit(main())
