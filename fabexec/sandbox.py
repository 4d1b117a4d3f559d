"""A local cluster of real OpenSSH ``sshd`` daemons, for tests, demos and ``inv deploy``.

``up(4)`` starts four ``sshd`` processes and returns a `SandboxCluster` that says how to
reach them: aliases ``node1`` .. ``node4`` in an ``ssh_config``, a hostfile, a known_hosts
and a client key, all in one state folder (``$FABEXEC_SANDBOX_DIR``, else
``~/.cache/fabexec/sandbox``). ``down()`` stops exactly the daemons that folder records,
with every session they started, and nothing else.

As root, each node listens on port 22 of its own loopback address (127.0.1.1, 127.0.1.2,
...; see `loopback_ips`), runs in its own UTS and mount namespaces so that ``hostname``
answers ``nodeK`` and its /etc/hosts names every node, and lets in two users it creates:
``fabexec`` (passwordless sudo) and ``fabexec-pw`` (sudo asks for
`Cluster.sudo_password`). Not root's own login, because root's ``~/.bashrc`` may be slow
(pyenv init costs 80 ms per session here). The users and their sudo rules stay after
`down`, like an installed package.

Without root, each node listens on a free port of its own loopback address, only the
current user can log in, there is no sudo, and ``hostname`` answers the machine's own
name (`Cluster.own_hostnames` is False): changing it needs a UTS namespace, hence root.

Faults for tests are methods of `SandboxCluster`: `~SandboxCluster.freeze` /
`~SandboxCluster.thaw` (SIGSTOP / SIGCONT to a node's whole process tree) and
`~SandboxCluster.crash` (SIGKILL to its sessions, the listening daemon stays up).
"""

from __future__ import annotations

import json
import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from itertools import chain, islice
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Set, Tuple, Type, TypeVar, Union

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from .errors import SandboxError

SSHD = Path("/usr/sbin/sshd")
SUDO = Path("/usr/bin/sudo")
#: The login user of a sandbox started as root; it has passwordless sudo.
USER = "fabexec"
#: A second login user, whose sudo asks for `Cluster.sudo_password`.
PASSWORD_USER = "fabexec-pw"
#: Machine-wide, like the users: every state folder must see the same password.
PASSWORD_FILE = Path("/var/lib/fabexec/sandbox-sudo-password")
SUDOERS_FILE = Path("/etc/sudoers.d/fabexec-sandbox")
STATE_DIR_VAR = "FABEXEC_SANDBOX_DIR"
CLUSTER_FILE = "cluster.json"
#: Seconds that `up` waits for every node to accept TCP connections.
START_TIMEOUT = 60.0
#: Seconds that `down` waits for killed processes to be gone.
STOP_TIMEOUT = 10.0
#: Times a signal is sent again to processes that appeared meanwhile (a new session).
SIGNAL_ROUNDS = 10
#: 127.0.2.0/24 is reserved for other uses; the sandbox never takes an address there.
RESERVED_THIRD_OCTET = 2
MAX_NODES = 254 * 254

ClusterT = TypeVar("ClusterT", bound="Cluster")
PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class Cluster:
    """How to reach a cluster of SSH nodes, whoever runs them (the sandbox, docker).

    The fields after ``known_hosts`` say what the nodes offer, so that a test can skip
    what a cluster lacks: ``own_hostnames`` (``hostname`` answers the alias), ``sudo``
    (``user`` has passwordless sudo), ``password_user`` whose sudo needs
    ``sudo_password``.
    """

    state_dir: Path
    hosts: List[str]
    addresses: Dict[str, Tuple[str, int]]
    user: str
    key: Path
    hostfile: Path
    ssh_config: Path
    known_hosts: Path
    own_hostnames: bool = True
    sudo: bool = False
    password_user: Optional[str] = None
    sudo_password: Optional[str] = None

    def save(self) -> Path:
        """Write the cluster to ``state_dir/cluster.json`` (owner only: it may hold a password)."""
        path = self.state_dir / CLUSTER_FILE
        text = json.dumps(asdict(self), default=str, indent=2) + "\n"
        _write_private(path, text.encode())
        return path

    @classmethod
    def load(cls: Type[ClusterT], state_dir: PathLike) -> ClusterT:
        """The cluster saved in ``state_dir``; FileNotFoundError when there is none."""
        data = json.loads((Path(state_dir) / CLUSTER_FILE).read_text())
        for name in ("state_dir", "key", "hostfile", "ssh_config", "known_hosts"):
            data[name] = Path(data[name])
        data["addresses"] = {host: (ip, int(port)) for host, (ip, port) in
                             data["addresses"].items()}
        return cls(**data)


