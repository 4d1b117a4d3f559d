"""Running the sandbox's nodes: each one real ``sshd -D`` on a loopback address of its own.

`up` writes each node's sshd_config, host key and the client's files (ssh_config,
known_hosts, hostfile, key) into the state folder, starts the daemons and waits until they
listen; `down` stops exactly the daemons that folder records. What the machine must have
first is in `.software`; how a node is broken or stopped is in `.faults`.
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from itertools import chain, islice
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

from ..errors import SandboxError
from . import faults, isolation
from .cluster import CLUSTER_FILE, Cluster, PathLike
from .isolation import Isolation
from .software import (
    PASSWORD_USER,
    SSHD,
    USER,
    ensure_software,
    ensure_users,
    keypair,
    openssh_version,
)

STATE_DIR_VAR = "FABEXEC_SANDBOX_DIR"
#: Seconds that `up` waits for every node to accept TCP connections.
START_TIMEOUT = 60.0
#: 127.0.2.0/24 is reserved for other uses; the sandbox never takes an address there.
RESERVED_THIRD_OCTET = 2
MAX_NODES = 254 * 254
#: Times `up` starts the nodes afresh when another program took a node's port between
#: our check and sshd's bind (other sandboxes on this machine use the same addresses).
START_ATTEMPTS = 3


class _PortTaken(SandboxError):
    """A node's sshd could not bind its port: taken since `_addresses` found it free."""


class SandboxCluster(Cluster):
    """A `Cluster` of sshd daemons this machine runs, which it can stop, freeze and crash."""

    def node_dir(self, host: str) -> Path:
        """Where the node's host key, sshd_config, PID files, log and own folders live."""
        if host not in self.hosts:
            raise ValueError(f"no node {host!r} in the sandbox (nodes: {', '.join(self.hosts)})")
        return self.state_dir / "nodes" / host

    def pid(self, host: str) -> Optional[int]:
        """The PID of the node's listening sshd, or None when it is not running."""
        return _daemon_pid(self.node_dir(host))

    def status(self) -> Dict[str, str]:
        """Each node's state: ``running``, ``frozen`` (SIGSTOPped) or ``stopped``."""
        states = {}
        for host in self.hosts:
            pid = self.pid(host)
            state = faults.proc_state(pid) if pid else None
            states[host] = "stopped" if state is None else "frozen" if state in "tT" else "running"
        return states

    def freeze(self, host: str) -> None:
        """SIGSTOP the node's daemon and every session: it hangs like a host that froze.

        New TCP connections are still accepted by the kernel, but nothing answers.
        """
        faults.freeze(self._running_pid(host))

    def thaw(self, host: str) -> None:
        """SIGCONT what `freeze` stopped: pending commands go on where they were."""
        faults.thaw(self._running_pid(host))

    def crash(self, host: str) -> None:
        """SIGKILL every session of the node, as a restart would; the daemon keeps listening."""
        faults.crash(self._running_pid(host))

    def processes(self, host: str) -> Set[int]:
        """PIDs, as this machine sees them, of the node's processes (daemon included)."""
        return faults.processes(self._running_pid(host))

    def down(self) -> None:
        """Stop this cluster's daemons and sessions (see `down`)."""
        down(self.state_dir)

    def _running_pid(self, host: str) -> int:
        pid = self.pid(host)
        if pid is None:
            raise SandboxError(f"{host}: sshd is not running (start it with sandbox.up)")
        return pid


def default_state_dir() -> Path:
    """``$FABEXEC_SANDBOX_DIR``, else ``~/.cache/fabexec/sandbox``."""
    env = os.environ.get(STATE_DIR_VAR)
    return Path(env) if env else Path.home() / ".cache" / "fabexec" / "sandbox"


def loopback_ips() -> Iterator[str]:
    """The nodes' addresses in order: 127.0.1.1-254, then 127.0.3.x, 127.0.4.x, ...

    127.0.0.x holds localhost, which fabexec runs without SSH; 127.0.2.0/24 is reserved
    for other uses.
    """
    thirds = chain([1], range(RESERVED_THIRD_OCTET + 1, 256))
    return (f"127.0.{third}.{fourth}" for third in thirds for fourth in range(1, 255))


