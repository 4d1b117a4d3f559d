"""How to run a command: `ExecInfo` and its presets.

`ExecInfo` keeps jarvis-util's keywords and defaults, so migrating code only
changes its imports; the SSH and MPI keywords come after them. Every field is
checked when the object is made, so a wrong value fails at the line that wrote
it, with the field's name, and never half-way through a run on 64 hosts. One
exception, as jarvis-util code needs it: an MPI job's ``nprocs`` may be missing
from a base info that gets it later with ``mod``, so it is checked when the job
runs (still before anything starts).
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import math
import numbers
import os
from dataclasses import dataclass, field
from typing import IO, Any, Dict, List, Optional, Sequence, Union

from .errors import ExecInfoError, HostfileError
from .hostfile import Hostfile, expand

#: The variable that tags a command's processes (see `fabexec.command`).
TAG_VAR = "FABEXEC_TAG"

PathLike = Union[str, "os.PathLike[str]"]
StdinLike = Union[str, bytes, IO[Any], None]


class ExecType(enum.Enum):
    """The way a command runs; the four MPI flavors skip flavor detection."""

    LOCAL = "LOCAL"
    SSH = "SSH"
    PSSH = "PSSH"
    MPI = "MPI"
    MPICH = "MPICH"
    OPENMPI = "OPENMPI"
    INTEL_MPI = "INTEL_MPI"
    CRAY_MPICH = "CRAY_MPICH"
    SLURM = "SLURM"
    PBS = "PBS"

    @property
    def is_mpi(self) -> bool:
        return self in _MPI_TYPES


_MPI_TYPES = {ExecType.MPI, ExecType.MPICH, ExecType.OPENMPI, ExecType.INTEL_MPI,
              ExecType.CRAY_MPICH}

#: Hosts in flight at once when fanning out (also the open connections kept).
#: 64 hosts run all at once and beat Fabric's unbounded group (bench/ssh.py);
#: larger fan-outs keep threads and sockets to this many. Not tuned further.
DEFAULT_MAX_PARALLEL = 64

#: The caller's variables jarvis-util sends with every remote and MPI command,
#: so a program found here through a spack or module environment is found on
#: the nodes too. ``LD_PRELOAD`` is never sent: it would load into sshd's shells.
FORWARD_ENV = ("PATH", "LD_LIBRARY_PATH", "LIBRARY_PATH", "CMAKE_PREFIX_PATH",
               "PYTHONPATH", "CPATH", "INCLUDE", "JAVA_HOME")


@dataclass
class ExecInfo:
    """Everything that says how `Exec` runs a command (see the README's table)."""

    exec_type: ExecType = ExecType.LOCAL
    nprocs: Optional[int] = None
    ppn: Optional[int] = None
    user: Optional[str] = None
    pkey: Optional[PathLike] = None
    port: Optional[int] = None
    hostfile: Union[PathLike, Hostfile, None] = None
    hosts: Union[str, Sequence[str], Hostfile, None] = None
    env: Optional[Dict[str, Any]] = None
    sleep_ms: float = 0
    sudo: bool = False
    sudoenv: bool = True
    cwd: Optional[PathLike] = None
    collect_output: Optional[bool] = None
    pipe_stdout: Optional[PathLike] = None
    pipe_stderr: Optional[PathLike] = None
    hide_output: Optional[bool] = None
    exec_async: bool = False
    stdin: StdinLike = None
    do_dbg: bool = False
    dbg_port: Optional[int] = None
    strict_ssh: bool = False
    timeout: Optional[float] = None
    # SSH and parallel SSH
    connect_timeout: float = 10
    max_parallel: int = DEFAULT_MAX_PARALLEL
    ssh_config: Optional[PathLike] = None
    known_hosts: Optional[PathLike] = None
    sudo_password: Optional[str] = field(default=None, repr=False)
    #: Decrypts ``pkey`` when it is encrypted; never shown, like ``sudo_password``.
    pkey_passphrase: Optional[str] = field(default=None, repr=False)
    keepalive_interval: Optional[float] = None
    keepalive_count: Optional[int] = None
    reuse_connections: bool = True
    #: Reach each host through these bastions, as ssh_config's ``ProxyJump``
    #: (``bastion`` or ``user@hop1:2222,hop2``); None: ssh_config's, if any.
    proxy_jump: Optional[str] = None
    #: Forward the local ``ssh-agent`` to the command, as ssh_config's
    #: ``ForwardAgent``; None: ssh_config's (else no).
    forward_agent: Optional[bool] = None
    # MPI
    mpiexec: str = "mpiexec"
    mpi_args: Optional[List[str]] = None
    # invoke watchers (e.g. a Responder), fed a bounded window of recent output
    watchers: Optional[List[Any]] = None
    #: The caller's variables sent with SSH, PSSH and MPI commands: None is
    #: `FORWARD_ENV` for those (local commands inherit everything anyway), a list
    #: names them, False sends none. ``env`` wins over a forwarded value.
    forward_env: Union[bool, Sequence[str], None] = None
    #: PSSH through gateways (see `fabexec.tree`): a host expression or list of
    #: names, the targets split evenly among them; or a ClusterShell topology file.
    gateways: Union[str, Sequence[str], None] = None
    topology: Optional[PathLike] = None

    def __new__(cls, *args: Any, **kwargs: Any) -> ExecInfo:
        """Name an unknown keyword and its closest valid ones (before ``__init__``'s TypeError)."""
        names = [f.name for f in dataclasses.fields(cls)]
        for key in kwargs:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise ExecInfoError(key, f"unknown keyword{hint}")
        return super().__new__(cls)

    def __post_init__(self) -> None:
        _validate(self)
        self._own_env = dict(self.env or {})
        self._forwarded = _forwarded(self)
        self.env = {**self._forwarded, **self._own_env}

    @property
    def given_env(self) -> Dict[str, str]:
        """``env`` without the forwarded values (what was given, or written into it since)."""
        return {k: v for k, v in self.env.items()
                if k in self._own_env or self._forwarded.get(k) != v}

    @property
    def basic_env(self) -> Dict[str, str]:
        """jarvis-util's ``basic_env``: the forwardable values, then ``env``, no ``LD_PRELOAD``."""
        names = [] if self.forward_env is False else (
            FORWARD_ENV if self.forward_env in (None, True) else self.forward_env)
        env = {**_caller_env(names), **self.given_env}
        env.pop("LD_PRELOAD", None)
        return env

    @property
    def keys(self) -> List[str]:
        """The keyword names `mod` copies (jarvis-util's ``keys``)."""
        return [f.name for f in dataclasses.fields(self)]

    def mod(self, **changes: Any) -> ExecInfo:
        """A copy with ``changes`` applied (and checked like a new object).

        Setting ``hosts`` drops an earlier ``hostfile`` and the other way round,
        since the two together are an error.
        """
        if "env" not in changes:  # forwarded values are taken again, for the new kind
            changes["env"] = self.given_env
        if "hosts" in changes and "hostfile" not in changes:
            changes["hostfile"] = None
        elif "hostfile" in changes and "hosts" not in changes:
            changes["hosts"] = None
        elif "hosts" not in changes and self.hosts is not None:
            # ``hostfile`` was made from ``hosts``: make it again, keep ``hosts``.
            changes["hostfile"] = None
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_config(cls, c: Any, **overrides: Any) -> ExecInfo:
        """Defaults from the ``fabexec`` section of an invoke configuration.

        ``c`` is the invoke Context a task receives, so an ``invoke.yaml`` with
        ``fabexec: {hostfile: hosts.txt, user: me}`` serves every task:
        ``Exec(cmd, PsshExecInfo.from_config(c, timeout=60))``.
        """
        section = dict(c.config.get("fabexec", None) or {})
        names = {f.name for f in dataclasses.fields(cls)}
        for key in section:
            if key not in names:
                raise ExecInfoError(key, "unknown key in the 'fabexec' section of the invoke "
                                    "configuration")
        if "hosts" in overrides or "hostfile" in overrides:
            section.pop("hosts", None)
            section.pop("hostfile", None)
        return cls(**{**section, **overrides})

    def copy(self) -> ExecInfo:
        return self.mod()

    @property
    def targets(self) -> Hostfile:
        """The hosts to run on (``hostfile``, ``localhost`` when none was given)."""
        return self.hostfile if self.hostfile is not None else Hostfile()


def _caller_env(names: Sequence[str]) -> Dict[str, str]:
    return {name: os.environ[name] for name in names
            if name in os.environ and name != "LD_PRELOAD"}


def _forwarded(info: ExecInfo) -> Dict[str, str]:
    """The caller's variables ``info`` sends along (see ``forward_env``)."""
    choice = info.forward_env
    if choice is False or (choice is None and info.exec_type is ExecType.LOCAL):
        return {}
    return _caller_env(FORWARD_ENV if choice in (None, True) else list(choice))


@dataclass
class LocalExecInfo(ExecInfo):
    """Run in a local shell (the default)."""

    exec_type: ExecType = ExecType.LOCAL


@dataclass
class SshExecInfo(ExecInfo):
    """Run on one host through a Fabric Connection."""

    exec_type: ExecType = ExecType.SSH


@dataclass
class PsshExecInfo(ExecInfo):
    """Run on every host at once, at most ``max_parallel`` in flight."""

    exec_type: ExecType = ExecType.PSSH


@dataclass
class MpiExecInfo(ExecInfo):
    """Run as an MPI job; the installed MPI flavor is detected."""

    exec_type: ExecType = ExecType.MPI


@dataclass
class SlurmExecInfo(ExecInfo):
    """Run through Slurm (see `fabexec.slurm`): a job step inside an allocation, else a job.

    jarvis-util's keywords, each an ``sbatch``/``srun`` option of the same
    name: ``job_name``, ``num_nodes`` (``--nodes``), ``ppn``
    (``--ntasks-per-node``), ``cpus_per_task``, ``time``, ``partition``,
    ``mail_type``, ``mail_user``, ``mem``, ``gres``, ``exclusive``,
    ``nodelist`` (a host expression, ``n[1-3]``) and ``account``;
    ``host_suffix`` is appended to node names in the results (as jarvis-util's
    SlurmHostfile does, e.g. ``-ib``). Slurm itself judges the values it
    knows better than we do (a partition, a time limit): it refuses them as
    `SchedulerError`, which names the keyword.
    """

    exec_type: ExecType = ExecType.SLURM
    job_name: Optional[str] = None
    num_nodes: Optional[int] = None
    cpus_per_task: Optional[int] = None
    time: Union[str, int, None] = None
    partition: Optional[str] = None
    mail_type: Optional[str] = None
    mail_user: Optional[str] = None
    mem: Union[str, int, None] = None
    gres: Optional[str] = None
    exclusive: Optional[bool] = None
    host_suffix: Optional[str] = None
    nodelist: Union[str, Sequence[str], None] = None
    account: Optional[str] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_slurm(self)


@dataclass
class PbsExecInfo(ExecInfo):
    """Submit the command as a PBS batch job with ``qsub`` (see `fabexec.pbs`).

    jarvis-util's keywords: ``nnodes`` (``-l select=N``), ``system``
    (``:system=S``), ``filesystems`` and ``walltime`` (``-l NAME=V``),
    ``account`` (``-A``), ``queue`` (``-q``), ``env_vars`` (``-v``, a dict or
    ``A=1,B=2``); ``interactive`` (``qsub -I``) is refused: nothing answers it.
    """

    exec_type: ExecType = ExecType.PBS
    nnodes: Optional[int] = None
    system: Optional[str] = None
    filesystems: Optional[str] = None
    walltime: Optional[str] = None
    account: Optional[str] = None
    queue: Optional[str] = None
    env_vars: Union[str, Dict[str, Any], None] = None
    interactive: Optional[bool] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_pbs(self)


# --------------------------------------------------------------------------- checks

def _validate(info: ExecInfo) -> None:
    if not isinstance(info.exec_type, ExecType):
        try:
            info.exec_type = ExecType[str(info.exec_type).upper()]
        except KeyError:
            names = ", ".join(t.name for t in ExecType)
            raise ExecInfoError("exec_type", f"unknown {info.exec_type!r}; one of {names}") \
                from None
    for name in ("nprocs", "ppn", "port", "dbg_port", "keepalive_count", "max_parallel"):
        _check_positive_int(info, name)
    if info.port is not None and info.port > 65535:
        raise ExecInfoError("port", f"{info.port} is not a TCP port (1-65535)")
    for name in ("sleep_ms",):
        _check_number(info, name, allow_zero=True)
    for name in ("timeout", "connect_timeout", "keepalive_interval"):
        _check_number(info, name, allow_zero=name == "keepalive_interval")
    for name in ("sudo", "sudoenv", "exec_async", "do_dbg", "strict_ssh", "reuse_connections"):
        if not isinstance(getattr(info, name), bool):
            raise ExecInfoError(name, f"must be True or False, not {getattr(info, name)!r}")
    for name in ("collect_output", "hide_output", "forward_agent"):
        if getattr(info, name) is not None and not isinstance(getattr(info, name), bool):
            raise ExecInfoError(name, f"must be True, False or None, not {getattr(info, name)!r}")
    for name in ("user", "sudo_password", "pkey_passphrase", "mpiexec", "proxy_jump"):
        value = getattr(info, name)
        if value is not None and (not isinstance(value, str) or not value):
            raise ExecInfoError(name, f"must be a non-empty string, not {value!r}")
    for name in ("pkey", "cwd", "pipe_stdout", "pipe_stderr", "ssh_config", "known_hosts"):
        _check_path(info, name)
    _check_passphrase(info)
    _check_env(info)
    _check_stdin(info)
    if info.stdin is not None and info.sudo_password is not None:
        raise ExecInfoError("stdin", "cannot be combined with sudo_password: sudo reads the "
                            "password from stdin")
    _check_list_of_str(info, "mpi_args")
    _check_forward_env(info)
    if info.watchers is not None and not isinstance(info.watchers, (list, tuple)):
        raise ExecInfoError("watchers", "must be a list of invoke StreamWatcher objects")
    _normalize_hosts(info)
    _check_gateways(info)


def _check_gateways(info: ExecInfo) -> None:
    """``gateways`` as a list of names, or ``topology`` read now (its errors name the line)."""
    if info.gateways is None and info.topology is None:
        return
    field_name = "gateways" if info.gateways is not None else "topology"
    if info.exec_type is not ExecType.PSSH:
        raise ExecInfoError(field_name, f"runs PSSH commands through gateways, not "
                            f"{info.exec_type.name}")
    if info.gateways is not None and info.topology is not None:
        raise ExecInfoError("gateways", "give gateways or topology, not both")
    if info.watchers:
        raise ExecInfoError("watchers", "cannot answer a command's output through gateways")
    if info.topology is not None:
        _check_path(info, "topology")
        from .topology import load
        load(os.fspath(info.topology))  # raises TopologyError naming file and line
        return
    value = info.gateways
    exprs = [value] if isinstance(value, str) else value
    if not isinstance(exprs, (list, tuple)) or not exprs \
            or not all(isinstance(e, str) and e for e in exprs):
        raise ExecInfoError("gateways", f"must be a host expression or a non-empty list of "
                            f"names, not {value!r}")
    try:
        info.gateways = list(dict.fromkeys(h for e in exprs for h in expand(e)))
    except HostfileError as err:
        raise ExecInfoError("gateways", str(err)) from None


def _check_forward_env(info: ExecInfo) -> None:
    value = info.forward_env
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(
            isinstance(v, str) and v.isidentifier() for v in value):
        raise ExecInfoError("forward_env", f"must be a list of variable names, True or False, "
                            f"not {value!r}")
    info.forward_env = list(value)


def _hosts_given(info: ExecInfo) -> bool:
    """Whether hosts were given, not just jarvis-util's default (this machine)."""
    return info.hosts is not None or (info.hostfile is not None and info.hostfile != Hostfile())


def _check_slurm(info: SlurmExecInfo) -> None:
    if _hosts_given(info):
        raise ExecInfoError("hosts", "Slurm picks the nodes: give nodelist (or num_nodes), "
                            "not hosts or hostfile")
    for name in ("num_nodes", "cpus_per_task"):
        _check_positive_int(info, name)
    for name in ("time", "mem"):  # minutes / megabytes as numbers, else Slurm's own syntax
        value = getattr(info, name)
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            _check_positive_int(info, name)
            setattr(info, name, str(value))
    for name in ("job_name", "time", "partition", "mail_type", "mail_user", "mem", "gres",
                 "host_suffix", "account"):
        value = getattr(info, name)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ExecInfoError(name, f"must be a non-empty string, not {value!r}")
        if isinstance(value, str) and any(c in value for c in "\0\n"):
            raise ExecInfoError(name, "holds a newline or NUL byte")
    if info.exclusive is not None and not isinstance(info.exclusive, bool):
        raise ExecInfoError("exclusive", f"must be True, False or None, not {info.exclusive!r}")
    if info.nodelist is not None:
        info.nodelist = _slurm_nodes(info.nodelist)
        if info.num_nodes is not None and info.num_nodes < len(info.nodelist):
            raise ExecInfoError("num_nodes", f"{info.num_nodes} is fewer than the "
                                f"{len(info.nodelist)} nodes of nodelist")


def _check_pbs(info: PbsExecInfo) -> None:
    if _hosts_given(info):
        raise ExecInfoError("hosts", "PBS picks the nodes: give nnodes, not hosts or hostfile")
    _check_positive_int(info, "nnodes")
    for name in ("system", "filesystems", "walltime", "account", "queue"):
        value = getattr(info, name)
        if value is not None and (not isinstance(value, str) or not value.strip()
                                  or any(c in value for c in " ,\n\0")):
            raise ExecInfoError(name, f"must be a non-empty word, not {value!r}")
    if info.interactive:
        raise ExecInfoError("interactive", "qsub -I needs a terminal: fabexec runs batch jobs")
    if isinstance(info.env_vars, dict):
        for key, value in info.env_vars.items():
            if not isinstance(key, str) or not key.isidentifier() or "," in str(value):
                raise ExecInfoError("env_vars", f"{key}={value!r}: a name and a value "
                                    "without commas (qsub -v separates with them)")
        info.env_vars = ",".join(f"{k}={v}" for k, v in info.env_vars.items())
    elif info.env_vars is not None and (not isinstance(info.env_vars, str)
                                        or "\n" in info.env_vars):
        raise ExecInfoError("env_vars", f"must be a dict or 'A=1,B=2', not {info.env_vars!r}")


def _slurm_nodes(value: Any) -> List[str]:
    """``nodelist`` as node names, parsed by our host syntax (``n[1-3],gpu01``)."""
    exprs = [value] if isinstance(value, str) else value
    if not isinstance(exprs, (list, tuple)) or not exprs \
            or not all(isinstance(e, str) for e in exprs):
        raise ExecInfoError("nodelist", f"must be a host expression or a non-empty list of "
                            f"names, not {value!r}")
    try:
        return list(dict.fromkeys(h for e in exprs for h in expand(e)))
    except HostfileError as err:
        raise ExecInfoError("nodelist", str(err)) from None


def _check_positive_int(info: ExecInfo, name: str) -> None:
    value = getattr(info, name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ExecInfoError(name, f"must be a positive integer, not {value!r}")
    if value < 1:
        raise ExecInfoError(name, f"must be a positive integer, not {value}")


def _check_number(info: ExecInfo, name: str, allow_zero: bool) -> None:
    value = getattr(info, name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ExecInfoError(name, f"must be a number, not {value!r}")
    if not math.isfinite(value):  # NaN compares false with every bound, inf never ends
        instead = {"timeout": "; None means no timeout",
                   "keepalive_interval": "; 0 turns keepalives off"}.get(name, "")
        raise ExecInfoError(name, f"must be a finite number, not {value}{instead}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ExecInfoError(name, f"must be {'>= 0' if allow_zero else '> 0'}, not {value}")


def _check_path(info: ExecInfo, name: str) -> None:
    value = getattr(info, name)
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise ExecInfoError(name, f"must be a path (str or os.PathLike), not {value!r}")
    if isinstance(value, str) and not value:
        raise ExecInfoError(name, "must not be an empty path")
    if value is not None and "\0" in os.fspath(value):
        raise ExecInfoError(name, "holds a NUL byte, which no path can carry")


def _check_passphrase(info: ExecInfo) -> None:
    if info.pkey_passphrase is None:
        return
    if info.pkey is None:
        raise ExecInfoError("pkey_passphrase", "decrypts pkey, which is not given")
    if info.exec_type.is_mpi:
        raise ExecInfoError("pkey_passphrase", "mpiexec starts ranks with OpenSSH, which "
                            "cannot be given a passphrase: load the key into ssh-agent")


def _check_env(info: ExecInfo) -> None:
    if info.env is None:
        return
    if not isinstance(info.env, dict):
        raise ExecInfoError("env", f"must be a dict of names to values, not {info.env!r}")
    clean = {}
    for key, value in info.env.items():
        if not isinstance(key, str) or not key.isidentifier() or not key.isascii():
            raise ExecInfoError("env", f"{key!r} is not a valid environment variable name")
        if value is None or isinstance(value, (dict, list, tuple, set, bytes)):
            raise ExecInfoError("env", f"value of {key} must be a string or number, not "
                                f"{value!r}")
        if key == TAG_VAR:
            raise ExecInfoError("env", f"{TAG_VAR} is fabexec's own: every process a command "
                                "starts carries it, so that kill() and timeout find them all")
        if "\0" in str(value):
            raise ExecInfoError("env", f"value of {key} holds a NUL byte, which no environment "
                                "variable can carry")
        clean[key] = str(value)
    info.env = clean


def _check_stdin(info: ExecInfo) -> None:
    value = info.stdin
    if value is None or isinstance(value, (str, bytes)):
        return
    if not hasattr(value, "read"):
        raise ExecInfoError("stdin", f"must be a str, bytes or readable file, not {value!r}")


def _check_list_of_str(info: ExecInfo, name: str) -> None:
    value = getattr(info, name)
    if value is None:
        return
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ExecInfoError(name, f"must be a list of strings, not {value!r}")
    setattr(info, name, list(value))


def _normalize_hosts(info: ExecInfo) -> None:
    """Turn ``hosts`` or ``hostfile`` into one `Hostfile` in ``info.hostfile``."""
    if info.hosts is not None and info.hostfile is not None:
        raise ExecInfoError("hosts", "give hosts or hostfile, not both")
    if info.hostfile is None and info.hosts is None:
        info.hostfile = Hostfile()  # jarvis-util's default: this machine
    elif info.hostfile is not None:
        if isinstance(info.hostfile, Hostfile):
            return
        if not isinstance(info.hostfile, (str, os.PathLike)):
            raise ExecInfoError("hostfile", f"must be a path or a Hostfile, not {info.hostfile!r}")
        info.hostfile = Hostfile(path=os.fspath(info.hostfile))
    elif info.hosts is not None:
        hosts = info.hosts
        if isinstance(hosts, Hostfile):
            info.hostfile = hosts
        elif isinstance(hosts, str):
            info.hostfile = Hostfile(all_hosts=[hosts])
        elif isinstance(hosts, (list, tuple)) and hosts and all(isinstance(h, str) for h in hosts):
            info.hostfile = Hostfile(all_hosts=list(hosts))
        else:
            raise ExecInfoError("hosts", f"must be a host name, a non-empty list of names or a "
                                f"Hostfile, not {hosts!r}")
        _refuse_slots_as_ports(info)


def _refuse_slots_as_ports(info: ExecInfo) -> None:
    """``hosts='node:2222'`` for SSH: Fabric and ssh URLs read a port, a hostfile reads MPI
    slots. Neither guess is safe (it ran on port 22), so it is refused; a hostfile's
    slots, shared with MPI runs, are left to MPI."""
    if info.exec_type not in (ExecType.SSH, ExecType.PSSH) or isinstance(info.hosts, Hostfile):
        return
    slotted = [(h, n) for h, n in info.hostfile.slots.items() if n is not None]
    if slotted:
        host, count = slotted[0]
        raise ExecInfoError("hosts", f"{host}:{count} reads as {count} MPI slots, which an "
                            f"{info.exec_type.name} run has no use for; for SSH port {count} "
                            "give port=, or a Host block with Port in ssh_config")
