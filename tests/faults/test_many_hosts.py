"""256 hosts: every host's result comes back, with threads bounded by ``max_parallel``.

256 nodes take more than one /24 of loopback addresses (the sandbox goes on in
127.0.3.0/24). One `Exec` runs while a side thread samples the thread count.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Iterator

import pytest

from fabexec import Exec
from fabexec.sandbox import SandboxCluster
from tests.clusters import expected_hostname, pssh_info
from tests.faults.breaking import private_sandbox

HOSTS = 256
#: Well below the hosts, so that a bound by hosts and a bound by slots differ.
MAX_PARALLEL = 16
#: Threads one slot may hold: a pool worker, its transport, and the transport of
#: an idle connection closed to make room, until that thread has exited.
THREADS_PER_SLOT = 3
#: What else may run meanwhile: the keepalive monitor, the fan-out, short-lived probes.
THREADS_BESIDES = 8

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@dataclass
class Run:
    cluster: SandboxCluster
    node: Exec
    threads_before: int
    threads_peak: int


class PeakThreads(threading.Thread):
    """Samples `threading.active_count` every few milliseconds until stopped."""

    def __init__(self) -> None:
        super().__init__(daemon=True, name="peak-threads")
        self.peak = threading.active_count() + 1
        self.stopped = threading.Event()
        self.start()

    def run(self) -> None:
        while not self.stopped.wait(0.005):
            self.peak = max(self.peak, threading.active_count())

    def stop(self) -> int:
        self.stopped.set()
        self.join(10)
        return self.peak


@pytest.fixture(scope="module")
def run_on_256() -> Iterator[Run]:
    with private_sandbox(HOSTS) as cluster:
        sampler = PeakThreads()
        before = threading.active_count()
        try:
            node = Exec("hostname", pssh_info(cluster).mod(max_parallel=MAX_PARALLEL))
        finally:
            peak = sampler.stop()
        yield Run(cluster, node, before, peak)


def test_256_hosts_return_256_results(run_on_256: Run) -> None:
    cluster, node = run_on_256.cluster, run_on_256.node
    assert len(cluster.hosts) == HOSTS
    assert node.errors == {}
    assert node.exit_codes == {h: 0 for h in cluster.hosts}
    assert node.stdout == {h: expected_hostname(cluster, h) + "\n" for h in cluster.hosts}


def test_256_hosts_hold_threads_bounded_by_max_parallel(run_on_256: Run) -> None:
    grown = run_on_256.threads_peak - run_on_256.threads_before
    assert grown <= THREADS_PER_SLOT * MAX_PARALLEL + THREADS_BESIDES, \
        f"{grown} threads more at the peak, for max_parallel={MAX_PARALLEL}"
