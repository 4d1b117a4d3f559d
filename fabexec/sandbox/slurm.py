"""A real multi-node Slurm cluster on this one machine, for tests and benchmarks.

One ``slurmctld`` and N ``slurmd -N nX`` (Debian's build runs several slurmd
per host), with a ``munged`` of their own (``--socket`` in a folder of /tmp
named after the state folder: munged wants every folder above its socket
searchable by all, which a home such as /root is not),
all inside a network namespace this module makes (``unshare --net``). Slurm
22.05 listens on 0.0.0.0 whatever it is told, so the namespace is what keeps
it off the machine's network: nothing it opens is seen outside, and the
sshd sandbox's addresses (127.0.x.y, 127.0.2.0/24, 127.2.0.0/16) are not
touched. Inside, node nX answers on 127.0.1.X, port 17000+X; the controller
on 127.0.1.254, which also gives ``lo`` the second address without which
the daemons fail with ``Unable to resolve "(null)"``.

Clients must run in the namespace too: `SlurmCluster.launcher` is the
``nsenter`` prefix to put before ``srun``/``sbatch``, and `SlurmCluster.env`
the variables that send fabexec's Slurm executor there
(``FABEXEC_SLURM_LAUNCHER``, a test-only setting, and ``SLURM_CONF``).

Root is required (namespaces, and slurmd runs jobs as their users). The
Debian packages (``slurm-wlm``, ``munge``, ``slurm-wlm-torque`` for
``qsub``/``qstat``) are installed with apt-get when missing. `down` stops
every process of the namespace, found by PID through ``/proc/PID/ns/net``
(daemons, ``slurmstepd``, the jobs' tasks and clients), never by name.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Union

from ..errors import SandboxError

__all__ = ["SlurmCluster", "down", "up"]

PACKAGES = {"slurm-wlm": "slurmctld", "munge": "munged", "slurm-wlm-torque": "qsub"}
CONTROLLER_IP = "127.0.1.254"
FIRST_PORT = 17001
#: Most nodes: their addresses are 127.0.1.1 .. 127.0.1.N, below the controller's.
MAX_NODES = 250
LAUNCHER_VAR = "FABEXEC_SLURM_LAUNCHER"
STATE_FILE = "slurm.json"

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class SlurmCluster:
    """A running Slurm sandbox: where its files are and which PIDs are its daemons."""

    state_dir: str
    nodes: List[str]
    holder: int  # the process that keeps the network namespace alive
    netns: str  # readlink of /proc/<holder>/ns/net, to recognise it again
    daemons: Dict[str, int] = field(default_factory=dict)

    @property
    def conf(self) -> str:
        return os.path.join(self.state_dir, "slurm.conf")

    @property
    def launcher(self) -> List[str]:
        """The prefix that runs a command in the cluster's network namespace."""
        return ["nsenter", f"--net=/proc/{self._member()}/ns/net"]

    def _member(self) -> int:
        """A live process of the namespace: the holder, else any daemon (if it was killed)."""
        for pid in [self.holder, *self.daemons.values()]:
            if _netns(pid) == self.netns:
                return pid
        return self.holder

    @property
    def env(self) -> Dict[str, str]:
        """Variables that point Slurm's commands and fabexec's Slurm executor here."""
        return {"SLURM_CONF": self.conf, LAUNCHER_VAR: shlex.join(self.launcher)}

    def run(self, *argv: str, check: bool = True, timeout: float = 60) \
            -> subprocess.CompletedProcess:
        """A Slurm client command (``sinfo``, ``squeue``...) run in the cluster."""
        proc = subprocess.run([*self.launcher, *argv], capture_output=True, text=True,
                              env={**os.environ, **self.env}, timeout=timeout)
        if check and proc.returncode:
            raise SandboxError(f"`{shlex.join(argv)}` failed ({proc.returncode}): "
                               f"{proc.stderr.strip()}")
        return proc

    def save(self) -> None:
        Path(self.state_dir, STATE_FILE).write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, state_dir: PathLike) -> SlurmCluster:
        return cls(**json.loads(Path(state_dir, STATE_FILE).read_text()))

    def alive(self) -> bool:
        """True while the holder or a daemon lives in the namespace (recorded PIDs only)."""
        return _netns(self._member()) == self.netns

    def down(self) -> None:
        down(self.state_dir)

    def kill_slurmd(self, node: str) -> None:
        """SIGKILL ``node``'s slurmd by its PID (a fault: its running steps go on, orphaned,
        until the controller declares the node DOWN and `start_slurmd` brings it back)."""
        pid = self.daemons[node]
        _kill(pid, signal.SIGKILL)
        _wait_gone([pid])

    def start_slurmd(self, node: str, timeout: float = 60) -> None:
        """Start ``node``'s slurmd again and wait until the controller takes the node back
        (as it registers, the controller has it end what its dead slurmd left running)."""
        log = Path(self.state_dir, "log")
        self.daemons[node] = _spawn(
            [*self.launcher, "slurmd", "-D", "-N", node, "-f", self.conf], log / f"{node}.out")
        self.save()

        def answering() -> bool:
            state = self.run("sinfo", "-h", "-n", node, "-o", "%t", check=False, timeout=10)
            return state.stdout.strip() in ("idle", "alloc", "mix", "comp")

        _wait_for(answering, timeout, f"{node} did not come back after {timeout} s",
                  log / f"{node}.log")


