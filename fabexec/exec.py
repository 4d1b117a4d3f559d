"""`Exec`: run a command the way its `ExecInfo` says, and keep the results."""

from __future__ import annotations

import os
import sys
import threading
import time
import weakref
from typing import Dict, List, Optional, Protocol, Tuple

from . import interrupts
from .command import Command
from .defaults import DEFAULTS
from .info import ExecInfo, ExecType, LocalExecInfo
from .local import LocalExecutor
from .results import HostResult, HostResults, run_hosts, split_local
from .stdin import StdinSource
from .tee import Outputs


class Executor(Protocol):
    """One way of running: started once, then waited for or killed."""

    cmd: str
    hosts: List[str]

    def start(self, outputs: Outputs) -> None: ...
    def wait(self) -> Dict[str, HostResult]: ...
    def kill(self) -> None: ...
    def progress(self) -> Tuple[int, int, int]: ...
    def ended(self) -> Dict[str, HostResult]: ...


def executor_for(cmd: Command, info: ExecInfo) -> Executor:
    """The executor for ``info.exec_type`` and its hosts (see `fabexec.results`)."""
    if info.exec_type is ExecType.LOCAL:
        return LocalExecutor(cmd, info)
    if info.exec_type is ExecType.SLURM:
        from .slurm import slurm_executor
        return slurm_executor(cmd, info)
    if info.exec_type is ExecType.PBS:
        from .pbs import PbsExecutor
        return PbsExecutor(cmd, info)
    if info.exec_type.is_mpi:
        from .mpi import MpiExecutor
        return MpiExecutor(cmd, info)
    hosts = run_hosts(info)
    here, remote = split_local(hosts, info)
    stdin = StdinSource(info.stdin, len(hosts))  # one source: every host reads it whole
    parts: List[Executor] = [LocalExecutor(cmd, info, host=host, stdin=stdin) for host in here]
    if remote and (info.gateways or info.topology):
        from .tree import tree_executors
        parts[:0] = tree_executors(cmd, info, remote, stdin)
    elif remote:
        from .pssh import PsshExecutor
        parts.insert(0, PsshExecutor(cmd, info, remote, stdin))
    return parts[0] if len(parts) == 1 else Together(parts, hosts)


class Together:
    """Executors of one command on different hosts (remote ones, this machine), as one.

    The remote hosts start first: they fan out in the background while a
    local command the caller waits for runs to its end.
    """

    def __init__(self, parts: List[Executor], hosts: List[str]) -> None:
        self.parts, self.hosts, self.cmd = parts, hosts, parts[0].cmd

    def start(self, outputs: Outputs) -> None:
        for part in self.parts:
            part.start(outputs)

    def wait(self) -> Dict[str, HostResult]:
        results: Dict[str, HostResult] = {}
        for part in self.parts:
            results.update(part.wait())
        return results

    def kill(self) -> None:
        for part in self.parts:
            part.kill()

    def progress(self) -> Tuple[int, int, int]:
        done, failed, total = zip(*(part.progress() for part in self.parts))
        return sum(done), sum(failed), sum(total)

    def ended(self) -> Dict[str, HostResult]:
        return {host: result for part in self.parts for host, result in part.ended().items()}


class Run:
    """The part of an `Exec` that lives as long as its command: executor and outputs.

    `interrupts` holds the run, not the `Exec`, so an async `Exec` that the
    caller drops without ``wait()`` is collected: the run then waits for the
    command in the background (it goes on; its output still reaches its files)
    and releases what it held (channels, descriptors, connections, the local
    child) once it ended, instead of pinning them for the life of the process.
    """

    def __init__(self, executor: Executor, outputs: Outputs) -> None:
        self.executor, self.outputs = executor, outputs
        self.results: Optional[Dict[str, HostResult]] = None
        self._lock = threading.RLock()

    def finish(self) -> Dict[str, HostResult]:
        """Wait for every host; say each host's error on its stderr; close the outputs."""
        with self._lock:
            if self.results is not None:
                return self.results
            try:
                results = self.executor.wait()
            except BaseException as e:  # ^C or SIGTERM: end the command everywhere first
                self.abandon(e)
                raise
            for host, result in results.items():
                if result.error is not None:  # the reason goes with the host's own stderr
                    self.outputs.tees[host]["stderr"].write(f"fabexec: {result.error}\n".encode())
            for error in self.outputs.close():
                results[error.host] = HostResult(results[error.host].exit_code or 1, error)
            self.results = results
            interrupts.ended(self)
            return results

    def abandon(self, e: BaseException) -> None:
        """End the command everywhere and close every output (what came is kept)."""
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            interrupts.interrupted()
        try:
            self.executor.kill()
        finally:
            self.outputs.close()
            self.results = {}
            interrupts.ended(self)

    def kill(self) -> None:
        self.executor.kill()
        self.finish()

    def finish_in_background(self) -> None:
        """For a dropped async `Exec`: release everything once the command ended."""
        threading.Thread(target=self._finish_quietly, daemon=True,
                         name="fabexec-dropped").start()

    def _finish_quietly(self) -> None:
        try:
            self.finish()
        except BaseException:  # noqa: BLE001 - nobody is left to tell
            pass


