"""Running a command on every remote host at once, over the pooled SSH connections."""

from __future__ import annotations

import functools
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

from invoke import Promise
from invoke.exceptions import CommandTimedOut

from .command import Command, new_tag, shell_script
from .connections import HostConnection
from .errors import CommandTimeoutError, HostError, KillFailedError, reason
from .fanout import LINK_ERRORS, FanOut, in_threads
from .info import ExecInfo
from .results import HostResult
from .runners import KILL_TIMEOUT, RemoteRunner
from .stdin import StdinSource
from .tee import Outputs


class PsshExecutor:
    """One command on every host of ``hosts``, each through its own runner."""

    def __init__(self, cmd: Command, info: ExecInfo, hosts: List[str],
                 stdin: Optional[StdinSource] = None) -> None:
        self.info = info
        self.hosts = hosts
        # Every host reads the whole of it (see `fabexec.stdin`).
        self.stdin = stdin if stdin is not None else StdinSource(info.stdin, len(hosts))
        self.cmd = shell_script(cmd, info.env, info.cwd, info.sudo, info.sudoenv,
                                info.sudo_password is not None)
        self.fanout = FanOut(hosts, info)
        self.tag = new_tag()
        self.runners: Dict[str, RemoteRunner] = {}
        self.promises: Dict[str, Promise] = {}
        self.stopping = False
        self._lock = threading.Lock()

    def start(self, outputs: Outputs) -> None:
        self.outputs = outputs
        # One tag per host: where two hosts share a process table (aliases of
        # one machine, containers), ending one host's command spares the other's.
        self._position = {h: i for i, h in enumerate(self.hosts)}
        # A run we wait for fans out from a thread, so that ^C reaches the caller at once.
        self.fanout.start(self._run_host, background=not self.info.exec_async)

    def _run_host(self, host: str, cxn: HostConnection) -> Optional[HostResult]:
        """Run on a connected host and (unless async) wait for the command to end."""
        runner = RemoteRunner(cxn)
        runner.setup_io(self.outputs.tees[host], f"{self.tag}-{self._position[host]}",
                        self.stdin.reader(), self.info.watchers, self.info.sudo_password,
                        self.info.sudo)
        with self._lock:
            if self.stopping:
                return HostResult.of(HostError(host, "not started: the run was stopped"))
            self.runners[host] = runner
        return self._outcome(host, runner, lambda: runner.run(
            self.cmd, warn=True, hide=True, echo=False, in_stream=False, watchers=[],
            asynchronous=self.info.exec_async, timeout=self.info.timeout))

    def _outcome(self, host: str, runner: RemoteRunner, step: Callable[[], Any]
                 ) -> Optional[HostResult]:
        """How the command ended, and whether ending it (if it was ended) worked."""
        result = self._ended(host, step)
        if result is None or runner.reap_error is None:
            return result
        return HostResult(result.exit_code or 255, KillFailedError(host, runner.reap_error))

    def _ended(self, host: str, step: Callable[[], Any]) -> Optional[HostResult]:
        try:
            result = step()
        except CommandTimedOut as e:
            return HostResult.of(CommandTimeoutError(
                host, f"timed out after {e.timeout} s; the command and every process it "
                "started there were ended"))
        except LINK_ERRORS as e:
            return self.fanout.lost(host, f"connection lost: {reason(e)}")
        if isinstance(result, Promise):
            with self._lock:
                self.promises[host] = result
            return None
        if result.exited is None:
            return self.fanout.lost(host, "connection lost before the command's exit status "
                                    "arrived (host crashed or sshd restarted)")
        return HostResult(result.exited)

    def progress(self) -> Tuple[int, int, int]:
        """(hosts done, of which failed, hosts in all)."""
        return (*self.fanout.progress(), len(self.hosts))

    def ended(self) -> Dict[str, HostResult]:
        """The hosts that have ended so far, and how."""
        return self.fanout.results()

    def wait(self) -> Dict[str, HostResult]:
        self.fanout.wait_started()
        with self._lock:
            promises, self.promises = self.promises, {}

        def join(host: str, promise: Promise) -> None:
            # Recorded as each host ends, so that progress() counts it at once.
            result = self._outcome(host, self.runners[host], promise.join)
            self.fanout.end(host, result)  # type: ignore[arg-type]

        in_threads([functools.partial(join, h, p) for h, p in promises.items()],
                   max(1, len(promises)))
        return self.fanout.results()

    def kill(self) -> None:
        """End the command on every host where it started; stop the rest starting."""
        with self._lock:
            self.stopping = True
            runners = list(self.runners.values())
        in_threads([r.kill for r in runners], self.info.max_parallel)
        # Hosts still connecting finish (bounded by connect_timeout) before outputs close.
        self.fanout.wait_started(self.info.connect_timeout + KILL_TIMEOUT)