def up(nodes: int = 4, state_dir: PathLike = "/tmp/fabexec-slurm", *,
       timeout: float = 60) -> SlurmCluster:
    """Start a fresh cluster of ``nodes`` nodes in ``state_dir`` (one left there is stopped).

    Returns once every node is idle; raises `SandboxError` with the daemons'
    log lines if that does not happen within ``timeout`` seconds.
    """
    if not 1 <= nodes <= MAX_NODES:
        raise SandboxError(f"nodes must be 1..{MAX_NODES}, not {nodes}")
    if os.geteuid() != 0:
        raise SandboxError("the Slurm sandbox needs root (network namespace, slurmd)")
    _ensure_software()
    state = Path(state_dir).absolute()
    down(state)
    shutil.rmtree(state, ignore_errors=True)
    for sub in ("munge", "state", "spool", "log"):
        (state / sub).mkdir(parents=True)
    shutil.rmtree(socket_dir(state), ignore_errors=True)
    socket_dir(state).mkdir(mode=0o755)
    names = [f"n{i}" for i in range(1, nodes + 1)]
    _write_files(state, names)
    holder = _spawn(["unshare", "--net", "sleep", "infinity"], state / "log" / "holder.out")
    cluster = SlurmCluster(str(state), names, holder, "")
    try:
        cluster.netns = _wait_netns(holder)
        cluster.save()
        _in_ns(cluster, "ip", "link", "set", "lo", "up")
        _in_ns(cluster, "ip", "addr", "add", f"{CONTROLLER_IP}/8", "dev", "lo")
        _launch(cluster, state)
        cluster.save()
        _wait_idle(cluster, timeout)
    except BaseException:
        down(state)
        raise
    return cluster


def down(state_dir: PathLike = "/tmp/fabexec-slurm") -> None:
    """Stop every process in the cluster's namespace (by PID), holder last. Idempotent."""
    try:
        cluster = SlurmCluster.load(state_dir)
    except (OSError, ValueError, TypeError):
        return
    if not cluster.alive():
        return
    for _ in range(20):  # a task may fork while we look: look again until none is left
        pids = [pid for pid in _pids_in(cluster.netns) if pid != cluster._member()]
        if not pids:
            break
        for pid in pids:
            _kill(pid, signal.SIGKILL)
        _wait_gone(pids)
    last = cluster._member()
    _kill(last, signal.SIGKILL)
    _wait_gone([last])
    shutil.rmtree(socket_dir(cluster.state_dir), ignore_errors=True)


def socket_dir(state_dir: PathLike) -> Path:
    """munged's socket folder: in /tmp, named after the (absolute) state folder."""
    digest = hashlib.sha1(os.fsencode(Path(state_dir).absolute())).hexdigest()[:12]
    return Path(tempfile.gettempdir(), f"fabexec-munge-{digest}")


# --- files and daemons -----------------------------------------------------------


def _ensure_software() -> None:
    """Install the Debian packages of Slurm, munge and the PBS wrappers when missing."""
    missing = [pkg for pkg, cmd in PACKAGES.items() if shutil.which(cmd, path=_SBIN_PATH) is None]
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise SandboxError(f"{', '.join(missing)} missing and no apt-get here")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", *missing]
    if subprocess.run(install, capture_output=True, env=env).returncode != 0:
        subprocess.run(["apt-get", "update"], capture_output=True, env=env)
        proc = subprocess.run(install, capture_output=True, text=True, env=env)
        if proc.returncode:
            raise SandboxError(f"`{shlex.join(install)}` failed: {proc.stderr.strip()}")


