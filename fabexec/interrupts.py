"""Ctrl-C and SIGTERM end commands everywhere, not just the local Python.

Python turns SIGINT into `KeyboardInterrupt`, which `Exec.wait` catches to end
its command on every host before passing it on. SIGTERM's default kills the
interpreter on the spot, leaving remote commands and open files behind, so
while any `Exec` runs a handler turns it into ``SystemExit(143)``, which
unwinds the same way. Async commands nobody waits on are ended at exit when
the exit comes from such an interrupt.
"""

from __future__ import annotations

import atexit
import signal
import sys
import threading
from typing import Any, Callable, Optional, Set

#: Every Exec not yet waited for, held strongly: an async command the caller
#: dropped is still running, and must still be ended on an interrupt.
_running: Set[Any] = set()
_lock = threading.Lock()
_previous: Optional[Any] = None
_interrupted = False
_at_exit_registered = False


def _on_sigterm(signum: int, frame: Any) -> None:
    global _interrupted
    _interrupted = True
    raise SystemExit(128 + signum)


def started(run: Any) -> None:
    """``run`` (an object with ``kill()``) is running; catch SIGTERM meanwhile."""
    global _previous, _at_exit_registered
    with _lock:
        if not _at_exit_registered:
            # Registered late, so it runs before the connection cache closes.
            atexit.register(_end_all_at_exit)
            _at_exit_registered = True
        _running.add(run)
        if _previous is None and threading.current_thread() is threading.main_thread() \
                and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            _previous = signal.signal(signal.SIGTERM, _on_sigterm)


def ended(run: Any) -> None:
    """``run`` is over; the last one over gives SIGTERM its old handler back."""
    global _previous
    with _lock:
        _running.discard(run)
        if not _running and _previous is not None \
                and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _previous)
            _previous = None


def interrupted() -> None:
    """Note that an interrupt is unwinding the program (see `_end_all_at_exit`)."""
    global _interrupted
    _interrupted = True


def _end_all_at_exit() -> None:
    if not (_interrupted or getattr(sys, "last_type", None) is KeyboardInterrupt):
        return
    for run in list(_running):
        kill: Callable[[], Any] = run.kill
        try:
            kill()
        except BaseException:  # noqa: BLE001 - exiting anyway; end what we can
            pass