def up(nodes: int = 4, state_dir: Optional[PathLike] = None, *,
       timeout: float = START_TIMEOUT) -> SandboxCluster:
    """Start ``nodes`` sshd daemons, or reuse those already running from ``state_dir``.

    Returns once every node accepts TCP connections (waiting at most ``timeout``
    seconds). A cluster of another size, or with a node stopped or frozen, is stopped
    and started afresh. If anything fails, what was started is stopped again.
    """
    if not 1 <= nodes <= MAX_NODES:
        raise ValueError(f"nodes={nodes}: the sandbox runs 1 to {MAX_NODES} nodes")
    state = _prepare_state_dir(state_dir)
    as_root = os.geteuid() == 0
    allowed = Isolation.allowed(as_root)
    reusable = _running_cluster(state, nodes, as_root, allowed)
    if reusable is not None:
        return reusable
    down(state)
    (state / CLUSTER_FILE).unlink(missing_ok=True)
    ensure_software(as_root)
    for _ in range(START_ATTEMPTS - 1):
        try:
            return _start(state, nodes, as_root, allowed, timeout)
        except _PortTaken:
            pass  # checked again, the ports give that node another one
    return _start(state, nodes, as_root, allowed, timeout)


def _start(state: Path, nodes: int, as_root: bool, allowed: Isolation,
           timeout: float) -> SandboxCluster:
    """Write the files and start the daemons; if anything fails, stop what was started."""
    cluster = _write_files(state, nodes, as_root, allowed)
    pids: Dict[str, int] = {}
    try:
        pids = _launch(cluster, timeout)
        _wait_until_listening(cluster, pids, timeout)
    except BaseException:
        faults.stop(list(pids.values()))  # those that have not written their PID file yet
        down(state)
        raise
    cluster.save()
    return cluster


def down(state_dir: Optional[PathLike] = None) -> None:
    """Stop the daemons recorded in ``state_dir`` and every process of their nodes.

    Only processes found from those PID files (checked against the command line, so a
    reused PID is never hit): each daemon's descendants and, as root, every process
    in the node's UTS namespace, which catches sessions that left the tree. Then the
    nodes' own folders (/tmp, home, ...) go. Doing it twice is harmless. Keys and
    configuration files stay for the next `up`.
    """
    nodes_dir = _state_path(state_dir) / "nodes"
    node_dirs = sorted(p for p in nodes_dir.iterdir() if p.is_dir()) if nodes_dir.is_dir() else []
    faults.stop([pid for pid in map(_daemon_pid, node_dirs) if pid is not None])
    for node_dir in node_dirs:
        (node_dir / "sshd.pid").unlink(missing_ok=True)
        isolation.remove_folders(node_dir)


def _daemon_pid(node_dir: Path) -> Optional[int]:
    """The node's sshd, by the PID this machine sees, once it listens; else None.

    sshd writes its PID file once listening (so a program that took its port meanwhile
    is never taken for it); in a PID namespace of its own that file holds its PID there,
    and the node's start wrote the machine's to `~.isolation.HOST_PID_FILE`. The PID
    counts if its command line names the node's config. sshd rewrites its command line
    into one string (``sshd: /usr/sbin/sshd -D -f ... [listener]``), hence words split
    at blanks too: state paths hold none.
    """
    host_pid = node_dir / isolation.HOST_PID_FILE
    try:
        pid = int((node_dir / "sshd.pid").read_text().split()[0])
        if host_pid.exists():
            pid = int(host_pid.read_text().split()[0])
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            words = re.split(rb"[\0 ]", f.read())
    except (OSError, ValueError, IndexError):
        return None
    ours = os.fsencode(node_dir / "sshd_config") in words
    return pid if ours and faults.proc_state(pid) is not None else None


def _state_path(state_dir: Optional[PathLike]) -> Path:
    """Absolute, as the daemons' command lines name it (see `_daemon_pid`)."""
    state = Path(state_dir) if state_dir is not None else default_state_dir()
    return state.expanduser().resolve()


