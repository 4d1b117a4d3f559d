"""The monitor sleeps until its next deadline or keepalive is due, and wakes for a sooner one."""

import threading
import time

from fabexec import Exec
from fabexec.connections import close_connections, connection_for
from fabexec.keepalive import Monitor
from fabexec.sandbox import SandboxCluster
from tests.clusters import ssh_info


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


def test_a_host_that_speaks_is_not_asked_and_a_silent_one_is(cluster: SandboxCluster) -> None:
    """OpenSSH's ServerAliveInterval: a keepalive goes only after an interval in which
    the host sent nothing (a busy gateway's link costs none); silence is still probed."""
    host = cluster.hosts[0]
    info = ssh_info(cluster, host, keepalive_interval=0.3, keepalive_count=50)
    close_connections()
    try:
        chatty = Exec("for i in $(seq 30); do echo $i; sleep 0.1; done", info)
        transport = connection_for(host, info).transport
        assert chatty.exit_code == 0 and transport.probes <= 1  # at most the first look
        Exec("sleep 3", info)
        assert connection_for(host, info).transport is transport and transport.probes >= 4
    finally:
        close_connections()
