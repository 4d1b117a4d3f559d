"""Running a command on every host at once, over the cached SSH connections."""

from __future__ import annotations

import functools
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from fabric import ThreadingGroup
from fabric.group import GroupResult
from invoke import Promise
from invoke.exceptions import CommandTimedOut
from paramiko.ssh_exception import SSHException

from .command import Command, new_tag, shell_script
from .connections import HostConnection, connection_for, hold, lost, release
from .errors import (
    CommandTimeoutError,
    ConnectionLostError,
    HostError,
)
from .info import ExecInfo
from .local import HostResult, stdin_of
from .runners import KILL_TIMEOUT, RemoteRunner
from .tee import Outputs


class FanOut(ThreadingGroup):
    """Fabric's `ThreadingGroup`, at most ``max_parallel`` hosts in flight.

    Fabric starts one thread per host with no bound and joins them with no
    timeout; here a pool bounds threads and sockets, and `map` hands back a
    `GroupResult` in which a host's exception is its value, never the end of
    the others.
    """

    def __init__(self, connections: Sequence[HostConnection], max_parallel: int) -> None:
        super().__init__()
        self.extend(connections)
        self.max_parallel = max_parallel

    def map(self, fn: Callable[[HostConnection], Any]) -> GroupResult:
        results = GroupResult()
        for cxn, value in self.outcomes(fn):
            results[cxn] = value
        return results

    def outcomes(self, fn: Callable[[HostConnection], Any]) -> List[Tuple[HostConnection, Any]]:
        """``fn(cxn)`` for every connection, each paired with its value or exception.

        A list, not a `GroupResult`: Fabric's connections compare equal when they
        reach the same user, address and port, so two aliases of one node would
        collide as dict keys and one host's result would be lost.
        """
        if not self:
            return []
        with ThreadPoolExecutor(min(len(self), self.max_parallel),
                                thread_name_prefix="fabexec-host") as pool:
            futures: List[Tuple[Future, HostConnection]] = [(pool.submit(fn, c), c)
                                                             for c in self]
        return [(cxn, future.exception() or future.result()) for future, cxn in futures]

    def _do(self, method: str, *args: Any, **kwargs: Any) -> GroupResult:
        # Fabric's run/sudo/put/get funnel through here: bound them too.
        return self.map(lambda cxn: getattr(cxn, method)(*args, **kwargs))


