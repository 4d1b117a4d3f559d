"""The monitor sleeps until its next deadline or keepalive is due, and wakes for a sooner one."""

import threading
import time

from fabexec.keepalive import Monitor


def test_a_deadline_sooner_than_the_one_awaited_is_kept() -> None:
    monitor = Monitor()
    later = monitor.after(60, lambda: None)
    time.sleep(0.5)  # the monitor's thread now sleeps until the 60 s deadline
    fired = threading.Event()
    monitor.after(0.2, fired.set)
    try:
        assert fired.wait(20)
    finally:
        monitor.cancel(later)


def test_a_cancelled_deadline_is_not_called_and_the_thread_ends_with_nothing_left() -> None:
    monitor = Monitor()
    called = threading.Event()
    monitor.cancel(monitor.after(0.3, called.set))
    last = threading.Event()
    monitor.after(0.6, last.set)
    assert last.wait(20) and not called.is_set()
    thread = monitor._thread
    assert thread is None or (thread.join(20) or not thread.is_alive())