class SandboxCluster(Cluster):
    """A `Cluster` of sshd daemons this machine runs, which it can stop, freeze and crash."""

    def node_dir(self, host: str) -> Path:
        """Where the node's host key, sshd_config, PID file and log live."""
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
            state = _proc_state(pid) if pid else None
            states[host] = "stopped" if state is None else "frozen" if state in "tT" else "running"
        return states

    def freeze(self, host: str) -> None:
        """SIGSTOP the node's daemon and every session: it hangs like a host that froze.

        New TCP connections are still accepted by the kernel, but nothing answers.
        """
        _signal_nodes([self._running_pid(host)], signal.SIGSTOP)

    def thaw(self, host: str) -> None:
        """SIGCONT what `freeze` stopped: pending commands go on where they were."""
        _signal_nodes([self._running_pid(host)], signal.SIGCONT)

    def crash(self, host: str) -> None:
        """SIGKILL every session of the node, as a restart would; the daemon keeps listening."""
        daemon = self._running_pid(host)
        # Stopped first, all of them: killed one by one, a shell could see its
        # child die and report an exit status before its own turn came.
        _signal_nodes([daemon], signal.SIGSTOP, spare={daemon})
        _signal_nodes([daemon], signal.SIGKILL, spare={daemon})

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
    reusable = _running_cluster(state, nodes, as_root)
    if reusable is not None:
        return reusable
    down(state)
    (state / CLUSTER_FILE).unlink(missing_ok=True)
    _ensure_software(as_root)
    cluster = _write_files(state, nodes, as_root)
    pids: Dict[str, int] = {}
    try:
        pids = _launch(cluster)
        _wait_until_listening(cluster, pids, timeout)
    except BaseException:
        _stop(list(pids.values()))  # those that have not written their PID file yet
        down(state)
        raise
    cluster.save()
    return cluster


def down(state_dir: Optional[PathLike] = None) -> None:
    """Stop the daemons recorded in ``state_dir`` and every process of their nodes.

    Only processes found from those PID files (checked against the command line, so a
    reused PID is never hit): each daemon's descendants and, as root, every process
    in the node's UTS namespace, which catches sessions that left the tree. Doing it
    twice is harmless. Keys and configuration files stay for the next `up`.
    """
    nodes_dir = _state_path(state_dir) / "nodes"
    node_dirs = sorted(p for p in nodes_dir.iterdir() if p.is_dir()) if nodes_dir.is_dir() else []
    _stop([pid for pid in map(_daemon_pid, node_dirs) if pid is not None])
    for node_dir in node_dirs:
        (node_dir / "sshd.pid").unlink(missing_ok=True)


def _stop(daemons: List[int]) -> None:
    """SIGSTOP the nodes' processes until none forks any more, then SIGKILL them all."""
    stopped = _signal_nodes(daemons, signal.SIGSTOP)
    for pid in stopped:
        _kill(pid, signal.SIGKILL)
    _wait_gone(stopped)


# --- processes -------------------------------------------------------------------


