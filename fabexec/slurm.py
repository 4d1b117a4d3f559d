"""Slurm as the engine: a job step through ``srun`` inside an allocation, a job outside.

Inside an allocation (``SLURM_JOB_ID`` set, as under ``salloc`` or in a
batch script) `StepExecutor` runs the command as one job step on the job's
nodes: slurmd's own tree starts it, not SSH. Results keep PSSH's shape, keyed
by node: each task first prints a marker with its node's name on its stdout;
with ``srun --label`` every line then says which task, hence which node, it
came from, so output is split back per node while it runs (``[node]``
prefixes, ``pipe_stdout`` with ``{host}``; a task's stderr line read before its
marker waits for it). srun's own word of a task (below) also names its node: it
places the tasks whose markers a step ended at once (srun's forced end) never passed on.

Each task's status is srun's own report. Unless the step was cancelled, srun
names every task that fails (``nX: task 2: Exited with exit code 3``; ``nX:
task 1: Killed``, 128+9 here) and exits with 128 + the highest signal, else the
highest exit code; a task it did not name ended with 0 when srun's exit code is
the one the named tasks give (``SLURM_SRUN_REDUCE_TASK_EXIT_MSG``, which has it
name one of like failures only, is kept from srun). ``srun -v`` also names each
task that ends with 0, as it ends (``nX: task 0: Completed``), for 2-4 ms of
client CPU (srun's chatter, read line by line): a step asks for it only when
someone may look before the end (``exec_async``: ``progress()``, ``kill()``; a
``timeout``), so that there ``progress()`` counts nodes as they end and a node
that ended before a kill keeps its 0. A node's exit code is its first failing
task's. The command runs as the rest of the task's ``bash -c`` script: no wrapper
process, no fork, and bash ``exec``s its last command, as ``srun cmd`` by hand
would.

Outside an allocation `BatchExecutor` submits the command as a batch job
(``sbatch --wait --wrap``), like jarvis-util's SlurmExec; its result is keyed
by ``localhost`` (the submitting host, as jarvis-util's), its stdout and
stderr are the job's output files, its exit code the job's, and
``Exec.job_id`` the job id. ``exec_async`` returns once Slurm accepted the
job; ``wait()`` waits for its end. Before submitting, ``sbatch --test-only``
asks Slurm whether the request could ever run, so that a job larger than the
cluster is refused up front instead of waiting forever.

``kill()`` and ``timeout`` end the step or job with ``scancel`` (Slurm ends
every process it tracks on every node). A request Slurm refuses (an unknown
partition, a bad time limit) raises `SchedulerError` naming the keyword, with
Slurm's own message.

``FABEXEC_SLURM_LAUNCHER`` (test-only) is a prefix put before every Slurm
command, e.g. ``nsenter --net=/proc/PID/ns/net``: the test cluster
(`fabexec.sandbox.slurm`) lives in a network namespace of its own.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Dict, List, Optional, Set, Tuple

from .command import Command, shell_script
from .errors import (
    CommandTimeoutError,
    ExecInfoError,
    HostStoppedAnsweringError,
    SchedulerError,
    SlurmStepError,
)
from .hostfile import expand, fold
from .info import ExecInfo, SlurmExecInfo
from .results import LOCALHOST, HostResult
from .tee import Outputs

LAUNCHER_VAR = "FABEXEC_SLURM_LAUNCHER"
_MARK = b"\x1efabexec "
_LABEL = re.compile(rb"^\s*(\d+): ")
_TASK_ERROR = re.compile(rb"^srun: error: (\S+): tasks? ([\d,-]+): (.*)$")
_EXITED = re.compile(r"^Exited with exit code (\d+)$")
#: srun names a task killed by a signal with strsignal(): ``Killed``, ``Terminated``...
_SIGNALS = {signal.strsignal(s): int(s) for s in signal.Signals}
#: Set, srun names only the first of the tasks that end alike: the others would pass as 0.
_REDUCE_VAR = "SLURM_SRUN_REDUCE_TASK_EXIT_MSG"
#: ``srun -v``'s word of tasks that ended with 0 (``launch/slurm: _task_finish: `` first in 22.05).
_COMPLETED = re.compile(rb"^srun: (?:.*: )?(\S+): tasks? ([\d,-]+): Completed$")
#: The controller declared a node DOWN (its slurmd stopped answering) and aborted the step.
_NODE_FAILURE = re.compile(rb"^srun: error: Node failure on (\S+)$")
#: What each task runs before the command, on a line of its own (a syntax error in the
#: command does not stop it): its node and step on stdout (a marker on stderr too cost
#: srun and the reader of its stderr a line per task, 0.4-0.8 ms on 16 nodes). The old
#: wrapper ran the command in a subshell (``( eval "$1" )``) and printed its status
#: after: a fork per task, 3.3 ms of CPU against 2.2 for this, and 1.03-1.10x srun by
#: hand on 16 nodes in paired rounds where this measured 0.99-1.00x.
_PREFIX = (r'printf "\036fabexec %s %s.%s\n" "$SLURMD_NODENAME" "$SLURM_JOB_ID" '
           r'"$SLURM_STEP_ID"' "\n")
#: How long kill() lets srun or sbatch end after scancel before it is killed.
END_GRACE = 30.0


def slurm_executor(cmd: Command, info: ExecInfo):  # -> Executor (exec.py imports us)
    """A job step inside an allocation, else a batch job."""
    if not isinstance(info, SlurmExecInfo):
        info = SlurmExecInfo(**{f: getattr(info, f) for f in info.__dataclass_fields__})
    _check_unsupported(info)
    if os.environ.get("SLURM_JOB_ID"):
        return StepExecutor(cmd, info)
    return BatchExecutor(cmd, info)


def _check_unsupported(info: SlurmExecInfo) -> None:
    for name in ("sudo_password", "watchers"):
        if getattr(info, name):
            raise ExecInfoError(name, "not supported with SLURM: the command runs under "
                                "slurmd, which gives it no terminal to answer")


#: (command, PATH) pairs where the command was found: a step looks srun up once, not once
#: a run (which() stats every folder of PATH: 60-100 us, most of a step's set-up here).
_FOUND: Set[Tuple[str, Optional[str]]] = set()


def slurm_command(name: str) -> List[str]:
    """``name`` with the launcher prefix; `SchedulerError` when Slurm is not installed."""
    path = os.environ.get("PATH")
    if (name, path) not in _FOUND:
        if shutil.which(name, path=path) is None:
            raise SchedulerError("exec_type", f"`{name}` is not on PATH ({path or ''}): install "
                                 "the scheduler's client commands (Debian: slurm-client, "
                                 "slurm-wlm-torque)")
        _FOUND.add((name, path))
    return [*shlex.split(os.environ.get(LAUNCHER_VAR, "")), name]


def run_client(name: str, *args: str) -> subprocess.CompletedProcess:
    """A Slurm (or PBS) client command, run to its end, with the launcher prefix."""
    return subprocess.run([*slurm_command(name), *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120)


def _common_options(info: SlurmExecInfo) -> List[str]:
    """Options a job and a step both take."""
    opts = [f"--{flag}={getattr(info, key)}" for key, flag in (
        ("job_name", "job-name"), ("cpus_per_task", "cpus-per-task"), ("time", "time"),
        ("mem", "mem"), ("gres", "gres"), ("nprocs", "ntasks"),
        ("ppn", "ntasks-per-node")) if getattr(info, key) is not None]
    return opts + (["--exclusive"] if info.exclusive else [])


# --- what Slurm refused, named by keyword ---------------------------------------------

_REFUSALS: List[Tuple[str, Tuple[str, ...]]] = [
    (r"partition", ("partition",)),
    (r"--time|time limit", ("time",)),
    (r"mail-type", ("mail_type",)),
    (r"mail-user|mail user", ("mail_user",)),
    (r"gres|generic resource", ("gres",)),
    (r"[Mm]emory|--mem", ("mem",)),
    (r"account", ("account",)),
    (r"node name|nodelist", ("nodelist",)),
    (r"[Nn]ode count", ("num_nodes",)),
    (r"CPU count|cpus-per-task", ("cpus_per_task", "ppn", "nprocs")),
    (r"node configuration is not available",
     ("num_nodes", "nodelist", "ppn", "nprocs", "cpus_per_task", "mem", "gres", "exclusive")),
]


def refusal(info: ExecInfo, message: str,
            refusals: List[Tuple[str, Tuple[str, ...]]] = _REFUSALS) -> SchedulerError:
    """Slurm's refusal as a `SchedulerError` naming the keyword it is about."""
    message = " / ".join(line.strip() for line in message.strip().splitlines()) \
        or "refused, without a message"
    for pattern, fields in refusals:
        if re.search(pattern, message):
            given = [f for f in fields if getattr(info, f) not in (None, False)]
            if given:
                values = ", ".join(f"{f}={getattr(info, f)!r}" for f in given)
                return SchedulerError(given[0], f"Slurm refused {values}: {message}")
    return SchedulerError("exec_type", f"Slurm refused the request: {message}")


