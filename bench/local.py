"""Local speed and memory: ``Exec`` against a plain shell, measured in one run.

Prints the three targets of the local-core issue, each as a ratio against a
baseline measured in the same run, with PASS/FAIL (never an assertion):

1. throughput: 256 MiB of output into ``pipe_stdout`` with ``hide_output=True``
   against ``bash -c 'head -c 256M /dev/zero > file'``; target <= 1.5x. Also
   with ``collect_output=True``, and invoke's own ``run(hide=True)`` for
   contrast (capped: its reader is quadratic and would take minutes at 16 MiB);
2. start-up: ``Exec('true', LocalExecInfo(hide_output=True))`` against
   ``subprocess.run('true', shell=True)``; target <= 2x. ``bash -c true`` and
   ``invoke.run('true')`` are printed as references (fabexec must run bash);
3. memory: streaming 1 GiB into a file without collecting grows the peak RSS
   (VmHWM) of a fresh Python process by less than 64 MiB. Collecting 256 MiB is shown as
   the control that proves the measure sees growth when there is some.

Sides alternate their order each round, so that a slow moment of the machine
hits all of them; throughput compares the best round of each side, start-up
the medians. Files go to a temporary folder, removed at the end. About a
minute and a half: ``python bench/local.py`` or ``inv bench local``.
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
from pathlib import Path
from typing import Callable, Dict, List, Optional

import invoke

from fabexec import Exec, LocalExecInfo

MIB = 1024 * 1024
THROUGHPUT_MIB = 256
THROUGHPUT_ROUNDS = 4
THROUGHPUT_BUDGET_SECONDS = 30.0
THROUGHPUT_TARGET = 1.5
INVOKE_SIZES_MIB = (1, 2, 4, 16)
INVOKE_CAP_SECONDS = 25.0
STARTUP_ROUNDS = 15
STARTUP_BATCH = 20
STARTUP_BUDGET_SECONDS = 25.0
STARTUP_TARGET = 2.0
MEMORY_STREAM_MIB = 1024
MEMORY_COLLECT_MIB = 256
MEMORY_TARGET_MIB = 64

Side = Callable[[], None]


def interleaved(sides: Dict[str, Side], rounds: int, budget: Optional[float] = None,
                repeat: int = 1) -> Dict[str, List[float]]:
    """Seconds per call of each side, one figure per round; the order rotates each round."""
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
        if deadline is not None and time.monotonic() > deadline:
            break
    return times


def verdict(ratio: float, target: float) -> str:
    return "PASS" if ratio <= target else "FAIL"


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


def throughput(folder: Path) -> None:
    size = THROUGHPUT_MIB * MIB
    cmd = f"head -c {size} /dev/zero"
    sides = {
        "plain shell: cmd > file": shell_side(cmd, folder / "shell.out", size),
        "Exec pipe_stdout, hide_output": exec_side(cmd, size, pipe_stdout=folder / "exec.out"),
        "Exec pipe_stdout + collect_output": exec_side(
            cmd, size, pipe_stdout=folder / "collect.out", collect_output=True),
    }
    times = interleaved(sides, THROUGHPUT_ROUNDS, THROUGHPUT_BUDGET_SECONDS)
    base = min(times["plain shell: cmd > file"])
    rounds = len(times["plain shell: cmd > file"])
    print(f"\n1. throughput: `{cmd}` ({THROUGHPUT_MIB} MiB), best of {rounds} "
          "interleaved rounds")
    for name, values in times.items():
        ratio = min(values) / base
        mark = f"target <= {THROUGHPUT_TARGET}x: {verdict(ratio, THROUGHPUT_TARGET)}" \
            if name == "Exec pipe_stdout, hide_output" else ""
        print(f"   {name:36} {min(values):7.3f} s  {size / min(values) / MIB:7.0f} MiB/s"
              f"  {ratio:6.2f}x  {mark}")
    for file in folder.glob("*.out"):
        file.unlink()
    contrast_invoke()


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

def startup() -> None:
    info = LocalExecInfo(hide_output=True)
    sides: Dict[str, Side] = {
        "subprocess.run('true', shell=True)": lambda: subprocess.run("true", shell=True),
        "Exec('true', hide_output=True)": lambda: Exec("true", info),
        "subprocess.run(['bash','-c','true'])": lambda: subprocess.run(["bash", "-c", "true"]),
        "invoke.run('true', hide=True)": lambda: invoke.run("true", hide=True),
    }
    for side in sides.values():  # warm-up: imports, caches, invoke's Config
        side()
    times = interleaved(sides, STARTUP_ROUNDS, STARTUP_BUDGET_SECONDS, repeat=STARTUP_BATCH)
    median = {name: statistics.median(values) for name, values in times.items()}
    base = median["subprocess.run('true', shell=True)"]
    rounds = len(times["Exec('true', hide_output=True)"])
    print(f"\n2. start-up: median of {rounds} interleaved rounds of {STARTUP_BATCH} calls")
    for name, values in times.items():
        ratio = median[name] / base
        mark = f"target <= {STARTUP_TARGET}x: {verdict(ratio, STARTUP_TARGET)}" \
            if name.startswith("Exec") else ""
        print(f"   {name:38} {median[name] * 1000:7.2f} ms  "
              f"(best {min(values) * 1000:6.2f})  {ratio:6.2f}x  {mark}")
    over_bash = median["Exec('true', hide_output=True)"] / median[
        "subprocess.run(['bash','-c','true'])"]
    print(f"   Exec against bash -c true (what it must start anyway): {over_bash:.2f}x")


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
    print(f"   {MEMORY_STREAM_MIB} MiB to pipe_stdout, not collected  {growth:7.1f} MiB  "
          f"target < {MEMORY_TARGET_MIB} MiB: {'PASS' if growth < MEMORY_TARGET_MIB else 'FAIL'}")
    control = peak_growth_mib(MEMORY_COLLECT_MIB, folder / "collect.out", collect=True)
    print(f"   {MEMORY_COLLECT_MIB} MiB collected (control: must grow)  {control:7.1f} MiB")


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("bench/local.py: terminated"))
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fabexec-bench-local-") as folder:
        print(f"fabexec local benchmark, Python {sys.version.split()[0]}, "
              f"{os.cpu_count()} CPUs, invoke {invoke.__version__}; files in {folder}")
        throughput(Path(folder))
        startup()
        memory(Path(folder))
    print(f"\n(total {time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
