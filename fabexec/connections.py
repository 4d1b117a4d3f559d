"""SSH connections: Fabric's `Connection` with verified host keys, cached per process.

Fabric accepts any host key (``AutoAddPolicy``, known_hosts never read) and
lets a silent host hold ``open()`` for banner and auth timeouts of 15 and 30 s.
`HostConnection` checks keys the way OpenSSH does and bounds the whole
handshake by ``connect_timeout``; the `ConnectionPool` reuses one connection per
(user, host, port, key, config) for every later `Exec`, reopening a dead one.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
import time
from collections import OrderedDict
from typing import Any, Dict, Optional, Tuple

from fabric import Config, Connection
from paramiko.ssh_exception import (
    AuthenticationException,
    BadHostKeyException,
    NoValidConnectionsError,
    SSHException,
)

from .errors import (
    AuthenticationError,
    ConnectionLostError,
    HostError,
    HostKeyError,
    HostStoppedAnsweringError,
    PathNotFoundError,
    UnreachableError,
)
from .hostkeys import AcceptNewPolicy, KnownHostsClient, RefusePolicy, shared_host_keys
from .identities import preload_first_key, private_key
from .info import ExecInfo
from .keepalive import DEFAULT_COUNT, DEFAULT_INTERVAL, TICK, KeepaliveTransport, monitor
from .seams import QuickMisses, set_idle_wakeup
from .sshconfig import SshConfigFile

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
USER_SSH_CONFIG = "~/.ssh/config"  # Fabric's defaults, read in this order
SYSTEM_SSH_CONFIG = "/etc/ssh/ssh_config"


# paramiko logs every failed handshake with its traceback (about 20 lines a host:
# 13,444 lines for 640 silent hosts), and where no logging is configured Python's
# last-resort handler prints them on stderr. Each host's typed error already says
# what happened. A handler that drops them ends that fallback and nothing else:
# records still propagate to whatever handlers the user configures.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

#: AES-GCM (paramiko has it since 3.5).
GCM_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")

#: paramiko's thread wakes this often to see whether the transport was closed:
#: every 0.1 s, 10% of a core for 256 idle connections (0.1 ms a wake), and still
#: 0.14 ms a target through 32 gateways during a 45 s run at once a second.
#: `HostTransport.close` wakes it at once (so do the connect watchdog and the
#: keepalive monitor, which close through it), so it need not look by itself.
IDLE_WAKEUP = 10.0


class HostTransport(KeepaliveTransport):
    """The transport of every connection: keepalives that want replies, AES-GCM first.

    AES-GCM authenticates inside the cipher, so paramiko computes and compares
    no HMAC in Python for each packet: 0.3 to 0.8 ms less CPU a host for a short
    command (bench/faults.py). The server chooses from our list in our order;
    CTR with HMAC stays offered for servers without GCM (OpenSSH has it since 6.2).
    """

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        options = self.get_security_options()
        options.ciphers = (*GCM_CIPHERS, *(c for c in options.ciphers if c not in GCM_CIPHERS))

    def close(self) -> None:
        """Close, and return once the transport's thread has ended.

        paramiko returns at once and lets its thread notice later, so a fan-out
        closing idle connections to make room kept their threads on top of the
        new ones. Shutting the socket down first ends the thread's recv() at once.
        (A ProxyCommand cannot be shut down: its thread ends at its next wake.)
        """
        shutdown = getattr(self.sock, "shutdown", None)
        shut = False
        if self.active and shutdown is not None:
            try:
                shutdown(socket.SHUT_RDWR)
                shut = True
            except OSError:
                pass
        super().close()
        if shut and self.ident is not None and self is not threading.current_thread():
            self.join(IDLE_WAKEUP)


set_idle_wakeup(HostTransport, IDLE_WAKEUP)


class ConnectionConfig(QuickMisses, Config):
    """Fabric's `Config`, one per ssh_config file, shared by its connections."""