def _prepare_state_dir(state_dir: Optional[PathLike]) -> Path:
    state = _state_path(state_dir)
    if re.search(r"[\s\"'%#]", str(state)):
        raise ValueError(f"state_dir={str(state)!r}: sshd_config and ssh_config cannot hold "
                         "blanks, quotes, % or # in a path; choose another folder")
    state.mkdir(parents=True, exist_ok=True)
    state.chmod(0o700)
    return state


def _running_cluster(state: Path, nodes: int, as_root: bool,
                     allowed: Isolation) -> Optional[SandboxCluster]:
    """The cluster running from ``state`` if it is the one `up` would start now."""
    try:
        cluster = SandboxCluster.load(state)
    except (OSError, ValueError, TypeError, KeyError):
        return None
    fits = (len(cluster.hosts) == nodes and cluster.sudo == as_root
            and _isolation(cluster) == allowed)
    running = fits and set(cluster.status().values()) == {"running"}
    return cluster if running else None


def _addresses(count: int, as_root: bool) -> List[Tuple[str, int]]:
    """Each node's own loopback address, with port 22 where root can have it.

    Port 22 may already be taken there (another sandbox, a system sshd listening on
    every address): then, as without root, a free port of that address.
    """
    return [(ip, 22 if as_root and can_bind(ip, 22) else _free_port(ip))
            for ip in islice(loopback_ips(), count)]


def can_bind(ip: str, port: int) -> bool:
    """Whether a daemon could listen on ``ip:port`` now (nothing else holds it)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as sshd does
        try:
            sock.bind((ip, port))
        except OSError:
            return False
    return True


def _free_port(ip: str) -> int:
    with socket.socket() as sock:
        sock.bind((ip, 0))
        return sock.getsockname()[1]


def _sshd_config(node_dir: Path, address: Tuple[str, int], cluster: SandboxCluster,
                 as_root: bool, version: Tuple[int, int]) -> str:
    """One node's sshd settings: keys only, no DNS, room for many parallel sessions."""
    ip, port = address
    authorized = cluster.state_dir / "authorized_keys"
    lines = [
        f"ListenAddress {ip}:{port}",
        f"HostKey {node_dir / 'ssh_host_ed25519_key'}",
        f"PidFile {node_dir / 'sshd.pid'}",
        "UsePAM no",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes",
        "PermitRootLogin no",
        f"AllowUsers {cluster.user} {cluster.password_user or ''}".rstrip(),
        "UseDNS no",
        "LogLevel ERROR",
        "MaxStartups 1024:30:2048",
        "MaxSessions 256",
        "PrintMotd no",
        "PrintLastLog no",
        "X11Forwarding no",
        "Subsystem sftp internal-sftp",
    ]
    if as_root:
        # sshd reads AuthorizedKeysFile as the user, who cannot enter root's state folder.
        lines += ["AuthorizedKeysFile none",
                  f"AuthorizedKeysCommand {shutil.which('cat') or '/bin/cat'} {authorized}",
                  "AuthorizedKeysCommandUser root"]
    else:
        lines += [f"AuthorizedKeysFile {authorized}",
                  "StrictModes no"]  # the state folder may sit under a sticky /tmp
    if version >= (9, 8):
        lines.append("PerSourcePenalties no")  # many test connections are not an attack
    return "\n".join(lines) + "\n"


def _ssh_config(cluster: SandboxCluster) -> str:
    blocks = []
    for host in cluster.hosts:
        ip, port = cluster.addresses[host]
        blocks.append(
            f"Host {host}\n"
            f"    HostName {ip}\n"
            f"    Port {port}\n"
            f"    User {cluster.user}\n"
            f"    IdentityFile {cluster.key}\n"
            "    IdentitiesOnly yes\n"
            f"    UserKnownHostsFile {cluster.known_hosts}\n"
            "    GlobalKnownHostsFile /dev/null\n"
            "    StrictHostKeyChecking yes\n"
            # OpenSSH 9's post-quantum default costs 80 ms of CPU per connection here.
            "    KexAlgorithms curve25519-sha256\n"
        )
    return "\n".join(blocks)


def _known_host(alias: str, address: Tuple[str, int], public: str) -> str:
    """The node's key under its alias and under the name OpenSSH and paramiko look up."""
    ip, port = address
    name = ip if port == 22 else f"[{ip}]:{port}"
    return f"{alias},{name} {' '.join(public.split()[:2])}\n"


