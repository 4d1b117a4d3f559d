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
from typing import Callable, Dict, List

from fabexec import Exec, MpiExecInfo

ROUNDS = 200
BUDGET_SECONDS = 60.0
TARGET = 1.1
NPROCS = 4


def timed(name: str, run: Callable[[], int]) -> float:
    start = time.perf_counter()
    code = run()
    elapsed = time.perf_counter() - start
    if code != 0:
        sys.exit(f"{name}: a run failed with exit code {code}")
    return elapsed


def main() -> None:
    info = MpiExecInfo(nprocs=NPROCS)
    line = Exec("true", info).cmd  # also the warm-up: detection runs once, then is cached
    sides: Dict[str, Callable[[], int]] = {
        "fabexec Exec": lambda: Exec("true", info).exit_code,
        "shell": lambda: subprocess.run(line, shell=True).returncode,
    }
    times: Dict[str, List[float]] = {name: [] for name in sides}
    deadline = time.monotonic() + BUDGET_SECONDS
    for index in range(ROUNDS):
        order = list(sides) if index % 2 == 0 else list(reversed(sides))
        for name in order:
            times[name].append(timed(name, sides[name]))
        if time.monotonic() > deadline:
            break
    rounds = len(times["shell"])
    print(f"`{line}` x {rounds} rounds, interleaved (budget {BUDGET_SECONDS:.0f} s)")
    for name, values in times.items():
        print(f"  {name:13} best {min(values) * 1000:7.1f} ms   "
              f"median {statistics.median(values) * 1000:7.1f} ms")
    ratio = min(times["fabexec Exec"]) / min(times["shell"])
    typical = statistics.median(times["fabexec Exec"]) / statistics.median(times["shell"])
    verdict = "met" if ratio <= TARGET else "NOT met"
    print(f"  ratio of bests: {ratio:.3f}x  (target <= {TARGET}x: {verdict});  "
          f"ratio of medians: {typical:.3f}x")


if __name__ == "__main__":
    main()