class Exec(HostResults):
    """Run ``cmd`` (a string, or a list run like lines of a script).

    The same result shape everywhere: ``stdout``/``stderr``/``exit_codes``/
    ``errors`` keyed by host, and ``exit_code``, 0 when every host succeeded.
    A failing command or an unreachable host is a result, not an exception; a
    wrong argument raises at once, before anything runs.
    """

    def __init__(self, cmd: Command, exec_info: Optional[ExecInfo] = None) -> None:
        info = exec_info if exec_info is not None else LocalExecInfo()
        if not isinstance(info, ExecInfo):
            raise TypeError(f"exec_info must be an ExecInfo, not {info!r}")
        self.exec_info = info
        self._executor = executor_for(cmd, info)
        self.cmd: str = self._executor.cmd
        super().__init__(self._executor.hosts)
        self.stdout: Dict[str, str] = {h: "" for h in self.hosts}
        self.stderr: Dict[str, str] = {h: "" for h in self.hosts}
        self._outputs = Outputs(
            self.hosts,
            collect=_or_default(info.collect_output, DEFAULTS.collect_output),
            hide=_or_default(info.hide_output, DEFAULTS.hide_output),
            pipe_stdout=_path(info.pipe_stdout),
            pipe_stderr=_path(info.pipe_stderr),
            stdout=sys.stdout,
            stderr=sys.stderr,
            timeout=info.timeout,
        )
        if DEFAULTS.echo(info.exec_type):
            print(self.cmd, flush=True)
        self._done = False
        self._wait_lock = threading.RLock()
        self._run = Run(self._executor, self._outputs)
        interrupts.started(self._run)
        try:
            self._executor.start(self._outputs)
        except BaseException as e:  # ^C or SIGTERM during a run we wait for
            self._run.abandon(e)
            self._done = True
            raise
        self._dropped = weakref.finalize(self, self._run.finish_in_background)
        if info.sleep_ms:
            time.sleep(info.sleep_ms / 1000)
        if not info.exec_async:
            self.wait()

    def wait(self) -> int:
        """Wait for every host to finish; fill the results; return ``exit_code``.

        From several threads at once too (a ``kill()`` waits as well): one of
        them collects, the others wait for it.
        """
        with self._wait_lock:
            return self._wait()

    def _wait(self) -> int:
        if self._done:
            return self.exit_code  # type: ignore[return-value]
        self._dropped.detach()
        try:
            results = self._run.finish()
        except BaseException:
            self._done = True
            raise
        self._collect(results)
        self._done = True
        return self.exit_code  # type: ignore[return-value]

    def kill(self) -> int:
        """End the command and everything it started on every host, then wait.

        Also after the command ended: a daemon it left running is ended too.
        """
        self._executor.kill()
        return self.wait()

    def _collect(self, results: Dict[str, HostResult]) -> None:
        for host in self.hosts:
            tees = self._outputs.tees[host]
            self.stdout[host] = tees["stdout"].text
            self.stderr[host] = tees["stderr"].text
        self._settle(results)

    def progress(self) -> Tuple[int, int, int]:
        """(hosts done, of which failed, hosts in all), while it runs."""
        if self._done:
            return len(self.hosts), sum(1 for c in self.exit_codes.values() if c), len(self.hosts)
        return self._executor.progress()

    def ended(self) -> Dict[str, HostResult]:
        """The hosts that have ended so far and how, their `stdout` and `stderr` filled.

        For reporting each host as it ends (``fabexec run --json``) from one
        thread while another waits: `wait` still gives the final word (a host
        whose output file then failed to close becomes an error).
        """
        if self._done:
            return {h: HostResult(self.exit_codes[h] or 0, self.errors.get(h)) for h in self.hosts}
        ended = self._executor.ended()
        for host in ended:  # its output was read whole before its result was recorded
            self.stdout[host] = self._outputs.tees[host]["stdout"].text
            self.stderr[host] = self._outputs.tees[host]["stderr"].text
        return ended

    @property
    def job_id(self) -> Optional[str]:
        """The scheduler's job id of a batch job (`SlurmExecInfo` outside an allocation,
        `PbsExecInfo`)."""
        return getattr(self._executor, "job_id", None)

    @property
    def done(self) -> bool:
        return self._done

    def __repr__(self) -> str:
        state = f"exit_code={self.exit_code}" if self._done else "running"
        return f"Exec({self.cmd!r}, hosts={self.hosts}, {state})"


def _path(value: Optional[os.PathLike]) -> Optional[str]:
    return None if value is None else os.fspath(value)


def _or_default(value: Optional[bool], default: bool) -> bool:
    return default if value is None else value