def _write_files(state: Path, nodes: int, as_root: bool, allowed: Isolation) -> SandboxCluster:
    """Keys (kept from an earlier `up`), each node's sshd_config and own folders, the
    nodes' start script, and the client files."""
    hosts = [f"node{k}" for k in range(1, nodes + 1)]
    if as_root:
        user, password_user, password = USER, PASSWORD_USER, ensure_users()
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation
    else:
        user, password_user, password = pwd.getpwuid(os.getuid()).pw_name, None, None
    cluster = SandboxCluster(
        state_dir=state, hosts=hosts, addresses=dict(zip(hosts, _addresses(nodes, as_root))),
        user=user, key=state / "id_ed25519", hostfile=state / "hostfile",
        ssh_config=state / "ssh_config", known_hosts=state / "known_hosts",
        own_hostnames=allowed.mounts, own_folders=allowed.mounts,
        own_processes=allowed.processes, sudo=as_root,
        password_user=password_user, sudo_password=password,
    )
    if allowed.mounts:
        homes = isolation.Homes.of([user, password_user] if password_user else [user])
        (state / isolation.START_SCRIPT).write_text(isolation.start_script(state, allowed, homes))
    client = keypair(cluster.key, f"fabexec-sandbox-client@{state}")
    (state / "authorized_keys").write_text(client + "\n")
    version = openssh_version()
    known = []
    for host in hosts:
        node_dir = cluster.node_dir(host)
        node_dir.mkdir(parents=True, exist_ok=True)
        public = keypair(node_dir / "ssh_host_ed25519_key", host)
        config = _sshd_config(node_dir, cluster.addresses[host], cluster, as_root, version)
        (node_dir / "sshd_config").write_text(config)
        if allowed.mounts:
            isolation.fresh_folders(node_dir, homes)
        known.append(_known_host(host, cluster.addresses[host], public))
    cluster.known_hosts.write_text("".join(known))
    cluster.ssh_config.write_text(_ssh_config(cluster))
    cluster.hostfile.write_text("".join(f"{host}\n" for host in hosts))
    if cluster.own_hostnames:
        _etc_hosts(cluster).chmod(0o644)
    return cluster


def _etc_hosts(cluster: SandboxCluster) -> Path:
    """The /etc/hosts the nodes see: this machine's, plus every node's alias.

    sudo resolves the hostname and warns (after a DNS query) when it cannot; and
    processes on one node can reach the others by name.
    """
    path = cluster.state_dir / "hosts"
    nodes = "".join(f"{cluster.addresses[host][0]} {host}\n" for host in cluster.hosts)
    path.write_text(f"{Path('/etc/hosts').read_text()}\n# fabexec sandbox nodes\n{nodes}")
    return path


def _isolation(cluster: SandboxCluster) -> Isolation:
    return Isolation(mounts=cluster.own_folders, processes=cluster.own_processes)