class PsshExecutor:
    """One command on every host of ``info.targets``, each through its own runner."""

    def __init__(self, cmd: Command, info: ExecInfo, hosts: Optional[List[str]] = None) -> None:
        self.info = info
        self.hosts = hosts if hosts is not None else list(info.targets.hosts)
        self.cmd = shell_script(cmd, info.env, info.cwd, info.sudo, info.sudoenv,
                                info.sudo_password is not None)
        self.connections = {h: connection_for(h, info) for h in self.hosts}
        self.tag = new_tag()
        self.runners: Dict[str, RemoteRunner] = {}
        self.ended: Dict[str, HostResult] = {}
        self.promises: Dict[str, Promise] = {}
        self.stopping = False
        self._lock = threading.Lock()

    def start(self, outputs: Outputs) -> None:
        self.outputs = outputs
        group = FanOut([self.connections[h] for h in self.hosts], self.info.max_parallel)
        self._hosts_of = {id(c): h for h, c in self.connections.items()}
        self._position = {h: i for i, h in enumerate(self.hosts)}
        self._done = threading.Event()
        if self.info.exec_async:
            group.outcomes(self._host_life)
            self._done.set()
        else:
            # The fan-out runs in a thread so that ^C reaches the caller at once.
            def fan_out() -> None:
                try:
                    group.outcomes(self._host_life)
                finally:
                    self._done.set()
            threading.Thread(target=fan_out, daemon=True, name="fabexec-fanout").start()

    def _host_life(self, cxn: HostConnection) -> None:
        """One host from connect to result; whatever happens is its result."""
        host = self._hosts_of[id(cxn)]
        hold(cxn)
        try:
            result = self._run_host(cxn)
        except Exception as e:  # noqa: BLE001 - a host's failure is its result
            result = self._fail(host, e)
        if result is not None:  # ended (not an async command still running)
            self._end(host, cxn, result)

    def _end(self, host: str, cxn: HostConnection, result: HostResult) -> None:
        with self._lock:
            self.ended[host] = result
        release(cxn, self.info.max_parallel)

    def progress(self) -> Tuple[int, int, int]:
        """(hosts done, of which failed, hosts in all)."""
        with self._lock:
            codes = [r.exit_code for r in self.ended.values()]
        return len(codes), sum(1 for c in codes if c), len(self.hosts)

    def _run_host(self, cxn: HostConnection) -> Optional[HostResult]:
        """Connect, run, and (unless async) wait: the life of one host."""
        host = self._hosts_of[id(cxn)]
        try:
            cxn.open()
        except HostError as e:
            return self._fail(host, e)
        runner = RemoteRunner(cxn)
        # One tag per host: where two hosts share a process table (aliases of
        # one machine, containers), ending one host's command spares the other's.
        tag = f"{self.tag}-{self._position[host]}"
        runner.setup_io(self.outputs.tees[host], tag, stdin_of(self.info),
                        self.info.watchers, self.info.sudo_password, self.info.sudo)
        with self._lock:
            if self.stopping:
                return self._fail(host, HostError(host, "not started: the run was stopped"))
            self.runners[host] = runner
        return self._outcome(host, cxn, lambda: runner.run(
            self.cmd, warn=True, hide=True, echo=False, in_stream=False, watchers=[],
            asynchronous=self.info.exec_async, timeout=self.info.timeout))

    def _outcome(self, host: str, cxn: HostConnection, step: Callable[[], Any]
                 ) -> Optional[HostResult]:
        try:
            result = step()
        except CommandTimedOut as e:
            return self._fail(host, CommandTimeoutError(
                host, f"timed out after {e.timeout} s; the command and every process it "
                "started there were ended"))
        except (SSHException, EOFError, OSError) as e:
            return self._lost(host, cxn, f"connection lost: {e}")
        if isinstance(result, Promise):
            self.promises[host] = result
            return None
        if result.exited is None:
            return self._lost(host, cxn, "connection lost before the command's exit status "
                              "arrived (host crashed or sshd restarted)")
        return HostResult(result.exited)

    def _lost(self, host: str, cxn: HostConnection, why: str) -> HostResult:
        return self._fail(host, lost(host, cxn, why))

    def _fail(self, host: str, error: BaseException) -> HostResult:
        if not isinstance(error, HostError):
            error = ConnectionLostError(host, f"{type(error).__name__}: {error}")
        return HostResult(error.exit_code, error)

    def wait(self) -> Dict[str, HostResult]:
        self._done.wait()
        promises, self.promises = self.promises, {}

        def join(host: str, promise: Promise) -> None:
            # Recorded as each host ends, so that progress() counts it at once.
            cxn = self.connections[host]
            self._end(host, cxn, self._outcome(host, cxn, promise.join))  # type: ignore[arg-type]

        _in_threads([functools.partial(join, h, p) for h, p in promises.items()],
                    max(1, len(promises)))
        return dict(self.ended)

    def kill(self) -> None:
        """End the command on every host where it started; stop the rest starting."""
        with self._lock:
            self.stopping = True
            runners = list(self.runners.values())
        _in_threads([r.kill for r in runners], self.info.max_parallel)
        # Hosts still connecting finish (bounded by connect_timeout) before outputs close.
        self._done.wait(self.info.connect_timeout + KILL_TIMEOUT)


def _in_threads(calls: List[Callable[[], None]], limit: int) -> None:
    """Run ``calls``, at most ``limit`` at once; raise the first error once all ended.

    Plain threads, not a `ThreadPoolExecutor`: that refuses work once the interpreter
    shuts down, which is when async commands are ended after ^C or SIGTERM (see
    `interrupts`), and they would be left running.
    """
    errors: List[BaseException] = []

    def call(fn: Callable[[], None]) -> None:
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller below
            errors.append(e)

    for start in range(0, len(calls), limit):
        threads = [threading.Thread(target=call, args=(fn,), daemon=True,
                                    name="fabexec-kill") for fn in calls[start:start + limit]]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]