def _proc_state(pid: int) -> Optional[str]:
    """The process's state letter (R, S, T, ...), None when gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None
    return None if state in "ZXx" else state


class _Processes:
    """A snapshot of this machine's live processes: parent and UTS namespace of each."""

    def __init__(self) -> None:
        self.children: Dict[int, List[int]] = defaultdict(list)
        self.in_uts: Dict[str, Set[int]] = defaultdict(set)
        self.uts: Dict[int, str] = {}
        self.own_uts = os.readlink("/proc/self/ns/uts")
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                uts = os.readlink(f"/proc/{pid}/ns/uts")
            except (OSError, IndexError):  # gone meanwhile, or not ours to read
                continue
            if fields[0] in "ZXx":
                continue
            self.children[int(fields[1])].append(pid)
            self.uts[pid] = uts
            self.in_uts[uts].add(pid)

    def of_node(self, daemon: int) -> Set[int]:
        """The daemon, its descendants and, when the node has its own UTS namespace,
        every process in it (a double-forked daemon leaves the tree, not the namespace)."""
        if daemon not in self.uts:
            return set()
        found, todo = set(), [daemon]
        while todo:
            pid = todo.pop()
            if pid not in found:
                found.add(pid)
                todo.extend(self.children.get(pid, ()))
        if self.uts[daemon] != self.own_uts:
            found |= self.in_uts[self.uts[daemon]]
        return found


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _signal_nodes(daemons: List[int], sig: int, spare: Iterable[int] = ()) -> Set[int]:
    """Send ``sig`` to every process of these nodes but ``spare``; return the PIDs signalled.

    Looks again until no new process shows up (bounded), so that a session forked while
    signals were being sent is not missed.
    """
    skip, sent = set(spare), set()
    for _ in range(SIGNAL_ROUNDS):
        procs = _Processes()
        targets = set().union(*(procs.of_node(pid) for pid in daemons)) - skip - sent
        if not targets:
            break
        for pid in targets:
            _kill(pid, sig)
        sent |= targets
    return sent


def _wait_gone(pids: Set[int]) -> None:
    deadline = time.monotonic() + STOP_TIMEOUT
    left = set(pids)
    for _ in range(int(STOP_TIMEOUT / 0.01)):
        left = {pid for pid in left if _proc_state(pid) is not None}
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    if left:
        raise SandboxError(f"processes {sorted(left)} survived SIGKILL for {STOP_TIMEOUT:.0f} s")


def _daemon_pid(node_dir: Path) -> Optional[int]:
    """The live PID in the node's PID file, if its command line names the node's config.

    sshd rewrites its command line into one string (``sshd: /usr/sbin/sshd -D -f ...
    [listener]``), hence words split at blanks too: state paths hold none.
    """
    try:
        pid = int((node_dir / "sshd.pid").read_text().split()[0])
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            words = re.split(rb"[\0 ]", f.read())
    except (OSError, ValueError, IndexError):
        return None
    ours = os.fsencode(node_dir / "sshd_config") in words
    return pid if ours and _proc_state(pid) is not None else None


# --- what the machine needs --------------------------------------------------------