# --- inside an allocation: a job step ---------------------------------------------------


class StepExecutor:
    """The command as one ``srun`` job step on the allocation's nodes."""

    def __init__(self, cmd: Command, info: SlurmExecInfo) -> None:
        self.info, self.job_id = info, os.environ["SLURM_JOB_ID"]
        self.nodes = _step_nodes(info, self.job_id)
        suffix = info.host_suffix or ""
        self.host_of = {node: node + suffix for node in self.nodes}
        self.hosts = list(self.host_of.values())
        script = shell_script(cmd, info.env, info.cwd, info.sudo, info.sudoenv)
        tasks = [] if info.ppn or info.nprocs else ["--ntasks-per-node=1"]
        verbose = ["-v"] if info.exec_async or info.timeout is not None else []
        self.argv = [*slurm_command("srun"), *verbose, f"--jobid={self.job_id}", "--label",
                     f"--nodes={len(self.nodes)}", f"--nodelist={','.join(self.nodes)}",
                     *tasks, *_common_options(info),
                     "--input=all" if info.stdin is not None else "--input=none",
                     "bash", "-c", _PREFIX + script]
        self.cmd = script
        self.node_of: Dict[int, str] = {}  # task -> node, from its markers
        self.unmarked: Dict[int, List[bytes]] = {}  # task -> stderr read before its marker
        self.codes: Dict[int, int] = {}  # task -> exit status, as srun reported it
        self.signals: Dict[int, int] = {}  # task -> the signal that ended it
        self.reasons: Dict[str, List[str]] = {}  # node -> what srun said of it
        self.failed_nodes: List[str] = []  # nodes Slurm declared failed mid-step
        self.messages: List[str] = []  # srun's other words
        self.step: Optional[str] = None
        self.killed = self.timed_out = False
        self._lock = threading.Lock()

    def start(self, outputs: Outputs) -> None:
        self.outputs = outputs
        env = None
        if _REDUCE_VAR in os.environ:
            env = {k: v for k, v in os.environ.items() if k != _REDUCE_VAR}
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True, env=env)
        self.readers = [threading.Thread(target=self._read, args=(pipe, name), daemon=True,
                                         name=f"fabexec-srun-{name}")
                        for pipe, name in ((self.proc.stdout, "stdout"),
                                           (self.proc.stderr, "stderr"))]
        for reader in self.readers:
            reader.start()
        _feed(self.proc.stdin, self.info.stdin)
        self.timer = timer(self.info.timeout, self._time_out)

    def _read(self, pipe: IO[bytes], stream: str) -> None:
        nodes: Dict[int, str] = {}  # the tasks whose marker this reader knows of
        for line in pipe:
            label = _LABEL.match(line)
            if label is None:
                self._srun_said(line)
                continue
            task, text = int(label[1]), line[label.end():]
            if text.startswith(_MARK):  # on stdout
                words = text[len(_MARK):].decode(errors="replace").split()
                nodes[task] = words[0]
                with self._lock:  # stderr's reader sees the node after its early lines
                    self.node_of[task] = words[0]
                    self.step = words[1] if len(words) > 1 else self.step
                    self._write(task, "stderr", *self.unmarked.pop(task, []))
                continue
            if stream == "stderr" and task not in nodes:
                with self._lock:
                    if task not in self.node_of:  # its marker is not read yet
                        self.unmarked.setdefault(task, []).append(text)
                        continue
                    nodes[task] = self.node_of[task]
            self._write(task, stream, text)

    def _write(self, task: int, stream: str, *lines: bytes) -> None:
        tee = self.outputs.tees[self.host_of.get(self.node_of.get(task, ""), self.hosts[0])]
        for line in lines:
            tee[stream].write(line)

    def _srun_said(self, line: bytes) -> None:
        line = line.rstrip(b"\n")
        failure = _NODE_FAILURE.match(line)
        if failure is not None:
            self.failed_nodes += expand(failure[1].decode(errors="replace"))  # n[2-3] too
            return
        completed = _COMPLETED.match(line)
        if completed is not None:
            self._ended(completed[1].decode(errors="replace"), completed[2].decode(), 0)
            return
        task_error = _TASK_ERROR.match(line)
        if task_error is not None:
            node, tasks, what = (w.decode(errors="replace") for w in task_error.groups())
            exited = _EXITED.match(what)
            if exited is not None:
                self._ended(node, tasks, int(exited[1]))
                return
            signum = _SIGNALS.get(what.replace(" (core dumped)", ""))
            if signum is not None:
                self._ended(node, tasks, 128 + signum, signum)
            self.reasons.setdefault(node, []).append(what)
        elif not line.startswith(b"srun: ") or re.search(rb"error|fatal", line, re.I):
            self.messages.append(line.decode(errors="replace").strip())  # not -v's chatter

    def _ended(self, node: str, tasks: str, code: int, signum: int = 0) -> None:
        with self._lock:  # after kill(), a status is the kill's, not the command's
            if not self.killed:
                for task in _task_ids(tasks):
                    # srun's word places a task whose marker never came: a task killed
                    # by a signal makes srun force-terminate the step, and one ended
                    # within milliseconds of its start loses every task's output
                    self.node_of.setdefault(task, node)
                    self.codes[task] = code
                    if signum:
                        self.signals[task] = signum

    def _time_out(self) -> None:
        self.timed_out = True
        self.kill()

    def kill(self) -> None:
        """scancel the step (slurmd ends its processes on every node); srun then ends."""
        proc = getattr(self, "proc", None)
        if proc is None or proc.poll() is not None:
            return
        self.killed = True
        if self.step is not None:
            run_client("scancel", self.step)
        else:  # no task started yet: srun gives up the step it waits for
            proc.send_signal(signal.SIGTERM)

    def wait(self) -> Dict[str, HostResult]:
        _end(self.proc, self.kill)
        for reader in self.readers:
            reader.join()
        for task in list(self.unmarked):  # no marker came (a task that died at once)
            self._write(task, "stderr", *self.unmarked.pop(task))
        if self.timer is not None:
            self.timer.cancel()
        self.results = {self.host_of[node]: self._result(node) for node in self.nodes}
        return self.results

    def ended(self) -> Dict[str, HostResult]:
        """Every node once the step ended (srun may still pass on a node's output after
        its task's status), none before."""
        return dict(getattr(self, "results", {}))

    def _result(self, node: str) -> HostResult:
        host = self.host_of[node]
        tasks = [t for t, n in self.node_of.items() if n == node]
        codes = [self._code(t) for t in tasks]
        if tasks and None not in codes and node not in self.reasons:
            return HostResult(next((c for c in codes if c), 0))
        if not tasks and node not in self.failed_nodes and not self.messages \
                and self._unnamed_ended_with_0():  # srun named none here, nor erred
            return HostResult(0)
        if self.timed_out:
            return HostResult.of(CommandTimeoutError(host, f"timed out after "
                                                     f"{self.info.timeout} s; the step was "
                                                     "cancelled (scancel)"))
        if node in self.failed_nodes:  # as PSSH's host that stops answering: 255
            return HostResult.of(HostStoppedAnsweringError(
                host, f"Slurm declared {node} failed mid-step (its slurmd stopped answering "
                "the controller: `srun: error: Node failure`); the step was aborted"))
        why = self.reasons.get(node) or self.messages or [f"srun exited {self.proc.returncode}"]
        if self.killed:
            why = ["ended by kill() (scancel)", *why]
        started = "" if tasks else "no task started here: "
        code = next((c for c in codes if c), exit_status(self.proc.returncode))  # 128+signal
        return HostResult(code, SlurmStepError(host, started + "; ".join(why)))

    def _code(self, task: int) -> Optional[int]:
        """The task's status as srun reported it, else 0 when srun exited with the status
        the reported ones give (128 + the highest signal, else the highest exit code): srun
        names every task that failed, but not one a kill() or a node failure ended
        unseen, nor, without -v, one that ended with 0. None: unknown."""
        if task in self.codes:
            return self.codes[task]
        if self.node_of.get(task) in self.failed_nodes:
            return None
        return 0 if self._unnamed_ended_with_0() else None

    def _unnamed_ended_with_0(self) -> bool:
        """srun exited with the status its named tasks give, so it named every failure."""
        if self.killed:
            return False
        signals = self.signals.values()
        given = 128 + max(signals) if signals else max(self.codes.values(), default=0)
        return self.proc.returncode == given

    def progress(self) -> Tuple[int, int, int]:
        with self._lock:
            done = {n for t, n in self.node_of.items() if t in self.codes}
            failed = {n for t, n in self.node_of.items() if self.codes.get(t)}
        if getattr(self, "proc", None) is not None and self.proc.poll() is not None:
            return len(self.nodes), len(failed), len(self.nodes)
        return len(done), len(failed), len(self.nodes)


