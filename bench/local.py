"""Local speed and memory: ``Exec`` against a plain shell, measured in one run.

Prints the three targets of local output at the physical limit (issue 11), each
as the median of per-round ratios against a baseline measured in the same
round, with "met" or "NOT met" (never an assertion), after the figures they
come from:

1. throughput: 256 MiB of output (``head -c 256M /dev/zero``), hidden, into
   ``pipe_stdout`` against ``bash -c 'cmd > file'``: target <= 1.1x. The same
   also collected (``collect_output=True``): target <= 2x. Collected without a
   file, and invoke's own ``run(hide=True)`` for contrast (capped: its reader
   is quadratic and would take minutes at 16 MiB), are shown too;
2. start-up: ``Exec('true', LocalExecInfo(hide_output=True))`` against
   ``bash -c true``, the floor since commands run in bash: target <= 1.2x.
   ``subprocess.run('true', shell=True)`` (dash here) and ``invoke.run('true')``
   are printed as references;
3. memory: streaming 1 GiB into a file without collecting grows the peak RSS
   (VmHWM) of a fresh Python process by less than 64 MiB. Collecting 256 MiB is shown as
   the control that proves the measure sees growth when there is some.

Sides alternate their order each round, so that a slow moment of the machine
hits all of them, and each round's ratio compares neighbours in time. Files go
to a temporary folder, removed at the end. About two minutes:
``python bench/local.py`` or ``inv bench -n local``.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import invoke

from fabexec import Exec, LocalExecInfo

MIB = 1024 * 1024
THROUGHPUT_MIB = 256
THROUGHPUT_ROUNDS = 9
THROUGHPUT_BUDGET_SECONDS = 60.0
HANDOVER_TARGET = 1.1
COLLECT_TARGET = 2.0
INVOKE_SIZES_MIB = (1, 2, 4, 16)
INVOKE_CAP_SECONDS = 25.0
STARTUP_ROUNDS = 15
STARTUP_BATCH = 20
STARTUP_BUDGET_SECONDS = 25.0
STARTUP_TARGET = 1.2
MIN_ROUNDS = 5
MEMORY_STREAM_MIB = 1024
MEMORY_COLLECT_MIB = 256
MEMORY_TARGET_MIB = 64

Side = Callable[[], None]


@dataclass
class Target:
    """One row of the summary: what is compared, the median ratio, the target."""

    what: str
    against: str
    ratios: List[float]
    target: float

    def row(self) -> str:
        ratio = statistics.median(self.ratios)
        met = "met" if ratio <= self.target else "NOT met"
        return (f"   {self.what:42} against {self.against:24} {ratio:5.2f}x "
                f"(rounds {min(self.ratios):.2f}-{max(self.ratios):.2f}, "
                f"n={len(self.ratios)})  target <= {self.target}x: {met}")


def interleaved(sides: Dict[str, Side], rounds: int, budget: Optional[float] = None,
                repeat: int = 1) -> Dict[str, List[float]]:
    """Seconds per call of each side, one figure per round; the order rotates each round.

    The budget stops further rounds once spent, never before `MIN_ROUNDS`.
    """
    times: Dict[str, List[float]] = {name: [] for name in sides}
    names = list(sides)
    deadline = time.monotonic() + budget if budget is not None else None
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            for _ in range(repeat):
                sides[name]()
            times[name].append((time.perf_counter() - start) / repeat)
        if index + 1 >= MIN_ROUNDS and deadline is not None and time.monotonic() > deadline:
            break
    return times


def ratios(times: Dict[str, List[float]], side: str, base: str) -> List[float]:
    """``side`` over ``base``, round by round."""
    return [ours / theirs for ours, theirs in zip(times[side], times[base])]


def must(ok: bool, what: str) -> None:
    """A broken run makes every figure meaningless: stop with what broke."""
    if not ok:
        sys.exit(f"bench/local.py: {what}")


# ---- 1. throughput ------------------------------------------------------------

def exec_side(cmd: str, expect: int, **info: object) -> Side:
    def side() -> None:
        node = Exec(cmd, LocalExecInfo(hide_output=True, **info))
        must(node.exit_code == 0, f"{cmd!r} exited {node.exit_code}")
        if info.get("pipe_stdout"):
            must(os.path.getsize(str(info["pipe_stdout"])) == expect,
                 f"{info['pipe_stdout']} does not hold {expect} bytes")
        if info.get("collect_output"):
            must(len(node.stdout["localhost"]) == expect, "collected output is short")
    return side


def shell_side(cmd: str, file: Path, expect: int) -> Side:
    def side() -> None:
        done = subprocess.run(["bash", "-c", f"{cmd} > {file}"], check=False)
        must(done.returncode == 0 and file.stat().st_size == expect, f"shell {cmd!r} failed")
    return side


SHELL = "bash: cmd > file"
HANDOVER = "Exec pipe_stdout, hide_output"
COLLECT = "Exec pipe_stdout + collect_output"


def throughput(folder: Path) -> List[Target]:
    size = THROUGHPUT_MIB * MIB
    cmd = f"head -c {size} /dev/zero"
    sides = {
        SHELL: shell_side(cmd, folder / "shell.out", size),
        HANDOVER: exec_side(cmd, size, pipe_stdout=folder / "exec.out"),
        COLLECT: exec_side(cmd, size, pipe_stdout=folder / "collect.out", collect_output=True),
        "Exec collect_output, no file": exec_side(cmd, size, collect_output=True),
    }
    times = interleaved(sides, THROUGHPUT_ROUNDS, THROUGHPUT_BUDGET_SECONDS)
    rounds = len(times[SHELL])
    print(f"\n1. throughput: `{cmd}` ({THROUGHPUT_MIB} MiB), hidden; median of {rounds} "
          "interleaved rounds, ratio to the shell in the same round")
    for name, values in times.items():
        each = ratios(times, name, SHELL)
        median = statistics.median(values)
        print(f"   {name:36} {median:7.3f} s  {size / median / MIB:7.0f} MiB/s"
              f"  {statistics.median(each):6.2f}x  (rounds {min(each):.2f}-{max(each):.2f})")
    for file in folder.glob("*.out"):
        file.unlink()
    contrast_invoke()
    against = "`cmd > file` in bash"
    return [Target(f"{THROUGHPUT_MIB} MiB to pipe_stdout, hidden", against,
                   ratios(times, HANDOVER, SHELL), HANDOVER_TARGET),
            Target(f"{THROUGHPUT_MIB} MiB to pipe_stdout, collected, hidden", against,
                   ratios(times, COLLECT, SHELL), COLLECT_TARGET)]


def invoke_seconds(size_mib: int) -> Optional[float]:
    """invoke's own ``run(hide=True)`` in a child process, or None past the cap."""
    script = textwrap.dedent(f"""
        import time, invoke
        start = time.perf_counter()
        result = invoke.run("head -c {size_mib * MIB} /dev/zero", hide=True)
        assert len(result.stdout) == {size_mib * MIB}
        print(time.perf_counter() - start)
    """)
    try:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              timeout=INVOKE_CAP_SECONDS, check=False)
    except subprocess.TimeoutExpired:
        return None
    must(done.returncode == 0, f"invoke.run at {size_mib} MiB failed: {done.stderr[-500:]}")
    return float(done.stdout)


