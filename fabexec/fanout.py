"""The life of every remote host of a run, at most ``max_parallel`` at once.

One home for what a command and a copy both do per host: take the host's
cached connection (held, so the cache never closes it underneath), open it
within ``connect_timeout``, do the work, turn whatever went wrong into that
host's `HostError` (a broken link drops the connection, so the next run
reconnects), record the result, release the connection. Hosts run in a
bounded pool, from a thread of their own when the caller waits, so that ^C
and SIGTERM reach the caller at once and it can end the hosts still running.

Fabric's `ThreadingGroup` is not used: it starts a thread per host with no
bound, joins them with no timeout, and keys results by connections, which
compare equal for two aliases of one node.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, List, Optional, Tuple

from paramiko.ssh_exception import SSHException

from .connections import HostConnection, pool
from .errors import ConnectionLostError, HostError, reason
from .info import ExecInfo
from .results import HostResult

#: What a broken link raises from inside paramiko (a reset, an EOF, a closed channel).
LINK_ERRORS = (SSHException, EOFError, OSError)

#: The work done on one host once it is connected: its result, or None while
#: it still runs (an async command; `FanOut.end` records it later).
Work = Callable[[str, HostConnection], Optional[HostResult]]


class FanOut:
    """Every remote host of one run, each from connect to result."""

    def __init__(self, hosts: List[str], info: ExecInfo) -> None:
        self.hosts = hosts
        self.info = info
        self.connections: Dict[str, HostConnection] = {h: pool.connection(h, info) for h in hosts}
        self.ended: Dict[str, HostResult] = {}
        self._lock = threading.Lock()
        self._started = threading.Event()

    def start(self, work: Work, background: bool) -> None:
        """``work`` on every host; from a thread of its own when ``background``."""
        if not background:
            self._each_host(work)
            return

        def fan_out() -> None:
            try:
                self._each_host(work)
            finally:
                self._started.set()
        threading.Thread(target=fan_out, daemon=True, name="fabexec-fanout").start()

    def _each_host(self, work: Work) -> None:
        if self.hosts:
            with ThreadPoolExecutor(min(len(self.hosts), self.info.max_parallel),
                                    thread_name_prefix="fabexec-host") as threads:
                for host in self.hosts:
                    threads.submit(self._life, host, work)
        self._started.set()

    def _life(self, host: str, work: Work) -> None:
        """One host: held, opened, worked on; whatever happens is its result."""
        cxn = self.connections[host]
        pool.hold(cxn)
        try:
            cxn.open()
            result = work(host, cxn)
        except HostError as e:
            result = HostResult.of(e)
        except LINK_ERRORS as e:
            result = self.lost(host, f"connection lost: {reason(e)}")
        except Exception as e:  # noqa: BLE001 - a host's failure is its result
            result = HostResult.of(ConnectionLostError(host, f"{type(e).__name__}: {reason(e)}"))
        if result is not None:
            self.end(host, result)

    def end(self, host: str, result: HostResult) -> None:
        """``host`` is done: record its result and release its connection."""
        with self._lock:
            self.ended[host] = result
        pool.release(self.connections[host], self.info.max_parallel)

    def lost(self, host: str, why: str, cause: Optional[HostError] = None) -> HostResult:
        """The link to ``host`` broke: its connection is dropped (the next run
        reconnects), and its result says why (a keepalive's verdict if it gave one)."""
        error = pool.lost(host, self.connections[host], why)
        if cause is not None:
            error.__cause__ = cause  # what the host was doing when it broke
        return HostResult.of(error)

    def wait_started(self, timeout: Optional[float] = None) -> bool:
        """Wait until every host has ended or, for an async run, started."""
        return self._started.wait(timeout)

    def progress(self) -> Tuple[int, int]:
        """(hosts done, of which failed)."""
        with self._lock:
            codes = [r.exit_code for r in self.ended.values()]
        return len(codes), sum(1 for c in codes if c)

    def results(self) -> Dict[str, HostResult]:
        with self._lock:
            return dict(self.ended)


def in_threads(calls: List[Callable[[], None]], limit: int) -> None:
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