def _task_ids(ranges: str) -> List[int]:
    """srun's task list, e.g. ``0,2-3``, as numbers."""
    ids: List[int] = []
    for part in ranges.split(","):
        first, _, last = part.partition("-")
        ids += range(int(first), int(last or first) + 1)
    return ids


def _step_nodes(info: SlurmExecInfo, job_id: str) -> List[str]:
    """The nodes the step runs on: ``nodelist``, else the allocation's first ``num_nodes``."""
    listed = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST")
    if not listed:
        raise SchedulerError("exec_type", f"SLURM_JOB_ID={job_id} is set but not "
                             "SLURM_JOB_NODELIST: cannot tell the job's nodes")
    alloc = expand(listed)
    if info.nodelist is not None:
        outside = [n for n in info.nodelist if n not in alloc]
        if outside:
            raise ExecInfoError("nodelist", f"{fold(outside)} not in job {job_id}'s nodes "
                                f"{fold(alloc)}")
        rest = [n for n in alloc if n not in info.nodelist]
        return list(info.nodelist) + rest[: max(0, (info.num_nodes or 0) - len(info.nodelist))]
    count = info.num_nodes or len(alloc)
    if count > len(alloc):
        raise ExecInfoError("num_nodes", f"{count} nodes asked, but job {job_id} has "
                            f"{len(alloc)}: {fold(alloc)}")
    return alloc[:count]