def _run(*argv: str, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, **kwargs)
    if check and proc.returncode != 0:
        raise SandboxError(f"`{shlex.join(argv)}` failed ({proc.returncode}): "
                           f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def _ensure_software(as_root: bool) -> None:
    """Install openssh-server (and sudo, as root) with apt-get when they are missing."""
    needed = {"openssh-server": SSHD, "sudo": SUDO} if as_root else {"openssh-server": SSHD}
    missing = [package for package, path in needed.items() if not path.exists()]
    if not missing:
        return
    if not as_root:
        raise SandboxError(f"{SSHD} is missing: install it with "
                           "`sudo apt-get install -y openssh-server`, or run up() as root")
    if shutil.which("apt-get") is None:
        raise SandboxError(f"{', '.join(missing)} missing and no apt-get here: install "
                           f"them with this system's package manager")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ("apt-get", "install", "-y", *missing)
    if _run(*install, check=False, env=env).returncode != 0:
        _run("apt-get", "update", env=env)  # the package lists may be missing or stale
        _run(*install, env=env)


def _namespaces_work() -> bool:
    """Whether a node may have its own hostname and /etc/hosts.

    Not in every container, even as root: tried with ``unshare --uts --mount`` and a
    bind mount, as `_launch` does.
    """
    trial = ("unshare", "--uts", "--mount", "mount", "--bind", "/etc/hosts", "/etc/hosts")
    return _run(*trial, check=False).returncode == 0


def _openssh_version() -> Tuple[int, int]:
    proc = _run(str(SSHD), "-V", check=False)
    found = re.search(r"OpenSSH_(\d+)\.(\d+)", proc.stderr + proc.stdout)
    return (int(found[1]), int(found[2])) if found else (0, 0)


def _shadow_password(user: str) -> Optional[str]:
    """The user's password field in /etc/shadow, None when the user does not exist."""
    proc = _run("getent", "shadow", user, check=False)
    return proc.stdout.split(":")[1] if proc.returncode == 0 else None


def _ensure_user(user: str) -> bool:
    """Create the user with a home and bash unless it exists; True when created now."""
    if _shadow_password(user) is not None:
        return False
    created = _run("useradd", "--create-home", "--user-group", "--shell", "/bin/bash", user,
                   check=False)
    if created.returncode != 0 and _shadow_password(user) is None:  # not made by a rival `up`
        raise SandboxError(f"cannot create user {user}: {created.stderr.strip()}")
    return created.returncode == 0


def _ensure_users() -> str:
    """Create the sandbox's users and sudo rules (once); return fabexec-pw's password.

    ``fabexec`` gets ``*`` as password: no password login, yet not locked (``!``),
    which sshd refuses with UsePAM no.
    """
    _ensure_user(USER)
    if _shadow_password(USER) != "*":
        _run("usermod", "--password", "*", USER)
    created = _ensure_user(PASSWORD_USER)
    password, new_password = _sudo_password()
    if created or new_password or _shadow_password(PASSWORD_USER) in ("", "!", "*"):
        _run("chpasswd", input=f"{PASSWORD_USER}:{password}\n")
    _ensure_sudoers()
    return password


def _sudo_password() -> Tuple[str, bool]:
    """fabexec-pw's password from PASSWORD_FILE, made now if absent (then True).

    Written aside and linked into place, so a rival `up` reads a whole file or makes it.
    """
    PASSWORD_FILE.parent.mkdir(parents=True, exist_ok=True)
    draft = PASSWORD_FILE.with_name(f"{PASSWORD_FILE.name}.{os.getpid()}")
    password = secrets.token_urlsafe(12)
    _write_private(draft, f"{password}\n".encode())
    try:
        os.link(draft, PASSWORD_FILE)
    except FileExistsError:
        return PASSWORD_FILE.read_text().strip(), False
    finally:
        draft.unlink()
    return password, True


def _ensure_sudoers() -> None:
    """Write the sudo rules, checked by visudo first: a broken file would break all sudo.

    No credential caching for fabexec-pw, so every sudo of it needs the password.
    """
    rules = (
        "# Written by fabexec.sandbox: the sandbox's login users.\n"
        f"{USER} ALL=(ALL:ALL) NOPASSWD: ALL\n"
        f"Defaults:{PASSWORD_USER} timestamp_timeout=0, lecture=never\n"
        f"{PASSWORD_USER} ALL=(ALL:ALL) ALL\n"
    )
    if SUDOERS_FILE.exists() and SUDOERS_FILE.read_text() == rules:
        return
    draft = SUDOERS_FILE.with_name(SUDOERS_FILE.name + ".new")  # sudo skips names with a dot
    draft.write_text(rules)
    draft.chmod(0o440)
    _run("visudo", "-c", "-q", "-f", str(draft))
    os.replace(draft, SUDOERS_FILE)


# --- files -------------------------------------------------------------------------


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _keypair(path: Path, comment: str) -> str:
    """The public line of the ed25519 key at ``path``, generated (with ``.pub``) if absent."""
    public = path.with_name(path.name + ".pub")
    if path.exists() and public.exists():
        return public.read_text().strip()
    key = Ed25519PrivateKey.generate()
    _write_private(path, key.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption()))
    line = key.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
    public.write_text(f"{line} {comment}\n")
    return f"{line} {comment}"


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


def _running_cluster(state: Path, nodes: int, as_root: bool) -> Optional[SandboxCluster]:
    try:
        cluster = SandboxCluster.load(state)
    except (OSError, ValueError, TypeError, KeyError):
        return None
    fits = len(cluster.hosts) == nodes and cluster.sudo == as_root
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


def _write_files(state: Path, nodes: int, as_root: bool) -> SandboxCluster:
    """Keys (kept from an earlier `up`), each node's sshd_config, and the client files."""
    hosts = [f"node{k}" for k in range(1, nodes + 1)]
    if as_root:
        user, password_user, password = USER, PASSWORD_USER, _ensure_users()
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation
    else:
        user, password_user, password = pwd.getpwuid(os.getuid()).pw_name, None, None
    cluster = SandboxCluster(
        state_dir=state, hosts=hosts, addresses=dict(zip(hosts, _addresses(nodes, as_root))),
        user=user, key=state / "id_ed25519", hostfile=state / "hostfile",
        ssh_config=state / "ssh_config", known_hosts=state / "known_hosts",
        own_hostnames=as_root and _namespaces_work(), sudo=as_root,
        password_user=password_user, sudo_password=password,
    )
    client = _keypair(cluster.key, f"fabexec-sandbox-client@{state}")
    (state / "authorized_keys").write_text(client + "\n")
    version = _openssh_version()
    known = []
    for host in hosts:
        node_dir = cluster.node_dir(host)
        node_dir.mkdir(parents=True, exist_ok=True)
        public = _keypair(node_dir / "ssh_host_ed25519_key", host)
        config = _sshd_config(node_dir, cluster.addresses[host], cluster, as_root, version)
        (node_dir / "sshd_config").write_text(config)
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


