"""PBS: the command as a batch job submitted with ``qsub``, jarvis-util's PbsExec.

The result has the shape of a Slurm batch job's (`fabexec.slurm`): keyed by
``localhost`` (the submitting host), stdout and stderr the job's output files,
the exit code the job script's own (it writes it last, to a file next to its
output: PBS's ``qsub`` cannot wait for a job and report its status), and
``Exec.job_id``. The end of the job is seen by ``qstat`` (state ``C``, or the
job gone), asked when the status file appeared, on ``kill()`` (``qdel``) and
once a second otherwise. A request the scheduler refuses raises
`SchedulerError` naming the keyword (``queue``, ``walltime``...).

Tested only through the PBS commands that Debian's ``slurm-wlm-torque`` puts on
top of a real Slurm cluster (`fabexec.sandbox.slurm`): OpenPBS and Torque
cannot be installed on the test machine.
"""

from __future__ import annotations

import re
import shlex
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .command import Command, shell_script
from .errors import CommandTimeoutError, SchedulerJobError
from .info import ExecInfo
from .results import LOCALHOST, HostResult
from .slurm import refusal, run_client, slurm_command, timer
from .tee import Outputs

#: How the scheduler's words map to PBS keywords (Slurm's wrapper speaks of partitions).
_REFUSALS: List[Tuple[str, Tuple[str, ...]]] = [
    (r"partition|queue", ("queue",)),
    (r"time limit|walltime|--time", ("walltime",)),
    (r"account", ("account",)),
    (r"[Nn]ode count|node configuration", ("nnodes", "system")),
]
_STATE = re.compile(r"job_state = (\w+)")
#: How often a job that wrote no status yet is looked at with qstat.
POLL = 1.0


class PbsExecutor:
    """One ``qsub`` job, watched until it left the queue."""

    def __init__(self, cmd: Command, info: ExecInfo) -> None:
        self.info = info
        self.host = LOCALHOST
        self.hosts = [self.host]
        self.cmd = shell_script(cmd, info.env, info.cwd, info.sudo, info.sudoenv)
        self.qsub = slurm_command("qsub")
        resources = [f"select={info.nnodes or 1}"
                     + (f":system={info.system}" if info.system else "")]
        resources += [f"{k}={getattr(info, k)}" for k in ("walltime", "filesystems")
                      if getattr(info, k)]
        self.options = ["-l", ",".join(resources)]  # one -l: Slurm's qsub keeps the last
        for key, flag in (("account", "-A"), ("queue", "-q"), ("env_vars", "-v")):
            if getattr(info, key):
                self.options += [flag, getattr(info, key)]
        self.job_id: Optional[str] = None
        self.killed = self.timed_out = False
        self.finished = threading.Event()

    def start(self, outputs: Outputs) -> None:
        self.outputs = outputs
        folder = Path.home() / ".cache" / "fabexec" / "pbs-jobs"  # a home is shared with
        folder.mkdir(parents=True, exist_ok=True)  # the nodes; /tmp is node-local
        self.folder = tempfile.mkdtemp(dir=folder)
        script = Path(self.folder, "job.sh")
        script.write_text(f"#!/bin/bash\nbash -c {shlex.quote(self.cmd)}\nrc=$?\n"
                          f"echo $rc > {shlex.quote(self.folder)}/rc\nexit $rc\n")
        script.chmod(0o755)
        proc = run_client("qsub", *self.options, "-o", f"{self.folder}/out",
                          "-e", f"{self.folder}/err", str(script))
        lines = proc.stdout.strip().splitlines()
        if proc.returncode or not lines:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise refusal(self.info, _slurm_said(proc.stdout + proc.stderr), _REFUSALS)
        self.job_id = lines[-1].strip()
        self.timer = timer(self.info.timeout, self._time_out)
        threading.Thread(target=self._watch, daemon=True, name="fabexec-qstat").start()

    def _watch(self) -> None:
        rc, last = Path(self.folder, "rc"), 0.0
        while True:
            if self.killed or rc.exists() or time.monotonic() - last > POLL:
                last = time.monotonic()
                if not self._queued():
                    self.finished.set()
                    return
            time.sleep(0.05)

    def _queued(self) -> bool:
        """True while qstat knows the job and it has not completed."""
        proc = run_client("qstat", "-f", self.job_id)
        state = _STATE.search(proc.stdout)
        return proc.returncode == 0 and state is not None and state[1] not in ("C", "F")

    def _time_out(self) -> None:
        self.timed_out = True
        self.kill()

    def kill(self) -> None:
        if self.job_id is None or self.finished.is_set():
            return
        self.killed = True
        run_client("qdel", self.job_id)

    def wait(self) -> Dict[str, HostResult]:
        try:
            self.finished.wait()
        except BaseException:
            self.kill()
            raise
        if self.timer is not None:
            self.timer.cancel()
        tees = self.outputs.tees[self.host]
        for name, stream in (("out", "stdout"), ("err", "stderr")):
            path = Path(self.folder, name)
            if path.exists():
                tees[stream].write(path.read_bytes())
        status = Path(self.folder, "rc")
        code = int(status.read_text()) if status.exists() else None
        shutil.rmtree(self.folder, ignore_errors=True)
        if self.timed_out:
            result = HostResult.of(CommandTimeoutError(
                self.host, f"job {self.job_id} timed out after {self.info.timeout} s and was "
                "deleted (qdel)"))
        elif code is None:
            why = "deleted by kill() (qdel)" if self.killed else "ended without a status"
            result = HostResult(1, SchedulerJobError(self.host, f"job {self.job_id} {why}"))
        else:
            result = HostResult(code)
        self.results = {self.host: result}
        return self.results

    def progress(self) -> Tuple[int, int, int]:
        return (1, 0, 1) if self.finished.is_set() else (0, 0, 1)

    def ended(self) -> Dict[str, HostResult]:
        """The job's result once its output files were read (after `wait`)."""
        return dict(getattr(self, "results", {}))


def _slurm_said(output: str) -> str:
    """The scheduler's own error lines (Slurm's wrapper quotes them inside its own text)."""
    said = [line.strip(" '") for line in output.splitlines() if "error:" in line]
    return "\n".join(said) or output