class HostConnection(QuickMisses, Connection):
    """One host; opened lazily, with known_hosts honoured and a bounded handshake."""

    # Declared here so that invoke's DataProxy treats them as attributes, not
    # config keys (Fabric sets ``inline_ssh_env`` without declaring it: each
    # connection wrote it into the shared config).
    inline_ssh_env: bool = False
    known_hosts: str = ""
    keepalive: Tuple[float, int] = (0.0, 0)
    users: int = 0
    idle_since: float = 0.0
    cache_key: Tuple[Any, ...] = ()
    hop_info: Optional[ExecInfo] = None
    _open_lock: Any = None
    #: What lives on the host as long as this connection (a gateway's copy of fabexec,
    #: `fabexec.tree`), by name; each value's ``close()`` is called before the link closes.
    kept: Dict[str, Any] = {}
    kept_lock: Any = None

    def __init__(self, host: str, info: ExecInfo, config: Config) -> None:
        self._open_lock = threading.Lock()
        self.kept, self.kept_lock = {}, threading.RLock()
        timeout = float(info.connect_timeout)
        # A dict of our own: given none, Fabric would use (and grow, one
        # IdentityFile per connection) the config's dict shared by every host.
        connect_kwargs: Dict[str, Any] = {
            **{k: v for k, v in config.connect_kwargs.items() if k != "key_filename"},
            "banner_timeout": timeout, "auth_timeout": timeout, "channel_timeout": timeout,
            "transport_factory": HostTransport,
        }
        if info.pkey is not None:
            connect_kwargs.update(key_filename=[_expanded(info.pkey)], look_for_keys=False,
                                  allow_agent=False, passphrase=info.pkey_passphrase)
        # Read by get_gateway, which Connection.__init__ calls.
        self.hop_info = info
        super().__init__(host, user=info.user, port=info.port, config=config,
                         connect_kwargs=connect_kwargs, forward_agent=info.forward_agent)
        if self.ssh_config.get("identitiesonly") == "yes" and "identityfile" in self.ssh_config:
            self.connect_kwargs.update(look_for_keys=False, allow_agent=False)
        preload_first_key(self.connect_kwargs)
        # Fabric truncates to whole seconds; a silent host must not outlast this.
        self.connect_timeout = timeout
        self.keepalive = _keepalive(info, self.ssh_config)
        self.known_hosts = _known_hosts_path(info, self.ssh_config)
        self.client = KnownHostsClient(self.known_hosts)
        self.client.set_missing_host_key_policy(
            RefusePolicy() if info.strict_ssh else AcceptNewPolicy())

    def get_gateway(self) -> Any:
        """Fabric's ProxyJump hops, from ``proxy_jump`` first, else ssh_config's.

        Each hop is bounded by our ``connect_timeout`` (a silent hop must not hang
        the host) and judged by known_hosts as our own hosts are: Fabric's
        would accept any key, a changed one too.
        """
        info = self.hop_info
        if info is None:
            return super().get_gateway()
        if info.proxy_jump is not None:
            self.ssh_config["proxyjump"] = info.proxy_jump
        gateway = hop = super().get_gateway()
        timeout = float(info.connect_timeout)
        while isinstance(hop, Connection):
            hop.connect_timeout = timeout
            hop.connect_kwargs.update(banner_timeout=timeout, auth_timeout=timeout,
                                      channel_timeout=timeout)
            hop.client = KnownHostsClient(_known_hosts_path(info, hop.ssh_config))
            hop.client.set_missing_host_key_policy(
                RefusePolicy() if info.strict_ssh else AcceptNewPolicy())
            hop = hop.gateway
        return gateway

    def __setattr__(self, key: str, value: Any) -> None:
        # invoke's DataProxy tells attributes from config keys with ``key in
        # dir(self)``, listing some 200 names at each of the 20 sets a connection
        # makes (0.3 ms a host). Same test, without the list.
        if key in self.__dict__ or hasattr(type(self), key):
            object.__setattr__(self, key, value)
        else:
            super().__setattr__(key, value)

    def open(self) -> Any:
        """Connect within ``connect_timeout``, whatever stage a silent host stalls at.

        Raises a `HostError` naming this host: unreachable, refused key, or a
        changed host key.
        """
        with self._open_lock:  # two Execs in threads may share this connection
            if self.is_connected:
                return None
            result = self._open()
            monitor.watch(self.transport, *self.keepalive)
            return result

    def create_session(self) -> Any:
        """A session channel; a pooled connection found dead is opened anew, once.

        A host that dropped the connection (sshd restarted, a node rebooted) may
        do so just before paramiko's thread notices: opening a channel then
        fails although the next connection would work. Nothing was sent to run
        yet, so trying once more over a new connection runs nothing twice.
        """
        try:
            return super().create_session()
        except (SSHException, EOFError, OSError):
            self.close()
            self.open()
            return super().create_session()

    def close(self) -> None:
        with self.kept_lock:
            kept, self.kept = list(self.kept.values()), {}
        for item in kept:
            item.close()
        super().close()
        # Fabric leaves a ProxyJump hop's own connection open.
        if isinstance(self.gateway, Connection):
            self.gateway.close()

    @property
    def dead_reason(self) -> Optional[str]:
        """Why the keepalive monitor gave up on this host, if it did."""
        return getattr(self.transport, "dead_reason", None)

    def _open(self) -> Any:
        if self.gateway:  # ProxyCommand / ProxyJump: Fabric's own path
            if isinstance(self.gateway, Connection):
                self._open_hop(self.gateway)
            result = self._open_mapped(lambda: super(HostConnection, self).open())
            hop = getattr(self.gateway, "transport", None)  # ProxyJump: the hop's TCP link
            if isinstance(getattr(hop, "sock", None), socket.socket):
                _no_delay(hop.sock)
            return result
        sock = self._dial()
        started = time.monotonic()
        watchdog = monitor.after(self.connect_timeout, lambda: _shut(sock))
        self.connect_kwargs["sock"] = sock
        # Past the deadline, whichever stage gave up (banner, auth, the watchdog).
        expired = lambda: time.monotonic() - started >= self.connect_timeout - TICK  # noqa: E731
        try:
            return self._open_mapped(lambda: super(HostConnection, self).open(), expired)
        finally:
            watchdog.cancel()
            del self.connect_kwargs["sock"]

    def _open_hop(self, hop: Connection) -> None:
        """Open the ProxyJump hop: whatever stops it is this host's error, naming it."""
        try:
            hop.open()
        except Exception as e:  # noqa: BLE001 - a hop's failure is its host's result
            hop.close()
            raise UnreachableError(self.original_host, f"cannot reach ProxyJump hop "
                                   f"{hop.original_host} ({hop.host}:{hop.port}): "
                                   f"{str(e) or type(e).__name__}") from None

    def _dial(self) -> socket.socket:
        try:
            sock = socket.create_connection((self.host, self.port), self.connect_timeout)
        except socket.timeout:
            raise self._unreachable(f"no answer within {self.connect_timeout:g} s") from None
        except OSError as e:
            raise self._unreachable(e.strerror or str(e)) from None
        _no_delay(sock)
        return sock

    def _open_mapped(self, open_: Any, expired: Any = lambda: False) -> Any:
        try:
            return open_()
        except HostError as e:
            self.client.close()
            if e.host == self.original_host:
                raise
            # Raised by a host key policy, which knows only the address: name the host.
            raise type(e)(self.original_host, str(e)) from None
        except BadHostKeyException as e:
            self.client.close()
            raise HostKeyError(
                self.original_host,
                f"host key CHANGED: got {e.key.get_name()} {e.key.get_fingerprint().hex()}, "
                f"{self.known_hosts} has another; refusing (possible man-in-the-middle)",
            ) from None
        except AuthenticationException as e:
            self.client.close()
            if expired():  # the watchdog cut a host that went silent mid-authentication
                raise self._unreachable(f"no SSH answer within {self.connect_timeout:g} s "
                                        "(it stopped answering while authenticating)") from None
            raise AuthenticationError(self.original_host,
                                      f"authentication as {self.user!r} refused: {e}") from None
        except (SSHException, NoValidConnectionsError, OSError, EOFError) as e:
            self.client.close()
            if expired():
                raise self._unreachable(f"no SSH answer within {self.connect_timeout:g} s") \
                    from None
            raise self._unreachable(str(e) or type(e).__name__) from None

    def _unreachable(self, why: str) -> UnreachableError:
        hop = self.gateway.original_host if isinstance(self.gateway, Connection) else None
        via = f" through ProxyJump hop {hop}" if hop else ""
        return UnreachableError(self.original_host,
                                f"cannot connect to {self.host}:{self.port}{via}: {why}")