# --- starting ----------------------------------------------------------------------


def _launch(cluster: SandboxCluster) -> Dict[str, int]:
    """Start every node's ``sshd -D`` and return their PIDs.

    One shell starts them all and stays as their parent to reap them, detached from
    us: the daemons outlive this process (``inv cluster.up``), and no zombie is left
    where PID 1 does not reap orphans (some containers). With ``own_hostnames`` each
    node gets its own UTS and mount namespaces, its hostname and the cluster's
    /etc/hosts (bound over the machine's in its namespace only) before exec'ing sshd,
    which keeps the PID.
    """
    script = ["("]
    for host in cluster.hosts:
        node_dir = cluster.node_dir(host)
        log = node_dir / "sshd.log"
        argv = [str(SSHD), "-D", "-f", str(node_dir / "sshd_config"), "-E", str(log)]
        if cluster.own_hostnames:
            setup = ('hostname "$1" && mount --bind "$2" /etc/hosts && '
                     f'{_expose_home(Path.home())}shift 2 && exec "$@"')
            hosts_file = str(cluster.state_dir / "hosts")
            argv = ["unshare", "--uts", "--mount", "sh", "-c", setup, "sh", host, hosts_file,
                    *argv]
        script.append(f"{shlex.join(argv)} </dev/null >>{shlex.quote(str(log))} 2>&1 &")
        script.append('echo "$!"')
    script += ["exec >/dev/null", "wait", ") &"]
    # On stdin, not as an argument: Linux caps one argument at 128 KiB, which 256
    # nodes' lines exceed (E2BIG).
    proc = subprocess.run(["sh", "-s"], input="\n".join(script) + "\n",
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                          start_new_session=True, timeout=START_TIMEOUT, check=True)
    pids = dict(zip(cluster.hosts, map(int, proc.stdout.split())))
    if len(pids) != len(cluster.hosts):
        raise SandboxError(f"started {len(pids)} of {len(cluster.hosts)} sshd daemons")
    return pids


def _expose_home(home: Path) -> str:
    """Shell for a node's mount namespace: ``home`` traversable (0711), as a shared home is.

    Root's home is 0700, so the nodes' users could not run what is installed under it:
    Hydra (pip's mpich) starts ``hydra_pmi_proxy`` on every node by its path here. In
    the node's own namespace only, a 0711 tmpfs covers the home and each entry is bound
    back from a view kept under /mnt; nothing changes on the machine. Empty when the
    home is traversable already.
    """
    if home.stat().st_mode & 0o001:
        return ""
    view, quoted = "/mnt/fabexec-home", shlex.quote(str(home))
    return (f"mount -t tmpfs tmpfs /mnt && mkdir {view} && mount --rbind {quoted} {view} && "
            f"mount -t tmpfs -o mode=0711 tmpfs {quoted} && "
            f'for e in {view}/.[!.]* {view}/*; do [ -e "$e" ] || continue; '
            f'n={quoted}/"${{e##*/}}"; if [ -d "$e" ]; then mkdir "$n"; else : > "$n"; fi; '
            'mount --rbind "$e" "$n" || exit 1; done && ')


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
    port accepts.
    """
    deadline = time.monotonic() + timeout
    pending = list(cluster.hosts)
    for _ in range(int(timeout / 0.02) + 1):
        pending = [host for host in pending
                   if _daemon_pid(cluster.node_dir(host)) != pids[host]
                   or not _accepts(cluster.addresses[host])]
        for host in pending:
            if _proc_state(pids[host]) is None:
                log = (cluster.node_dir(host) / "sshd.log").read_text(errors="replace").strip()
                raise SandboxError(f"{host}: sshd exited at start: {log or 'no log'}")
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    if pending:
        raise SandboxError(f"{', '.join(pending)}: sshd did not listen within {timeout:.0f} s")