# --- outside an allocation: a batch job --------------------------------------------------


class BatchExecutor:
    """The command as a batch job: ``sbatch --wait --wrap``, output read back at its end."""

    def __init__(self, cmd: Command, info: SlurmExecInfo) -> None:
        self.info = info
        self.host = LOCALHOST
        self.hosts = [self.host]
        self.cmd = shell_script(cmd, info.env, info.cwd, info.sudo, info.sudoenv)
        opts = _common_options(info) + [f"--{flag}={getattr(info, key)}" for key, flag in (
            ("num_nodes", "nodes"), ("partition", "partition"), ("mail_type", "mail-type"),
            ("mail_user", "mail-user"), ("account", "account")) if getattr(info, key)]
        if info.nodelist is not None:
            opts.append(f"--nodelist={','.join(info.nodelist)}")
        self.options = opts
        self.sbatch = slurm_command("sbatch")
        self.job_id: Optional[str] = None
        self.killed = self.timed_out = False

    def start(self, outputs: Outputs) -> None:
        self.outputs = outputs
        test = run_client("sbatch", "--test-only", *self.options, "--wrap=true")
        if test.returncode:
            raise refusal(self.info, test.stderr or test.stdout)
        folder = Path.home() / ".cache" / "fabexec" / "slurm-jobs"  # shared with nodes, as
        folder.mkdir(parents=True, exist_ok=True)  # a home usually is; /tmp is node-local
        self.folder = tempfile.mkdtemp(dir=folder)
        script = (f"bash -c {shlex.quote(self.cmd)}; rc=$?; "
                  f"echo $rc > {shlex.quote(self.folder)}/rc; exit $rc")
        self.proc = subprocess.Popen(
            [*self.sbatch, "--parsable", "--wait", *self.options,
             f"--output={self.folder}/out", f"--error={self.folder}/err", "--wrap", script],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True)
        first = self.proc.stdout.readline().decode(errors="replace").strip()
        if not first:  # refused: sbatch ended without a job id
            message = self.proc.stderr.read().decode(errors="replace")
            self.proc.wait()
            shutil.rmtree(self.folder, ignore_errors=True)
            raise refusal(self.info, message)
        self.job_id = first.split(";")[0]
        self.timer = timer(self.info.timeout, self._time_out)
        threading.Thread(target=self._watch, daemon=True, name="fabexec-sbatch-wait").start()

    def _watch(self) -> None:
        """End ``sbatch --wait`` as soon as the job left the queue.

        sbatch polls Slurm only every 2 to 10 s. The job's script writes its
        status last, to a file (no RPC to watch it); once it is there, or
        once kill() cancelled the job, the queue is asked until the job left it.
        """
        rc = Path(self.folder, "rc")
        while self.proc.poll() is None:
            if (self.killed or rc.exists()) and not run_client(
                    "squeue", "-h", "-j", self.job_id, "-o", "%T").stdout.strip():
                self.proc.terminate()
                return
            time.sleep(0.05)

    def _time_out(self) -> None:
        self.timed_out = True
        self.kill()

    def kill(self) -> None:
        proc = getattr(self, "proc", None)
        if proc is None or proc.poll() is not None or self.job_id is None:
            return
        self.killed = True
        run_client("scancel", self.job_id)

    def wait(self) -> Dict[str, HostResult]:
        _end(self.proc, self.kill)
        if self.timer is not None:
            self.timer.cancel()
        said = self.proc.stderr.read()
        tees = self.outputs.tees[self.host]
        for name in ("out", "err"):
            try:
                data = Path(self.folder, name).read_bytes()
            except OSError:
                data = b""
            tees["stdout" if name == "out" else "stderr"].write(data)
        tees["stderr"].write(said)
        code = exit_status(self.proc.returncode)
        try:  # the job's own status: sbatch's is lost when _watch ended it
            code = int(Path(self.folder, "rc").read_text())
        except (OSError, ValueError):
            pass
        shutil.rmtree(self.folder, ignore_errors=True)
        if self.timed_out:
            result = HostResult.of(CommandTimeoutError(
                self.host, f"job {self.job_id} timed out after {self.info.timeout} s and was "
                "cancelled (scancel)"))
        elif self.killed:
            result = HostResult(code or 1, SlurmStepError(
                self.host, f"job {self.job_id} ended by kill() (scancel)"))
        else:
            result = HostResult(code)
        self.results = {self.host: result}
        return self.results

    def progress(self) -> Tuple[int, int, int]:
        proc = getattr(self, "proc", None)
        if proc is None or proc.poll() is None:
            return 0, 0, 1
        return 1, int(bool(proc.returncode)), 1

    def ended(self) -> Dict[str, HostResult]:
        """The job's result once its output files were read (after `wait`)."""
        return dict(getattr(self, "results", {}))


# --- shared -------------------------------------------------------------------------------


def _feed(pipe: IO[bytes], stdin: object) -> None:
    """Give srun ``stdin`` (every task reads it: ``--input=all``), then end it."""
    if stdin is None:
        pipe.close()
        return
    data = stdin.read() if hasattr(stdin, "read") else stdin
    data = data.encode() if isinstance(data, str) else data

    def write() -> None:
        try:
            pipe.write(data)
            pipe.close()
        except OSError:  # srun ended first
            pass

    threading.Thread(target=write, daemon=True, name="fabexec-srun-stdin").start()


def timer(seconds: Optional[float], action) -> Optional[threading.Timer]:
    if seconds is None:
        return None
    timer = threading.Timer(seconds, action)
    timer.daemon = True
    timer.start()
    return timer


def _end(proc: subprocess.Popen, kill) -> None:
    """Wait for srun or sbatch; on ^C, cancel what it runs first, then re-raise."""
    try:
        proc.wait()
    except BaseException:
        kill()
        try:
            proc.wait(END_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    if proc.returncode is None:  # pragma: no cover - wait() returned
        proc.kill()


def exit_status(returncode: Optional[int]) -> int:
    if returncode is None:
        return 255
    return 128 - returncode if returncode < 0 else returncode
