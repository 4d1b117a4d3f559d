"""Running a command as an MPI job: the installed launcher's line, run here.

The launcher (``mpiexec``) runs on this machine through the local runner, so
the job's output, every rank's merged by the launcher, is one stream keyed
``localhost``, as in jarvis-util. Each command becomes the line of the
detected flavor (see `fabexec.mpi_flavors`); a list of commands becomes one
line each, run one after another like the lines of a script, so the exit code
is the last job's, as for a local list. ``env`` is exported for the launcher
*and* passed with the flavor's own flags, so it reaches ranks on every host
whatever the launcher forwards by default; ``cwd`` is the launcher's folder,
which Hydra and Open MPI also give to the ranks.

Ending a job: the launcher, its local proxies and local ranks inherit the
command's ``FABEXEC_TAG`` (both Hydra and Open MPI start local ranks with the
launcher's environment), so ``timeout`` and ``kill()`` end them like any local
command. What runs on other hosts (Hydra's proxies, Open MPI's daemons, and
Open MPI's ranks, which get only ``-x`` variables) carries no tag: the
launcher's own clean-up ends it, so the launcher gets SIGTERM alone first, and
time to end its job (see `fabexec.reaper.kill_local`): with ranks that had dropped
the tag, none is left once ``kill()`` returned, under both launchers
(tests/test_mpi.py).

Inside a Slurm job (``SLURM_JOB_ID`` and its node list set, as under
``salloc`` or in a batch script), no hosts means the job's nodes: Hydra and
Open MPI detect Slurm and start their proxies with ``srun`` (measured for
Hydra on the Slurm sandbox: one rank per node, each on its own node). Hosts
given there are still started through ``srun``, so with Hydra they must be
nodes of the job: others are refused before anything runs, where Hydra would
wait forever for the step ``srun`` was refused (unless ``mpi_args`` picks a
``-launcher``); hosts that all name this machine run here (``-launcher fork``).
"""

from __future__ import annotations

import atexit
import hashlib
import math
import os
import shlex
import shutil
import tempfile
import threading
from typing import Any, Dict, List, Optional

from .command import Command, script_of, shell_script
from .errors import CommandError, ExecInfoError, MpiError
from .hostfile import Hostfile, expand, fold
from .info import ExecInfo, ExecType
from .local import LocalExecutor
from .mpi_flavors import Flavor, MpiJob, build_line, detect_flavor, find_launcher

_EXPLICIT_FLAVORS = {
    ExecType.MPICH: Flavor.MPICH,
    ExecType.OPENMPI: Flavor.OPENMPI,
    ExecType.INTEL_MPI: Flavor.INTEL_MPI,
    ExecType.CRAY_MPICH: Flavor.CRAY_MPICH,
}

#: How each flavor reads ``host`` with a slot count in a hostfile. Measured:
#: Hydra rejects ``slots=`` (and ``#`` comments), Open MPI rejects ``host:N``;
#: PALS takes bare names and places ranks by ``--ppn``.
_SLOTS_LINE = {
    Flavor.MPICH: "{host}:{slots}",
    Flavor.INTEL_MPI: "{host}:{slots}",
    Flavor.OPENMPI: "{host} slots={slots}",
    Flavor.CRAY_MPICH: "{host}",
}

#: Longest host list passed by name. Linux caps one argument at 128 KiB
#: (MAX_ARG_STRLEN); past this the hosts go in a hostfile written for the flavor.
MAX_HOSTS_ARG = 64 * 1024


class MpiExecutor(LocalExecutor):
    """``cmd`` as one MPI job per command, launched from a local bash."""

    launcher = True  # it ends the ranks on other hosts: SIGTERM to it alone first

    def __init__(self, cmd: Command, info: ExecInfo) -> None:
        self.flavor = flavor_of(info)
        lines = [build_line(self.flavor, job) for job in mpi_jobs(cmd, info, self.flavor)]
        # The launcher runs here with the caller's environment: only ``env`` is
        # exported for it; forwarded values reach the ranks through the line.
        script = shell_script(lines, info.given_env, info.cwd, info.sudo, info.sudoenv,
                              info.sudo_password is not None)
        super().__init__(cmd, info, script=script)


def flavor_of(info: ExecInfo) -> Flavor:
    """The launcher's flavor: asked (once per launcher) under ``ExecType.MPI``, else given."""
    if info.exec_type is ExecType.MPI:
        return detect_flavor(info.mpiexec)
    find_launcher(info.mpiexec)  # a missing launcher fails now, not as exit code 127
    return _EXPLICIT_FLAVORS[info.exec_type]


