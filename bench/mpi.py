"""``Exec('true', MpiExecInfo(nprocs=4))`` against the same mpiexec line typed in a shell.

Both start ``mpiexec -n 4 true`` (the launcher first on PATH, MPICH's from the
``mpich`` wheel here). fabexec adds the `ExecInfo` checks, the flavor lookup
(cached after the first call), the line's construction, a bash, the Tee and
the kill tag. Rounds alternate which side goes first, so that a slow moment of
the machine hits both; the best time of each side is compared. Target: 1.1x.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional

from fabexec import Exec, MpiExecInfo

ROUNDS = 200
BUDGET_SECONDS = 60.0
TARGET = 1.1
NPROCS = 4


#: Runs that may fail before the figures are void. Hydra's mpiexec now and then
#: dies of SIGPIPE (141) under load, typed in a shell as well (about 1 in 1,000).
MAX_FAILED_SHARE = 0.05


def timed(name: str, run: Callable[[], int], failed: Dict[str, List[int]]) -> Optional[float]:
    """Seconds of one run, or None (counted in ``failed``) when it did not exit 0."""
    start = time.perf_counter()
    code = run()
    elapsed = time.perf_counter() - start
    if code != 0:
        failed[name].append(code)
        return None
    return elapsed


def main() -> None:
    info = MpiExecInfo(nprocs=NPROCS)
    line = Exec("true", info).cmd  # also the warm-up: detection runs once, then is cached
    sides: Dict[str, Callable[[], int]] = {
        "fabexec Exec": lambda: Exec("true", info).exit_code,
        "shell": lambda: subprocess.run(line, shell=True).returncode,
    }
    times: Dict[str, List[float]] = {name: [] for name in sides}
    failed: Dict[str, List[int]] = {name: [] for name in sides}
    deadline = time.monotonic() + BUDGET_SECONDS
    rounds = 0
    for index in range(ROUNDS):
        rounds += 1
        order = list(sides) if index % 2 == 0 else list(reversed(sides))
        for name in order:
            elapsed = timed(name, sides[name], failed)
            if elapsed is not None:
                times[name].append(elapsed)
        if time.monotonic() > deadline:
            break
    print(f"`{line}` x {rounds} rounds, interleaved (budget {BUDGET_SECONDS:.0f} s)")
    for name, codes in failed.items():
        if codes:
            print(f"  {name}: {len(codes)} run(s) failed (exit codes {sorted(set(codes))}), "
                  "left out")
        if len(codes) > MAX_FAILED_SHARE * rounds:
            sys.exit(f"{name}: {len(codes)} of {rounds} runs failed; no figures")
    for name, values in times.items():
        print(f"  {name:13} best {min(values) * 1000:7.1f} ms   "
              f"median {statistics.median(values) * 1000:7.1f} ms")
    ratio = min(times["fabexec Exec"]) / min(times["shell"])
    typical = statistics.median(times["fabexec Exec"]) / statistics.median(times["shell"])
    verdict = "PASS" if ratio <= TARGET else "FAIL"
    print(f"  ratio of bests: {ratio:.3f}x  (target <= {TARGET}x: {verdict});  "
          f"ratio of medians: {typical:.3f}x")


if __name__ == "__main__":
    main()