def _no_delay(sock: socket.socket) -> None:
    """Send each SSH packet at once, as OpenSSH does. With Nagle's algorithm a
    command's small packets wait for the peer's delayed ACK: a command on a cached
    connection took 50 ms instead of a few (bench/ssh.py, section 4)."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _keepalive(info: ExecInfo, ssh_config: Dict[str, Any]) -> Tuple[float, int]:
    """ExecInfo's keepalive, else ssh_config's ServerAlive*, as OpenSSH users expect."""
    interval = info.keepalive_interval
    if interval is None:
        interval = float(ssh_config.get("serveraliveinterval", DEFAULT_INTERVAL))
    count = info.keepalive_count
    if count is None:
        count = int(ssh_config.get("serveralivecountmax", DEFAULT_COUNT))
    return float(interval), count


def check_local_files(info: ExecInfo) -> None:
    """A key or known_hosts file that cannot be used is a typed error naming it (both
    are parsed once, so asking again costs a ``stat``)."""
    if info.pkey is not None:
        private_key(_expanded(info.pkey), info.pkey_passphrase)
    if info.known_hosts is not None:
        shared_host_keys(_expanded(info.known_hosts))


def _expanded(path: Any) -> str:
    return os.path.expanduser(os.fspath(path))


def _known_hosts_path(info: ExecInfo, ssh_config: Dict[str, Any]) -> str:
    if info.known_hosts is not None:
        path = os.fspath(info.known_hosts)
    else:
        files = ssh_config.get("userknownhostsfile")
        path = files.split()[0] if isinstance(files, str) else DEFAULT_KNOWN_HOSTS
    return os.path.expanduser(path)


# --------------------------------------------------------------------------- the pool

CacheKey = Tuple[Any, ...]


class ConnectionPool:
    """The process's SSH connections, reused by every later `Exec` and copy.

    How long a connection lives: from its first use until the process exits,
    `close_all` is called, its host breaks it (the next use reconnects), it
    stays idle ``idle_timeout`` seconds (None: no limit), or a fan-out needs
    room: idle connections beyond a run's ``max_parallel`` are closed, least
    recently used first, so that sockets and transport threads stay bounded
    by it. ``ExecInfo(reuse_connections=False)`` opts a run out: its
    connections are its own, closed when it ends.
    """

    def __init__(self, idle_timeout: Optional[float] = None) -> None:
        self.idle_timeout = idle_timeout
        #: Every connection made, by what it was made for.
        self._cache: Dict[CacheKey, HostConnection] = {}
        #: Open connections nobody uses, least recently released first, and those in use.
        self._idle: OrderedDict[int, HostConnection] = OrderedDict()
        self._busy: Dict[int, HostConnection] = {}
        self._configs: Dict[Optional[str], Config] = {}
        self._lock = threading.Lock()

    def _config(self, ssh_config: Optional[str]) -> Config:
        """One Fabric Config per ssh_config file: parsing it per connection is costly.

        ``ssh_config`` replaces the user's and system's files, as Fabric's
        ``runtime_ssh_path`` does; without it both are read, user's first.
        """
        with self._lock:
            if ssh_config not in self._configs:
                parsed = SshConfigFile()
                if ssh_config and not os.path.isfile(ssh_config):
                    raise PathNotFoundError("ssh_config", ssh_config, "no such file")
                for path in [ssh_config] if ssh_config else [USER_SSH_CONFIG, SYSTEM_SSH_CONFIG]:
                    path = os.path.expanduser(path)
                    if os.path.isfile(path):
                        with open(path) as f:
                            parsed.parse(f)
                self._configs[ssh_config] = ConnectionConfig(ssh_config=parsed)
            return self._configs[ssh_config]

    def ssh_config(self, info: ExecInfo) -> Any:
        """The parsed ssh_config that ``info``'s connections read (parsed once)."""
        path = None if info.ssh_config is None else os.path.expanduser(os.fspath(info.ssh_config))
        return self._config(path).base_ssh_config

    def connection(self, host: str, info: ExecInfo) -> HostConnection:
        """The connection to ``host`` for these settings (not opened yet).

        Raises `ExecInfoError` when ``pkey`` or ``known_hosts`` cannot be used, cached
        connection or not: every host's connection is asked for before any is dialled.
        """
        check_local_files(info)
        ssh_config = None if info.ssh_config is None else os.path.expanduser(
            os.fspath(info.ssh_config))
        key = (host, info.user, info.port, info.pkey and os.fspath(info.pkey), ssh_config,
               info.known_hosts and os.fspath(info.known_hosts), info.strict_ssh,
               info.connect_timeout, info.keepalive_interval, info.keepalive_count,
               info.proxy_jump, info.forward_agent)
        if not info.reuse_connections:
            return HostConnection(host, info, self._config(ssh_config))
        with self._lock:
            cxn = self._cache.get(key)
        if cxn is None:
            made = HostConnection(host, info, self._config(ssh_config))
            made.cache_key = key
            with self._lock:
                cxn = self._cache.setdefault(key, made)
        return cxn

    def hold(self, cxn: HostConnection) -> None:
        """``cxn`` is in use: `release` never closes it meanwhile."""
        with self._lock:
            cxn.users += 1
            self._idle.pop(id(cxn), None)
            self._busy[id(cxn)] = cxn

    def release(self, cxn: HostConnection, keep_open: int) -> None:
        """``cxn`` is idle again; close the least recently used idle ones beyond ``keep_open``.

        Only connections in use and idle open ones are looked at, never the whole
        cache: at most a few ``max_parallel``, however many hosts it holds.
        """
        with self._lock:
            cxn.users -= 1
            if cxn.users == 0:
                self._busy.pop(id(cxn), None)
                if self._cache.get(cxn.cache_key) is cxn:
                    self._idle[id(cxn)] = cxn
                    cxn.idle_since = time.monotonic()
            for key, idle in list(self._idle.items()):
                if not idle.is_connected:  # closed meanwhile, by its host or by us
                    del self._idle[key]
            # A connection in use counts even while it connects: it is open a moment later.
            excess = len(self._idle) + len(self._busy) - keep_open
            closing = [self._idle.popitem(last=False)[1]
                       for _ in range(min(excess, len(self._idle)))]
            if cxn.users == 0 and id(cxn) not in self._idle:
                closing.append(cxn)  # not reused: closed once its run is done with it
        for idle in closing:
            self._close_unused(idle)
        if self.idle_timeout is not None and cxn.users == 0:
            since = cxn.idle_since
            monitor.after(self.idle_timeout, lambda: self._expire(cxn, since))

    def _close_unused(self, cxn: HostConnection) -> None:
        # Another Exec may have taken it meanwhile: its open() waits for this
        # lock, then finds the connection closed and reconnects.
        with cxn._open_lock:
            with self._lock:
                unused = cxn.users == 0
            if unused:
                cxn.close()

    def _expire(self, cxn: HostConnection, since: float) -> None:
        """Close ``cxn`` if it has stayed idle since ``since`` (see ``idle_timeout``)."""
        with self._lock:
            if self._idle.get(id(cxn)) is not cxn or cxn.idle_since != since:
                return
            del self._idle[id(cxn)]
        threading.Thread(target=self._close_unused, args=(cxn,), daemon=True).start()

    def drop(self, cxn: HostConnection) -> None:
        """Close a connection and forget it (it broke, or its host stopped answering)."""
        with self._lock:
            if self._cache.get(cxn.cache_key) is cxn:
                del self._cache[cxn.cache_key]
            self._idle.pop(id(cxn), None)
        cxn.close()

    def lost(self, host: str, cxn: HostConnection, why: str) -> HostError:
        """The connection broke: forget it (the next call reconnects) and say why."""
        dead = cxn.dead_reason
        self.drop(cxn)
        if dead is not None:
            return HostStoppedAnsweringError(host, dead)
        return ConnectionLostError(host, why)

    def close_all(self) -> None:
        """Close every cached connection; later runs open new ones."""
        with self._lock:
            connections = list(self._cache.values())
            self._cache.clear()
            self._idle.clear()
        for cxn in connections:
            cxn.close()


#: The process's pool (``fabexec.connection_pool``).
pool = ConnectionPool()
atexit.register(pool.close_all)


def close_connections() -> None:
    """Close every cached connection (``fabexec.close_connections``)."""
    pool.close_all()


def connection_for(host: str, info: ExecInfo) -> HostConnection:
    """The pool's connection to ``host`` for these settings (not opened yet)."""
    return pool.connection(host, info)