def mpi_jobs(cmd: Command, info: ExecInfo, flavor: Flavor) -> List[MpiJob]:
    """One `MpiJob` per non-blank command, placed and configured from ``info``."""
    script_of(cmd)  # the same check of ``cmd`` as everywhere
    if info.nprocs is None:  # checked here: a base info gets nprocs later with mod()
        raise ExecInfoError("nprocs", "an MPI job needs nprocs, a positive integer")
    commands = [cmd] if isinstance(cmd, str) else list(cmd)
    programs = [c.strip() for c in commands if c.strip()]
    for program in programs:
        if "\n" in program:
            raise CommandError(f"an MPI program is one line, not {program!r}; give a list "
                               "of commands to run several jobs one after another")
    agent = ssh_agent(info, flavor)
    mpi_args = list(info.mpi_args or [])
    mpi_args += slurm_launcher(info, flavor, mpi_args)
    options: Dict[str, Any] = dict(
        nprocs=info.nprocs,
        ppn=info.ppn,
        env=dict(info.env or {}),
        mpiexec=info.mpiexec,
        mpi_args=mpi_args,
        do_dbg=info.do_dbg,
        dbg_port=info.dbg_port,
        launcher_exec=agent,
        as_root=os.geteuid() == 0 or info.sudo,
        **placement(info.hostfile, flavor),
    )
    return [MpiJob(program, **options) for program in programs]


# --------------------------------------------------------------------------- hosts

def placement(hostfile: Optional[Hostfile], flavor: Flavor) -> Dict[str, Any]:
    """The `MpiJob` fields that say where ranks run; none when every host is this one.

    A whole hostfile read from a file passes its path if the flavor reads that
    file as it is; otherwise (comments, ranges, the other flavor's slot syntax)
    a copy in the flavor's syntax is passed. A subset or a list of names passes
    its hosts by name, unless the list is too long for one argument.
    """
    if hostfile is None or hostfile.is_local():
        return {}
    lines = hostfile_lines(hostfile, flavor)
    # Absolute: the launcher runs in ``cwd`` and would not find a relative path.
    path = None if hostfile.is_subset() or hostfile.path is None else os.path.abspath(hostfile.path)
    if path is not None and _reads_as_is(path, lines):
        return {"hostfile": path}
    if path is not None or sum(len(line) + 1 for line in lines) > MAX_HOSTS_ARG:
        return {"hostfile": _scratch_file("hosts", "".join(f"{x}\n" for x in lines))}
    return {"hosts": list(hostfile.hosts), "slots": dict(hostfile.slots)}


def slurm_launcher(info: ExecInfo, flavor: Flavor, mpi_args: List[str]) -> List[str]:
    """Hydra's extra options inside a Slurm job, where it starts its proxies with ``srun``.

    None without hosts (the job's nodes) or outside a job; ``-launcher fork``
    when the hosts all name this machine; `ExecInfoError('hosts')` for hosts
    outside the job, which ``srun`` refuses while Hydra waits on.
    """
    job = os.environ.get("SLURM_JOB_ID")
    listed = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST")
    hostfile = info.hostfile if info.hostfile is not None else Hostfile()
    given = info.hosts is not None or hostfile != Hostfile()  # not jarvis-util's default
    if (not job or not listed or not given
            or flavor not in (Flavor.MPICH, Flavor.INTEL_MPI)
            or any(arg.lstrip("-") in ("launcher", "bootstrap") for arg in mpi_args)):
        return []
    if hostfile.is_local():
        return ["-launcher", "fork"]
    nodes = expand(listed)
    outside = [host for host in hostfile.hosts if host not in nodes]
    if outside:
        raise ExecInfoError("hosts", f"{fold(outside)} not in Slurm job {job}'s nodes "
                            f"{fold(nodes)}: inside a job Hydra starts ranks through srun, "
                            "which reaches only the job's nodes (mpi_args=['-launcher', "
                            "'ssh'] to use SSH instead)")
    return []


def hostfile_lines(hostfile: Hostfile, flavor: Flavor) -> List[str]:
    """The hosts one per line, with their slot counts in the flavor's syntax."""
    slots = hostfile.slots
    return [host if slots.get(host) is None else
            _SLOTS_LINE[flavor].format(host=host, slots=slots[host]) for host in hostfile.hosts]