def contrast_invoke() -> None:
    print(f"   invoke.run(hide=True) for contrast, against Exec(collect_output=True, "
          f"hide_output=True) (both keep the output; cap {INVOKE_CAP_SECONDS:.0f} s):")
    for size_mib in INVOKE_SIZES_MIB:
        cmd = f"head -c {size_mib * MIB} /dev/zero"
        ours = min(interleaved({"exec": exec_side(cmd, size_mib * MIB, collect_output=True)},
                               3)["exec"])
        theirs = invoke_seconds(size_mib)
        shown = f"{theirs:7.2f} s  {theirs / ours:7.0f}x" if theirs is not None \
            else f"> {INVOKE_CAP_SECONDS:.0f} s (stopped)"
        print(f"   {size_mib:5} MiB   Exec {ours:7.3f} s   invoke.run {shown}")
        if theirs is None:
            break


# ---- 2. start-up ----------------------------------------------------------------

BASH_TRUE = "subprocess.run(['bash','-c','true'])"
EXEC_TRUE = "Exec('true', hide_output=True)"


def startup() -> List[Target]:
    info = LocalExecInfo(hide_output=True)
    sides: Dict[str, Side] = {
        BASH_TRUE: lambda: subprocess.run(["bash", "-c", "true"]),
        EXEC_TRUE: lambda: Exec("true", info),
        "subprocess.run('true', shell=True)": lambda: subprocess.run("true", shell=True),
        "invoke.run('true', hide=True)": lambda: invoke.run("true", hide=True),
    }
    for side in sides.values():  # warm-up: imports, caches, invoke's Config
        side()
    times = interleaved(sides, STARTUP_ROUNDS, STARTUP_BUDGET_SECONDS, repeat=STARTUP_BATCH)
    rounds = len(times[EXEC_TRUE])
    print(f"\n2. start-up: median of {rounds} interleaved rounds of {STARTUP_BATCH} calls, "
          "ratio to bash -c true in the same round (bash is the floor: commands run in it)")
    for name, values in times.items():
        each = ratios(times, name, BASH_TRUE)
        print(f"   {name:38} {statistics.median(values) * 1000:7.2f} ms  "
              f"(best {min(values) * 1000:6.2f})  {statistics.median(each):6.2f}x  "
              f"(rounds {min(each):.2f}-{max(each):.2f})")
    return [Target(EXEC_TRUE, "`bash -c true`", ratios(times, EXEC_TRUE, BASH_TRUE),
                   STARTUP_TARGET)]