def _launch(cluster: SandboxCluster, timeout: float) -> Dict[str, int]:
    """Start every node's ``sshd -D`` and return the PIDs started (see below).

    One shell starts them all and stays as their parent to reap them, detached from
    us: the daemons outlive this process (``inv cluster.up``), and no zombie is left
    where PID 1 does not reap orphans (some containers). Where nodes have namespaces,
    that shell prepares what they share (`.isolation.launch_setup`), then each node runs
    the start script of `.isolation` under ``unshare`` before exec'ing sshd; the PID
    started is then ``unshare``'s, which waits for the node's first process when the
    node has its own PID namespace, and is sshd itself otherwise.
    """
    separate = _isolation(cluster)
    setup = isolation.launch_setup(cluster.state_dir) if separate.mounts else []
    script = ["set -e", *setup, "set +e", "(", "exec 2>/dev/null"]
    for host in cluster.hosts:
        node_dir = cluster.node_dir(host)
        log = node_dir / "sshd.log"
        argv = [str(SSHD), "-D", "-f", str(node_dir / "sshd_config"), "-E", str(log)]
        if separate.mounts:
            start = str(cluster.state_dir / isolation.START_SCRIPT)
            argv = [*separate.unshare(), "sh", start, host, *argv]
        script.append(f"{shlex.join(argv)} </dev/null >>{shlex.quote(str(log))} 2>&1 &")
        script.append('echo "$!"')
    script += ["exec >/dev/null", "wait", ") &"]
    # On stdin, not as an argument: Linux caps one argument at 128 KiB, which 256
    # nodes' lines exceed (E2BIG).
    proc = subprocess.run([*separate.launcher(), "sh", "-s"], input="\n".join(script) + "\n",
                          capture_output=True, text=True, start_new_session=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise SandboxError(f"cannot start the nodes: {proc.stderr.strip() or proc.returncode}")
    pids = dict(zip(cluster.hosts, map(int, proc.stdout.split())))
    if len(pids) != len(cluster.hosts):
        raise SandboxError(f"started {len(pids)} of {len(cluster.hosts)} sshd daemons")
    return pids


@contextmanager
def second_sshd(cluster: SandboxCluster, host: str, settings: str = "",
                timeout: float = START_TIMEOUT) -> Iterator[Tuple[str, int]]:
    """A second sshd of ``host`` on a port of its own, without the SFTP subsystem and
    with ``settings`` added (``Ciphers ...``, ``ForceCommand ...``); stopped by its PID.

    Where nodes have namespaces of their own it runs in the node's (its hostname, its
    files, its processes: the sessions it forks are the node's), so its config and
    log are kept in the node's state folder, which the node sees at the same path.
    """
    ip = cluster.addresses[host][0]
    port = _free_port(ip)
    config = (cluster.node_dir(host) / "sshd_config").read_text()
    config = re.sub(r"(?m)^(ListenAddress|PidFile|Subsystem) .*\n", "", config)
    folder = Path(tempfile.mkdtemp(prefix=f"sshd-{port}-", dir=cluster.node_dir(host)))
    (folder / "sshd_config").write_text(f"{config}ListenAddress {ip}:{port}\nPidFile none\n"
                                        f"{settings}")
    enter: List[str] = []
    if cluster.own_hostnames:
        enter = ["nsenter", "--target", str(cluster.pid(host)), "--uts", "--mount"]
        # --no-fork: the daemon keeps the PID we start (and stop); what it forks is the node's.
        enter += ["--pid", "--no-fork"] if cluster.own_processes else []
        enter.append("--")
    daemon = subprocess.Popen([*enter, str(SSHD), "-D", "-f", str(folder / "sshd_config"),
                               "-E", str(folder / "sshd.log")])
    try:
        deadline = time.monotonic() + timeout
        while not _accepts((ip, port)):
            if daemon.poll() is not None or time.monotonic() > deadline:
                log = (folder / "sshd.log").read_text() if (folder / "sshd.log").exists() else ""
                raise SandboxError(f"{host}: a second sshd on {ip}:{port} did not start: "
                                   f"{log.strip() or 'no log'}")
            time.sleep(0.05)
        yield ip, port
    finally:
        daemon.terminate()
        daemon.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


def _accepts(address: Tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=1.0):
            return True
    except OSError:
        return False


def _wait_until_listening(cluster: SandboxCluster, pids: Dict[str, int], timeout: float) -> None:
    """Return once every node accepts a TCP connection; raise if one dies or is too slow.

    A node is up when its sshd has written its PID file, which it does once listening
    (so another program that took the port meanwhile is not mistaken for it), and the
    port accepts. ``pids`` are those `_launch` started: one gone means its node died.
    """
    deadline = time.monotonic() + timeout
    pending = list(cluster.hosts)
    for _ in range(int(timeout / 0.02) + 1):
        pending = [host for host in pending
                   if _daemon_pid(cluster.node_dir(host)) is None
                   or not _accepts(cluster.addresses[host])]
        for host in pending:
            if faults.proc_state(pids[host]) is None:
                log = (cluster.node_dir(host) / "sshd.log").read_text(errors="replace").strip()
                error = _PortTaken if "Address already in use" in log else SandboxError
                raise error(f"{host}: sshd exited at start: {log or 'no log'}")
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    if pending:
        raise SandboxError(f"{', '.join(pending)}: sshd did not listen within {timeout:.0f} s")

