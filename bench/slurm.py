"""Slurm speed: fabexec's job steps against ``srun`` typed by hand, and against PSSH.

On a real Slurm cluster of 16 nodes on this machine (`fabexec.sandbox.slurm`,
root needed) and, for the PSSH side, the sshd sandbox of 16 nodes:

1. inside an allocation of 4 and of 16 nodes, ``Exec('hostname',
   SlurmExecInfo(num_nodes=N))`` against ``srun -N N hostname`` run with
   `subprocess.run`; target <= 1.1x (medians of interleaved rounds, and the
   median of each round's own ratio, which a load that drifts between rounds
   disturbs less), with the client CPU of each (srun included);
2. on 16 nodes, the same fabexec step against ``Exec('hostname',
   PsshExecInfo(...))`` on the sshd sandbox (connections cached, warm), with
   the client CPU of each (user+sys of this process and its children): srun's
   fan-out goes through slurmd's tree, so the client's share is small.

Both Slurm sides run their commands through the same ``nsenter`` prefix (the
cluster lives in a network namespace), so it costs them alike. Prints ratios,
never asserts. About a minute: ``python bench/slurm.py`` or ``inv bench slurm``.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

from fabexec import Exec, PsshExecInfo, SlurmExecInfo, connections, sandbox
from fabexec.errors import SandboxError
from fabexec.sandbox import slurm as slurm_sandbox

ROUNDS = 15
SIZES = (4, 16)
TARGET = 1.1


def cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def interleaved(sides: Dict[str, Callable[[], None]], rounds: int
                ) -> Dict[str, Tuple[List[float], List[float]]]:
    """(wall seconds, client CPU seconds) of each round per side; the order rotates."""
    wall: Dict[str, List[float]] = {n: [] for n in sides}
    used: Dict[str, List[float]] = {n: [] for n in sides}
    names = list(sides)
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            c0, t0 = cpu(), time.perf_counter()
            sides[name]()
            wall[name].append(time.perf_counter() - t0)
            used[name].append(cpu() - c0)
    return {n: (wall[n], used[n]) for n in names}


def median(values: List[float]) -> float:
    return statistics.median(values)


def paired(side: List[float], base: List[float]) -> float:
    """The median of each round's ratio side / base."""
    return statistics.median(a / b for a, b in zip(side, base))


def load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def allocate(cluster: slurm_sandbox.SlurmCluster, nodes: int) -> str:
    proc = cluster.run("salloc", "--no-shell", "--exclusive", f"-N{nodes}", "--immediate=60")
    job = re.search(r"Granted job allocation (\d+)", proc.stderr + proc.stdout)
    if job is None:
        sys.exit(f"bench/slurm.py: salloc failed: {proc.stderr}")
    os.environ["SLURM_JOB_ID"] = job[1]
    os.environ["SLURM_JOB_NODELIST"] = cluster.run(
        "squeue", "-h", "-j", job[1], "-o", "%N").stdout.strip()
    return job[1]


def fabexec_step(nodes: int) -> Callable[[], None]:
    def side() -> None:
        run = Exec("hostname", SlurmExecInfo(num_nodes=nodes, hide_output=True))
        if run.exit_code != 0 or len(run.hosts) != nodes:
            sys.exit(f"bench/slurm.py: fabexec step failed: {run.errors}")
    return side


def srun_by_hand(cluster: slurm_sandbox.SlurmCluster, job: str, nodes: int
                 ) -> Callable[[], None]:
    argv = [*cluster.launcher, "srun", f"--jobid={job}", f"-N{nodes}",
            "--ntasks-per-node=1", "hostname"]

    def side() -> None:
        proc = subprocess.run(argv, capture_output=True)
        if proc.returncode != 0:
            sys.exit(f"bench/slurm.py: srun failed: {proc.stderr!r}")
    return side


def pssh(cluster: sandbox.SandboxCluster) -> Callable[[], None]:
    info = PsshExecInfo(hosts=list(cluster.hosts), ssh_config=str(cluster.ssh_config),
                        hide_output=True)

    def side() -> None:
        run = Exec("hostname", info)
        if run.exit_code != 0:
            sys.exit(f"bench/slurm.py: PSSH failed: {run.errors}")
    return side


def main() -> int:
    if os.geteuid() != 0:
        sys.exit("bench/slurm.py: the Slurm sandbox needs root")
    folder = Path(tempfile.mkdtemp(prefix="fabexec-bench-slurm-"))
    started = time.monotonic()
    try:
        cluster = slurm_sandbox.up(max(SIZES), folder / "slurm")
        os.environ.update(cluster.env)
        print(f"fabexec Slurm benchmark: {max(SIZES)} slurmd up in "
              f"{time.monotonic() - started:.1f} s; medians of {ROUNDS} interleaved rounds")
        print("\n1. A job step inside an allocation: Exec(SlurmExecInfo) / srun by hand")
        print(f"{'nodes':>5} {'fabexec ms':>11} {'srun ms':>8} {'ratio':>6} {'paired':>7} "
              f"{'CPU fabexec':>12} {'CPU srun':>9} {'load':>10} target verdict")
        for nodes in SIZES:
            job = allocate(cluster, nodes)
            before = load()
            got = interleaved({"fabexec": fabexec_step(nodes),
                               "srun": srun_by_hand(cluster, job, nodes)}, ROUNDS)
            (fab, fab_cpu), (srun, srun_cpu) = got["fabexec"], got["srun"]
            ratio, each = median(fab) / median(srun), paired(fab, srun)
            print(f"{nodes:>5} {median(fab) * 1e3:>11.1f} {median(srun) * 1e3:>8.1f} "
                  f"{ratio:>6.2f} {each:>7.2f} {median(fab_cpu) * 1e3:>9.1f} ms "
                  f"{median(srun_cpu) * 1e3:>6.1f} ms {before:>4}-{load():<5} <= {TARGET} "
                  f"{'PASS' if max(ratio, each) <= TARGET else 'FAIL'}")
            cluster.run("scancel", job)
        try:
            ssh = sandbox.up(max(SIZES), state_dir=folder / "sshd")
        except SandboxError as err:  # its fixed addresses may be taken by another sandbox
            print(f"\n2. skipped: no sshd sandbox of {max(SIZES)} nodes: {err}")
            return 0
        pssh_side = pssh(ssh)
        pssh_side()  # connect once: PSSH is compared warm
        got = interleaved({"srun": fabexec_step(max(SIZES)), "pssh": pssh_side}, ROUNDS) \
            if allocate(cluster, max(SIZES)) else {}
        print(f"\n2. On {max(SIZES)} nodes, through fabexec: srun step against PSSH "
              "(connections cached)")
        print(f"{'engine':>6} {'wall ms':>8} {'client CPU ms':>14}")
        for name, (wall, used) in got.items():
            print(f"{name:>6} {median(wall) * 1e3:>8.1f} {median(used) * 1e3:>14.1f}")
        print(f"\nload average {load()} at the end; "
              f"total {time.monotonic() - started:.0f} s")
    finally:
        connections.close_connections()
        slurm_sandbox.down(folder / "slurm")
        sandbox.down(folder / "sshd")
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
