"""Ctrl-C and SIGTERM end commands everywhere, not just the local Python.

Python turns SIGINT into `KeyboardInterrupt`, which `Exec.wait` catches to end
its command on every host before passing it on. SIGTERM's default kills the
interpreter on the spot, leaving remote commands and open files behind, so a
handler ends every running command first, from whichever thread they were
started, then raises ``SystemExit(143)`` in the main thread. With nothing of
ours running it does what the default would: the process dies of SIGTERM.

At exit, an async command nobody waited for is waited for, as jarvis-util's
interpreter does (its output threads are not daemons): it goes on to its end,
its output still printed, collected or written to its files. Left to the
interpreter's end, its output pipe or SSH channel would close under it and it
would die of SIGPIPE on its next write. When the exit comes from an interrupt
(Ctrl-C, SIGTERM, also one that lands during that wait) the commands are
ended instead.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
from typing import Any, List, Set

#: Every run not yet waited for (an `exec.Run` or a `Transfer`), held strongly:
#: an async command the caller dropped is still running, and must still be
#: ended on an interrupt.
_running: Set[Any] = set()
#: Reentrant: the SIGTERM handler takes it in the main thread, which may hold it already.
_lock = threading.RLock()
_installed = False
_interrupted = False


def _install() -> None:
    """Take SIGTERM, where nobody else took it, from the main thread (Python's rule)."""
    global _installed
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)
    _installed = True


def _on_sigterm(signum: int, frame: Any) -> None:
    global _interrupted
    with _lock:
        runs = list(_running)
    if not runs:  # as if we had never taken it
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    _interrupted = True
    # The main thread may only be waiting for a worker that waits for a command:
    # end them here, or the interpreter would wait for that worker at exit.
    _end(runs, lambda run: run.executor.kill() if hasattr(run, "executor") else run.kill())
    raise SystemExit(128 + signum)


def started(run: Any) -> None:
    """``run`` (an object with ``kill()``) is running; catch SIGTERM meanwhile."""
    global _at_exit_registered
    with _lock:
        if not _at_exit_registered:
            # Registered late, so it runs before the connection pool closes.
            atexit.register(_end_all_at_exit)
            _at_exit_registered = True
        _running.add(run)
    _install()


def ended(run: Any) -> None:
    """``run`` is over."""
    with _lock:
        _running.discard(run)


def interrupted() -> None:
    """Note that an interrupt is unwinding the program (see `_end_all_at_exit`)."""
    global _interrupted
    _interrupted = True


_at_exit_registered = False


def _end(runs: List[Any], kill: Any) -> None:
    """``kill(run)`` for every run at once; whatever fails, the others go on."""
    def quietly(run: Any) -> None:
        try:
            kill(run)
        except BaseException:  # noqa: BLE001 - ending anyway; end what we can
            pass
    threads = [threading.Thread(target=quietly, args=(run,), daemon=True) for run in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _end_all_at_exit() -> None:
    if not (_interrupted or getattr(sys, "last_type", None) is KeyboardInterrupt):
        try:
            _finish_all()
            return
        except (KeyboardInterrupt, SystemExit):  # ^C or SIGTERM while waiting: end them
            pass
    for run in list(_running):  # one by one: no new thread may start at shutdown
        try:
            run.kill()
        except BaseException:  # noqa: BLE001 - exiting anyway; end what we can
            pass


def _finish_all() -> None:
    """Wait for every run not yet waited for (see the module's docstring)."""
    while True:
        with _lock:
            runs = [run for run in _running if hasattr(run, "finish")]
        if not runs:
            return
        for run in runs:
            try:
                run.finish()
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException:  # noqa: BLE001 - its output failed; the others go on
                ended(run)


_install()
