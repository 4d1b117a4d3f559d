"""A `Get` through gateways against a direct one: the root's CPU and wall time, one run.

Brings up its own sandbox of 2 gateways and `TARGETS` targets (state in a temporary
folder, stopped at the end, also on error or SIGTERM), makes a file of ``--mb`` MB of
random bytes on each target, and gets it from every target to this machine, directly
and through the 2 gateways. Each call runs in a child process of its own (connecting
anew, imports not counted: both ways pay their handshakes, and through gateways the
probe and the bundle pushed to each gateway, whose ``python3`` lacks fabexec), the
cases interleaved, their order rotated each round. Root CPU: the child's
``time.process_time()`` around the call (every thread); wall: the call's;
placing: the part of the wall spent placing files here once they arrived (through
gateways, summed over them). After each call, untimed, every file's size is
checked and the files are removed.

``--before PATH`` also runs the fabexec found in the folder PATH (another checkout,
e.g. ``git archive main fabexec | tar -x -C PATH``) through the gateways, in the same
rounds: a change measured before and after alike.

Figures are printed, never asserted. ``python bench/tree_get.py [--mb 150]
[--rounds 3] [--before PATH]`` or ``inv bench -n tree_get`` (about 3 minutes).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Tuple

import transfer as transfer_bench  # bench/transfer.py, beside this file

from fabexec import sandbox

ROOT = Path(__file__).resolve().parent.parent
TARGETS = 6
GATEWAYS = 2
#: Seconds any one call may take before the benchmark gives up.
CALL_TIMEOUT = 900

CHILD = """
import json, sys, time
from fabexec import Get, PsshExecInfo, tree
src, dst, config, hosts, gateways = sys.argv[1:6]
info = PsshExecInfo(hosts=hosts.split(","), ssh_config=config, hide_output=True,
                    connect_timeout=60, gateways=gateways.split(",") if gateways else None)
placing = [0.0]
def timed(place):
    def run(*args):
        began = time.perf_counter()
        try:
            return place(*args)
        finally:
            placing[0] += time.perf_counter() - began
    return run
tree.Receiving.place = timed(tree.Receiving.place)
began, cpu = time.perf_counter(), time.process_time()
done = Get(src, dst, info)
seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
print(json.dumps({"seconds": seconds, "cpu": cpu, "placing": placing[0],
                  "exit_code": done.exit_code,
                  "errors": {host: str(error) for host, error in done.errors.items()}}))
"""


def get(code: Path, src: str, dst: Path, config: Path, hosts: List[str],
        gateways: List[str]) -> Tuple[float, float, float]:
    """One `Get` by the fabexec in ``code``, in a child process: its wall and CPU seconds,
    and the seconds spent placing files here (`fabexec.tree.Receiving.place`, which
    holds up the reading of that gateway's frames meanwhile)."""
    done = transfer_bench.child_copy(CHILD, [src, str(dst), str(config), ",".join(hosts),
                                             ",".join(gateways)], code, CALL_TIMEOUT, "the Get")
    return done["seconds"], done["cpu"], done["placing"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=150, help="MB per target's file")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", type=Path, help="a folder holding another fabexec")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="fabexec-bench-tree-get-"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` tears down
    try:
        cluster = sandbox.up(GATEWAYS + TARGETS, state_dir=folder / "sandbox", timeout=120)
        gateways, targets = cluster.hosts[:GATEWAYS], cluster.hosts[GATEWAYS:]
        src = f"/tmp/tree-get-{os.getpid()}"
        for host in targets:
            subprocess.run(["ssh", "-F", str(cluster.ssh_config), "-o", "BatchMode=yes", host,
                            f"head -c {args.mb * 1000000} /dev/urandom > {src}"], check=True)
        cases: Dict[str, Tuple[Path, List[str]]] = {"direct": (ROOT, []),
                                                    "gateways": (ROOT, gateways)}
        if args.before is not None:
            cases["gateways, before"] = (args.before.resolve(), gateways)
        runs: Dict[str, List[Tuple[float, float, float]]] = {name: [] for name in cases}
        loads: List[float] = []
        names = list(cases)
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                code, through = cases[name]
                dst = folder / "got"
                loads.append(os.getloadavg()[0])
                runs[name].append(get(code, src, dst, cluster.ssh_config, targets, through))
                sizes = {p.stat().st_size for p in dst.glob("*/*")}
                if sizes != {args.mb * 1000000} or len(list(dst.glob("*/*"))) != TARGETS:
                    raise transfer_bench.BenchError(
                        f"{name}: the files did not arrive whole ({sizes})")
                shutil.rmtree(dst)
            print(f"  round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
        print(f"Get of {args.mb} MB from each of {TARGETS} targets ({TARGETS * args.mb} MB), "
              f"median of {args.rounds} interleaved rounds [min-max]; load average "
              f"{min(loads):.0f}-{max(loads):.0f} at the calls' starts")
        print(f"{'case':<20} {'root CPU s':>24} {'wall s':>24} {'placing s':>24}")
        for name, found in runs.items():
            print(f"{name:<20} {spread([cpu for _, cpu, _ in found]):>24} "
                  f"{spread([wall for wall, _, _ in found]):>24} "
                  f"{spread([placing for _, _, placing in found]):>24}")
        base = statistics.median(cpu for _, cpu, _ in runs["direct"])
        for name in names[1:]:
            print(f"root CPU {name} / direct: "
                  f"{statistics.median(cpu for _, cpu, _ in runs[name]) / base:.2f}")
    finally:
        sandbox.down(folder / "sandbox")
        shutil.rmtree(folder, ignore_errors=True)
    return 0


def spread(values: List[float]) -> str:
    return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"


if __name__ == "__main__":
    sys.exit(main())