def _reads_as_is(path: str, lines: List[str]) -> bool:
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except (OSError, UnicodeDecodeError):
        return False
    return [line.strip() for line in text.splitlines() if line.strip()] == lines


# --------------------------------------------------------------------------- ssh

def ssh_agent(info: ExecInfo, flavor: Flavor) -> Optional[str]:
    """How the launcher runs ``ssh`` with ``info``'s SSH settings; None without any.

    Without an SSH setting the launcher keeps its own way of starting remote
    proxies (its ``ssh`` and ``~/.ssh/config``, or a batch system's). Hydra's
    ``-launcher-exec`` takes one executable path, not a command line, so the
    settings go in a small script. Open MPI's ``plm_rsh_agent`` must be
    found on every host too (measured: a remote daemon whose agent path is
    missing fails, and the job hangs), so it gets ``ssh`` and the options as
    one line, which Open MPI splits at blanks.
    """
    options = ssh_options(info)
    if options is None:
        return None
    if flavor is Flavor.CRAY_MPICH:
        raise MpiError("Cray MPICH's mpiexec (PALS) starts ranks through its own daemons, not "
                       "ssh: drop ssh_config, user, pkey, port, known_hosts and strict_ssh")
    if flavor is Flavor.OPENMPI:
        blank = [word for word in options if len(word.split()) != 1]
        if blank:
            raise MpiError(f"Open MPI splits its ssh command at blanks, so {blank[0]!r} "
                           "cannot be passed; use a path without blanks")
        return " ".join(["ssh", *options])
    script = f'#!/bin/sh\nexec ssh {shlex.join(options)} "$@"\n'
    return _scratch_file("ssh", script, executable=True)


def ssh_options(info: ExecInfo) -> Optional[List[str]]:
    """``ssh`` options for ``info``'s SSH settings, as an `SshExecInfo` would use them."""
    given = (info.ssh_config, info.user, info.pkey, info.port, info.known_hosts,
             info.proxy_jump, info.forward_agent)
    if all(value is None for value in given) and not info.strict_ssh:
        return None
    options = ["-o", "BatchMode=yes",  # a launcher's ssh must never wait for a password
               "-o", f"ConnectTimeout={math.ceil(info.connect_timeout)}",
               "-o", f"StrictHostKeyChecking={'yes' if info.strict_ssh else 'accept-new'}"]
    if info.ssh_config is not None:
        options += ["-F", _absolute(info.ssh_config)]
    if info.known_hosts is not None:
        options += ["-o", f"UserKnownHostsFile={_absolute(info.known_hosts)}"]
    if info.user is not None:
        options += ["-l", info.user]
    if info.pkey is not None:  # that key alone, as our own connections: the caller's agent
        # or default keys first would spend the server's MaxAuthTries on refusals
        options += ["-i", _absolute(info.pkey), "-o", "IdentitiesOnly=yes"]
    if info.port is not None:
        options += ["-p", str(info.port)]
    if info.proxy_jump is not None:
        options += ["-J", info.proxy_jump]
    if info.forward_agent is not None:
        options += ["-o", f"ForwardAgent={'yes' if info.forward_agent else 'no'}"]
    return options


def _absolute(path: Any) -> str:
    """The launcher runs in ``cwd``, so relative paths are made absolute here."""
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


# --------------------------------------------------------------------------- scratch files

_scratch_lock = threading.Lock()
_scratch: Dict[int, str] = {}  # pid -> folder, so a forked child never removes its parent's


def _scratch_file(kind: str, text: str, executable: bool = False) -> str:
    """A file holding ``text`` in this process's scratch folder, named by its content.

    The same content is the same file, written once per process and never
    changed, so jobs running at once share it safely; the folder goes at exit.
    """
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = os.path.join(_scratch_folder(), f"{kind}-{digest}")
    if not os.path.exists(path):
        fd, partial = tempfile.mkstemp(dir=os.path.dirname(path))
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.chmod(partial, 0o700 if executable else 0o600)
        os.replace(partial, path)
    return path


def _scratch_folder() -> str:
    pid = os.getpid()
    with _scratch_lock:
        if pid not in _scratch:
            _scratch[pid] = tempfile.mkdtemp(prefix="fabexec-mpi-")
            atexit.register(_remove_scratch, pid)
        return _scratch[pid]


def _remove_scratch(pid: int) -> None:
    if os.getpid() == pid:
        shutil.rmtree(_scratch.pop(pid), ignore_errors=True)
