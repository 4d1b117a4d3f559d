"""Faults at random on a sandbox, for as long as asked: the chaos of a soak.

`Chaos` is a thread that, every few seconds, freezes a random node (SIGSTOP: it
hangs, its kernel still acknowledging TCP) and thaws it a few seconds later, or
crashes one (its sessions SIGKILLed, as a restart would; the daemon keeps
listening). Every fault is recorded with its node and times, so that whoever
checks results afterwards can tell a result that a fault explains (a command
killed by a crash) from one that nothing explains.

Bounded in count and time: at most ``max_frozen`` nodes frozen at once, one
fault per turn, turns until `stop` or ``seconds``; whatever it froze is thawed
before `stop` returns.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import SandboxError
from .nodes import SandboxCluster

FREEZE, THAW, CRASH = "freeze", "thaw", "crash"
#: Seconds `stop` waits for the thread's turn in progress (a crash scans /proc).
STOP_WAIT = 60.0


@dataclass(frozen=True)
class Fault:
    """One fault: ``kind`` done to ``host`` at ``start`` (``time.monotonic()``),
    lasting until ``end`` (a freeze: its thaw; a crash: the moment its signals
    were all sent)."""

    host: str
    kind: str
    start: float
    end: float


class Chaos:
    """Freezes, thaws and crashes random nodes of ``cluster`` from a thread of its own.

    ``every``: seconds between two faults, drawn at random in that range;
    ``freeze_for``: how long a frozen node stays frozen, likewise; ``crash_share``:
    the fraction of faults that are crashes; ``seed`` makes the choices repeatable
    (the timing of what they hit is not).
    """

    def __init__(self, cluster: SandboxCluster, seconds: float, *,
                 hosts: Optional[Sequence[str]] = None,
                 every: Tuple[float, float] = (1.0, 3.0),
                 freeze_for: Tuple[float, float] = (1.0, 8.0),
                 crash_share: float = 0.3, max_frozen: Optional[int] = None,
                 seed: Optional[int] = None) -> None:
        self.cluster = cluster
        self.hosts = list(hosts if hosts is not None else cluster.hosts)
        self.seconds, self.every, self.freeze_for = seconds, every, freeze_for
        self.crash_share = crash_share
        wanted = max_frozen if max_frozen is not None else len(self.hosts) // 8
        self.max_frozen = min(max(1, wanted), len(self.hosts))
        self.random = random.Random(seed)
        self._faults: List[Fault] = []
        self._frozen: Dict[str, Tuple[float, float]] = {}  # host: (since, thaw at)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="sandbox-chaos")
        self.error: Optional[BaseException] = None

    def __enter__(self) -> Chaos:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """End the faults and thaw every node still frozen; raise what broke the thread."""
        self._stop.set()
        self._thread.join(STOP_WAIT)
        if self._thread.is_alive():
            raise SandboxError(f"the chaos thread did not stop within {STOP_WAIT:.0f} s")
        with self._lock:
            frozen = list(self._frozen)
        for host in frozen:
            self._thaw(host)
        if self.error is not None:
            raise self.error

    @property
    def faults(self) -> List[Fault]:
        """Every fault so far, a freeze once thawed (or with ``end`` inf while frozen)."""
        with self._lock:
            return [*self._faults, *(Fault(h, FREEZE, since, float("inf"))
                                     for h, (since, _) in self._frozen.items())]

    def counts(self) -> Dict[str, int]:
        """Faults injected so far, by kind (a freeze counts once more when thawed)."""
        with self._lock:
            kinds = Counter(f.kind for f in self._faults)
            frozen = len(self._frozen)
        return {FREEZE: kinds[FREEZE] + frozen, THAW: kinds[FREEZE], CRASH: kinds[CRASH]}

    def hit(self, host: str, start: float, end: float, kind: Optional[str] = None
            ) -> List[Fault]:
        """The faults (of ``kind``, if given) on ``host`` that overlap ``[start, end]``."""
        return [f for f in self.faults if f.host == host and (kind is None or f.kind == kind)
                and f.start <= end and f.end >= start]

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        deadline = time.monotonic() + self.seconds
        turns = int(self.seconds / max(self.every[0], 0.01)) + 1
        try:
            for _ in range(turns):
                if self._stop.wait(self.random.uniform(*self.every)):
                    return
                if time.monotonic() > deadline:
                    return
                self._thaw_due()
                self._one_fault()
        except BaseException as e:  # noqa: BLE001 - handed to stop()'s caller
            self.error = e

    def _thaw_due(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = [h for h, (_, at) in self._frozen.items() if at <= now]
        for host in due:
            self._thaw(host)

    def _one_fault(self) -> None:
        with self._lock:
            frozen = set(self._frozen)
        if self.random.random() < self.crash_share or len(frozen) >= self.max_frozen:
            host = self.random.choice(self.hosts)  # a frozen node crashes too
            start = time.monotonic()
            self.cluster.crash(host)
            with self._lock:
                self._faults.append(Fault(host, CRASH, start, time.monotonic()))
            return
        host = self.random.choice([h for h in self.hosts if h not in frozen])
        since = time.monotonic()
        with self._lock:  # recorded first: a call that ends meanwhile sees it
            self._frozen[host] = (since, since + self.random.uniform(*self.freeze_for))
        self.cluster.freeze(host)

    def _thaw(self, host: str) -> None:
        self.cluster.thaw(host)
        with self._lock:
            since, _ = self._frozen.pop(host)
            self._faults.append(Fault(host, FREEZE, since, time.monotonic()))
