"""Ctrl-C in a program running a Slurm step or a batch job it waits for: Slurm ends it
everywhere (no step, no job in ``squeue``) and no process is left on any node."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.proctree import eventually, sleeping
from tests.test_slurm import no_step_but_the_allocation

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent


def tagged(tag: str) -> list:
    """Every process whose command line names ``tag``: srun/sbatch, the tasks' shells, sleeps."""
    found = subprocess.run(["pgrep", "-f", tag], capture_output=True, text=True, timeout=30)
    return found.stdout.split()


def interrupted(tag: str, started) -> subprocess.CompletedProcess:
    """A child interpreter running ``sleep {tag}`` through SLURM, sent SIGINT once started."""
    program = ("from fabexec import Exec, SlurmExecInfo\n"
               f"Exec('sleep {tag}', SlurmExecInfo(num_nodes=2, collect_output=True, "
               "hide_output=True))\n")
    child = subprocess.Popen([sys.executable, "-c", program], cwd=ROOT, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)},
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert eventually(lambda: started() or child.poll() is not None)
        assert child.poll() is None, child.stderr.read()
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(30)
    return subprocess.CompletedProcess(child.args, child.returncode, "", err)


def test_ctrl_c_during_a_step_cancels_it_on_every_node(allocation, slurm, tag):
    done = interrupted(tag, lambda: len(sleeping(tag)) == 2)
    assert done.returncode != 0 and "KeyboardInterrupt" in done.stderr, done.stderr
    assert no_step_but_the_allocation(slurm)  # cancelled before the child exited
    assert eventually(lambda: tagged(tag) == [], 15)


def test_ctrl_c_during_a_batch_job_cancels_the_job(slurm, tag):
    done = interrupted(tag, lambda: len(sleeping(tag)) == 1)
    assert done.returncode != 0 and "KeyboardInterrupt" in done.stderr, done.stderr
    assert eventually(lambda: slurm.run("squeue", "-h", "-o", "%i").stdout == "", 15)
    assert eventually(lambda: tagged(tag) == [], 15)