_SBIN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def _write_files(state: Path, names: List[str]) -> None:
    key = state / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    for name in names:
        (state / "spool" / name).mkdir()
    last = len(names)
    (state / "slurm.conf").write_text(f"""\
# written by fabexec.sandbox.slurm: a cluster inside a network namespace
ClusterName=fabexec
SlurmctldHost={socket.gethostname()}({CONTROLLER_IP})
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={socket_dir(state)}/socket
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
KillWait=2
MessageTimeout=5
# a node whose slurmd died is declared DOWN (its jobs killed) in about 15-20 s, not 300;
# 10, not less: a slurmd slow to answer on a loaded machine is not declared dead
# (measured: 3, 5 and 10 all took 15-19 s here, the controller's ping cycle dominates)
SlurmdTimeout=10
StateSaveLocation={state}/state
SlurmdSpoolDir={state}/spool/%n
SlurmctldPidFile={state}/slurmctld.pid
SlurmdPidFile={state}/spool/%n/slurmd.pid
SlurmctldLogFile={state}/log/slurmctld.log
SlurmdLogFile={state}/log/%n.log
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MailProg=/bin/true
NodeName=n[1-{last}] NodeAddr=127.0.1.[1-{last}] Port=[{FIRST_PORT}-{FIRST_PORT + last - 1}] \
 CPUs=4 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")


def _launch(cluster: SlurmCluster, state: Path) -> None:
    """munged, slurmctld and each slurmd in the foreground (their PIDs are ours), in the
    namespace, output to files: a daemon writing to our pipes would block its caller."""
    log = state / "log"
    munge = state / "munge"
    sockets = socket_dir(state)
    cluster.daemons["munged"] = _spawn(
        [*cluster.launcher, "munged", "-F", f"--socket={sockets}/socket",
         f"--key-file={munge}/munge.key", f"--pid-file={munge}/munged.pid",
         f"--log-file={log}/munged.log", f"--seed-file={munge}/seed"], log / "munged.out")
    munged = cluster.daemons["munged"]
    _wait_for(lambda: (sockets / "socket").exists() or _state(munged) is None, 10,
              "munged did not create its socket", log / "munged.out")
    if _state(munged) is None:
        raise SandboxError(f"munged failed: {_tail(log / 'munged.out', 1)}")
    cluster.daemons["slurmctld"] = _spawn(
        [*cluster.launcher, "slurmctld", "-D", "-i", "-f", cluster.conf], log / "slurmctld.out")
    for name in cluster.nodes:
        cluster.daemons[name] = _spawn(
            [*cluster.launcher, "slurmd", "-D", "-N", name, "-f", cluster.conf],
            log / f"{name}.out")


def _wait_idle(cluster: SlurmCluster, timeout: float) -> None:
    def idle() -> bool:
        for name, pid in cluster.daemons.items():
            if _state(pid) is None:
                raise SandboxError(f"{name} (pid {pid}) died: "
                                   f"{_tail(Path(cluster.state_dir, 'log', name + '.out'))}")
        proc = cluster.run("sinfo", "-h", "-N", "-o", "%N %t", check=False, timeout=10)
        states = dict(line.split() for line in proc.stdout.splitlines() if line.strip())
        return len(states) == len(cluster.nodes) and set(states.values()) == {"idle"}

    _wait_for(idle, timeout, f"the nodes were not idle after {timeout} s",
              Path(cluster.state_dir, "log", "slurmctld.log"))


# --- processes -------------------------------------------------------------------


def _spawn(argv: List[str], out: Path) -> int:
    path = f"{_SBIN_PATH}:{os.environ.get('PATH', '')}"
    with open(out, "wb") as stream:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stream,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PATH": path})
    _REAPED.append(proc)  # keeps the Popen, so that its zombie is collected
    return proc.pid


_REAPED: List[subprocess.Popen] = []


def _in_ns(cluster: SlurmCluster, *argv: str) -> None:
    proc = subprocess.run([*cluster.launcher, *argv], capture_output=True, text=True)
    if proc.returncode:
        raise SandboxError(f"`{shlex.join(argv)}` in the namespace failed: {proc.stderr.strip()}")


def _netns(pid: int) -> Optional[str]:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


def _wait_netns(holder: int) -> str:
    """The holder's namespace once ``unshare`` made it (it differs from ours then)."""
    own = _netns(os.getpid())
    found: List[str] = []

    def made() -> bool:
        ns = _netns(holder)
        if ns is None:
            raise SandboxError("`unshare --net` failed: network namespaces are not allowed here")
        found[:] = [ns]
        return ns != own

    _wait_for(made, 10, "`unshare --net` made no namespace", None)
    return found[0]


def _pids_in(netns: str) -> List[int]:
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and _netns(int(entry.name)) == netns \
                and _state(int(entry.name)) is not None:
            pids.append(int(entry.name))
    return pids


def _state(pid: int) -> Optional[str]:
    """The process's state letter, None when gone or a zombie (and reap our own)."""
    for proc in _REAPED:
        if proc.pid == pid:
            proc.poll()
    try:
        with open(f"/proc/{pid}/stat") as f:
            letter = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None
    return None if letter in "ZXx" else letter


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_gone(pids: List[int], timeout: float = 10) -> None:
    left = list(pids)
    deadline = time.monotonic() + timeout
    while left and time.monotonic() < deadline:
        left = [pid for pid in left if _state(pid) is not None]
        if left:
            time.sleep(0.02)
    if left:
        raise SandboxError(f"processes {left} survived SIGKILL for {timeout:.0f} s")


def _wait_for(ready, timeout: float, message: str, log: Optional[Path]) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise SandboxError(f"{message}; {log}: {_tail(log)}" if log else message)
        time.sleep(0.1)


def _tail(path: Optional[Path], lines: int = 5) -> str:
    try:
        return " | ".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except (OSError, TypeError):
        return "(no log)"