# ---- 3. memory ---------------------------------------------------------------------

GROWTH_SCRIPT = """
import json, re, sys
from fabexec import Exec, LocalExecInfo

def peak_kib():
    with open("/proc/self/status") as f:
        return int(re.search(r"VmHWM:\\s+(\\d+) kB", f.read()).group(1))

size, path, collect = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "collect"
Exec("echo warm-up", LocalExecInfo(hide_output=True, collect_output=True))
before = peak_kib()
node = Exec(f"head -c {size} /dev/zero", LocalExecInfo(
    pipe_stdout=path, hide_output=True, collect_output=collect))
after = peak_kib()
print(json.dumps({"exit": node.exit_code, "before_kib": before, "after_kib": after}))
"""


def peak_growth_mib(size_mib: int, file: Path, collect: bool) -> float:
    """Growth of the peak RSS of a fresh Python process around one Exec.

    The peak is ``VmHWM`` of /proc/self/status, not ``ru_maxrss``: Linux carries
    ``ru_maxrss`` over an exec from the forking parent, so a child started by a
    process that once held 500 MiB would report 500 MiB before doing anything.
    """
    done = subprocess.run(
        [sys.executable, "-c", GROWTH_SCRIPT, str(size_mib * MIB), str(file),
         "collect" if collect else "stream"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    must(done.returncode == 0, f"memory probe failed: {done.stderr[-500:]}")
    figures = json.loads(done.stdout)
    must(figures["exit"] == 0 and file.stat().st_size == size_mib * MIB,
         "memory probe did not stream the whole output")
    file.unlink()
    return (figures["after_kib"] - figures["before_kib"]) / 1024


def memory(folder: Path) -> None:
    print("\n3. memory: peak RSS growth of a fresh Python process around one Exec")
    growth = peak_growth_mib(MEMORY_STREAM_MIB, folder / "stream.out", collect=False)
    met = "met" if growth < MEMORY_TARGET_MIB else "NOT met"
    print(f"   {MEMORY_STREAM_MIB} MiB to pipe_stdout, not collected  {growth:7.1f} MiB  "
          f"target < {MEMORY_TARGET_MIB} MiB: {met}")
    control = peak_growth_mib(MEMORY_COLLECT_MIB, folder / "collect.out", collect=True)
    print(f"   {MEMORY_COLLECT_MIB} MiB collected (control: must grow)  {control:7.1f} MiB")


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("bench/local.py: terminated"))
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fabexec-bench-local-") as folder:
        print(f"fabexec local benchmark, Python {sys.version.split()[0]}, "
              f"{os.cpu_count()} CPUs, invoke {invoke.__version__}; files in {folder}")
        targets = throughput(Path(folder)) + startup()
        memory(Path(folder))
    print("\ntargets (median of per-round ratios, in this run):")
    for target in targets:
        print(target.row())
    print(f"\n(total {time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
