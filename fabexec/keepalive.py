"""Dead-peer detection: keepalives that want a reply, as OpenSSH's ServerAlive does.

paramiko's own keepalive (``Transport.set_keepalive``) asks for no reply, so a
frozen host, whose kernel still acknowledges TCP, looks alive forever and
Fabric's ``run`` never returns. Here each transport sends
``keepalive@openssh.com`` with want-reply every ``interval`` seconds; after
``count`` unanswered ones the host is declared gone and its transport closed,
which ends every channel on it with no exit status. As with OpenSSH's
ServerAliveInterval, a host that sent anything during the last interval is
alive without being asked: a busy link (a gateway's frames, a command's
output) gets no keepalives, each of which cost a thread and two packets.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any, Callable, Optional, Set

from .seams import GlobalReplies, send_global_request

#: Seconds between keepalives when neither ExecInfo nor ssh_config says.
#: A loaded node may stall sshd for seconds (swap, I/O storms); 15 s x 3
#: declares a hung host within a minute without false alarms on a busy one.
DEFAULT_INTERVAL = 15.0
DEFAULT_COUNT = 3

#: How late the monitor may act on a deadline or a keepalive: it sleeps until the next
#: is due (a run of 30 s on 32 gateways cost 50 ms of CPU when it woke every 0.1 s).
TICK = 0.1


class KeepaliveTransport(GlobalReplies):
    """paramiko's `Transport`, counting keepalive requests left unanswered.

    paramiko offers no keepalive that wants a reply without blocking the
    caller (``global_request(wait=True)`` waits with no timeout), so `probe`
    sends the request itself and any reply resets the count.
    """

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.unanswered = 0
        self.probes = 0  # sent in all
        self.dead_reason: Optional[str] = None
        #: Set at each packet received; the monitor clears it at each look.
        self.heard = False
        read = self.packetizer.read_message

        def read_message() -> Any:
            found = read()
            self.heard = True
            return found
        self.packetizer.read_message = read_message

    def probe(self) -> None:
        """Count one more unanswered request and send it without blocking the caller.

        The send gets a thread of its own: towards a frozen host it may block
        once the socket buffer is full, and the count must keep going.
        """
        self.unanswered += 1
        self.probes += 1
        threading.Thread(target=self._send_quietly, daemon=True).start()

    def _send_quietly(self) -> None:
        try:
            # Want a reply: OpenSSH answers with a failure, which is fine.
            send_global_request(self, "keepalive@openssh.com", want_reply=True)
        except Exception:  # noqa: BLE001 - a dying transport; the monitor sees it next
            pass

    def global_reply(self) -> None:
        self.unanswered = 0


class _Watch:
    def __init__(self, interval: float, count: int) -> None:
        self.interval, self.count = interval, count
        self.next_probe = time.monotonic() + interval


class Deadline:
    """A call `Monitor` makes at ``due`` unless cancelled first."""

    def __init__(self, due: float, action: Callable[[], None]) -> None:
        self.due, self.action = due, action

    def cancel(self) -> None:
        monitor.cancel(self)


class Monitor:
    """One thread watching every transport of the process (256 hosts, one thread).

    It also keeps the connect deadlines (`after`), which would otherwise take
    a timer thread per host being connected.
    """

    def __init__(self) -> None:
        self._watches: weakref.WeakKeyDictionary[KeepaliveTransport, _Watch] = \
            weakref.WeakKeyDictionary()
        self._deadlines: Set[Deadline] = set()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._thread: Optional[threading.Thread] = None
        self._until = 0.0  # when the thread, waiting, wakes by itself

    def watch(self, transport: KeepaliveTransport, interval: float, count: int) -> None:
        if interval <= 0:
            return
        with self._lock:
            watch = self._watches[transport] = _Watch(interval, count)
            self._wake(watch.next_probe)

    def after(self, seconds: float, action: Callable[[], None]) -> Deadline:
        """Call ``action`` in ``seconds`` (to within `TICK`) unless cancelled."""
        deadline = Deadline(time.monotonic() + seconds, action)
        with self._lock:
            self._deadlines.add(deadline)
            self._wake(deadline.due)
        return deadline

    def cancel(self, deadline: Deadline) -> None:
        with self._lock:
            self._deadlines.discard(deadline)

    def _wake(self, due: float) -> None:
        """Something is due at ``due`` (the lock held): start the thread, or wake it if it
        waits past then (not at each of a fan-out's connect deadlines, a wake each)."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, daemon=True,
                                            name="fabexec-keepalive")
            self._thread.start()
        elif due < self._until:
            self._changed.notify()

    def _loop(self) -> None:
        while True:
            with self._lock:
                if not self._watches and not self._deadlines:
                    self._thread = None
                    return  # nothing to do; a later call starts a new thread
                watches = list(self._watches.items())
                now = time.monotonic()
                due = [d for d in self._deadlines if d.due <= now + TICK / 2]
                checked = [(t, w) for t, w in watches if w.next_probe <= now + TICK / 2]
                if not due and not checked:
                    soonest = min([d.due for d in self._deadlines]
                                  + [w.next_probe for _, w in watches])
                    self._until = soonest
                    self._changed.wait(soonest - now)
                    continue
                self._deadlines.difference_update(due)
            for deadline in due:
                deadline.action()
            for transport, watch in checked:
                watch.next_probe = now + watch.interval
                self._check(transport, watch)

    def _check(self, transport: KeepaliveTransport, watch: _Watch) -> None:
        if not transport.is_active():
            with self._lock:
                self._watches.pop(transport, None)
            return
        if transport.unanswered >= watch.count:
            silent = watch.interval * watch.count
            transport.dead_reason = (f"stopped answering: {watch.count} keepalives unanswered "
                                     f"over {silent:g} s (hung host or lost network)")
            with self._lock:
                self._watches.pop(transport, None)
            # close() joins the transport's thread: not on the monitor's time.
            threading.Thread(target=transport.close, daemon=True).start()
            return
        if transport.heard:  # it spoke since the last look: alive, nothing to ask
            transport.heard = False
            transport.unanswered = 0
            return
        transport.probe()


monitor = Monitor()
