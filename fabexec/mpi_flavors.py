"""Which MPI launcher is installed, and the command line each one wants.

Four launchers answer to the name ``mpiexec`` and each spells the same job
differently: MPICH's Hydra (``-genv NAME VALUE``, ``-hosts a:2,b:2``), Intel
MPI (Hydra too), Open MPI (``-x NAME=VALUE``, slot counts, a refusal to run as
root) and Cray MPICH's PALS (``--env NAME=VALUE``, ``--hosts a,b``). This
module only knows those differences: `detect_flavor` asks the launcher what it
is, `build_argv` / `build_line` write the line. Running it is ``mpi.py``'s job.

The program is appended to the line as the shell text it is, as jarvis-util
does: the shell that runs the line parses it, so ``$VAR`` expands and ``|`` or
``>`` apply on the launching host, to mpiexec's merged output. To run a
pipeline inside every rank, make the program ``bash -c '...'``.
"""

from __future__ import annotations

import enum
import functools
import math
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from fabexec.errors import MpiError

VERSION_TIMEOUT = 30.0
"""Seconds `detect_flavor` waits for ``mpiexec --version``; a hung launcher must not hang us."""

_INSTALL_HINT = "install one with `pip install mpich` (or `pip install 'fabexec[mpi]'`)"


class Flavor(enum.Enum):
    """The MPI launchers fabexec can drive."""

    MPICH = "mpich"
    OPENMPI = "openmpi"
    INTEL_MPI = "intel_mpi"
    CRAY_MPICH = "cray_mpich"


# Checked in this order, first match wins. Intel goes first because its Hydra
# also prints Hydra details; Cray's PALS names no vendor, only its own version.
_SIGNATURES: List[Tuple[Flavor, re.Pattern]] = [
    (Flavor.INTEL_MPI, re.compile(re.escape("Intel(R) MPI Library"))),
    (Flavor.OPENMPI, re.compile(r"Open MPI|OpenRTE|PRRTE|prterun")),
    (Flavor.MPICH, re.compile(r"HYDRA build details|MPICH Version|MVAPICH")),
    (Flavor.CRAY_MPICH, re.compile(r"^\s*mpiexec version \d", re.MULTILINE)),
]


def parse_flavor(version_text: str) -> Optional[Flavor]:
    """The flavor that printed ``version_text`` (``mpiexec --version``), or None if unknown."""
    for flavor, signature in _SIGNATURES:
        if signature.search(version_text):
            return flavor
    return None


def detect_flavor(mpiexec: str = "mpiexec") -> Flavor:
    """Ask the launcher named ``mpiexec`` (a name on PATH or a path) what it is.

    ``--version`` runs once per resolved launcher path and the answer is cached,
    since every MPI command would otherwise pay for it. Raises `MpiError` when
    the launcher is missing, silent, or not one we know.
    """
    return _flavor_of_launcher(find_launcher(mpiexec))


def find_launcher(mpiexec: str) -> str:
    """The path of the launcher named ``mpiexec``; `MpiError` saying how to install one if none."""
    path = shutil.which(mpiexec)
    if path is None:
        raise MpiError(f"no MPI launcher named {mpiexec!r} found on PATH; {_INSTALL_HINT}")
    return path


@functools.cache
def _flavor_of_launcher(path: str) -> Flavor:
    """Run ``path --version`` and read it; errors are raised, so only successes are cached."""
    try:
        done = subprocess.run(
            [path, "--version"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # some launchers print their version on stderr
            timeout=VERSION_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise MpiError(f"`{path} --version` did not answer within {VERSION_TIMEOUT:g} s") from None
    except OSError as error:
        raise MpiError(f"cannot run `{path} --version`: {error}") from error
    said = done.stdout.decode("utf-8", "replace").strip()
    flavor = parse_flavor(said)
    if flavor is None:
        raise MpiError(
            f"{path} is not an MPI launcher fabexec knows (MPICH, Open MPI, Intel MPI, "
            f"Cray MPICH): `{path} --version` exited {done.returncode} and said: "
            f"{said[:1000]!r}; {_INSTALL_HINT}"
        )
    return flavor


def _running_as_root() -> bool:
    return os.geteuid() == 0


@dataclass
class MpiJob:
    """What a launcher line is built from; ``mpi.py`` fills it from an `ExecInfo`.

    Give ``hosts`` (names, optionally with ``slots``) or ``hostfile`` (a path
    the launcher reads itself), not both; neither runs on the local host.
    ``launcher_exec`` replaces ``ssh`` for Hydra and Open MPI, e.g. a wrapper
    that adds ``-F ssh_config``. ``as_root`` decides Open MPI's
    ``--allow-run-as-root`` and defaults to whether this process is root.
    """

    program: str
    nprocs: int
    ppn: Optional[int] = None
    hosts: Optional[List[str]] = None
    slots: Optional[Dict[str, Optional[int]]] = None
    hostfile: Optional[str] = None
    env: Dict[str, str] = field(default_factory=dict)
    mpiexec: str = "mpiexec"
    mpi_args: List[str] = field(default_factory=list)
    do_dbg: bool = False
    dbg_port: Optional[int] = None
    launcher_exec: Optional[str] = None
    as_root: bool = field(default_factory=_running_as_root)

    def __post_init__(self) -> None:
        if self.nprocs < 1:
            raise MpiError(f"nprocs must be at least 1, got {self.nprocs}")
        if self.ppn is not None and self.ppn < 1:
            raise MpiError(f"ppn must be at least 1, got {self.ppn}")
        if self.hosts and self.hostfile:
            raise MpiError("give hosts by name or a hostfile path, not both")
        if self.do_dbg and self.dbg_port is None:
            raise MpiError("do_dbg needs dbg_port, the port gdbserver listens on")
        bad_names = [name for name in self.env if not name or "=" in name]
        if bad_names:
            raise MpiError(f"environment variable names cannot be empty or hold '=': {bad_names}")


@dataclass
class _Launch:
    """A launcher line before the program goes in.

    ``head`` is the launcher and its global options; each of ``contexts`` holds
    the options of one MPMD part, written before its copy of the program and
    joined with ``:``.
    """

    head: List[str]
    contexts: List[List[str]]


def _rank_groups(job: MpiJob) -> List[Tuple[int, List[str]]]:
    """(ranks, prefix) per MPMD part: under ``do_dbg`` rank 0 runs in gdbserver, the rest plain."""
    if not job.do_dbg:
        return [(job.nprocs, [])]
    groups = [(1, ["gdbserver", f"localhost:{job.dbg_port}"])]
    if job.nprocs > 1:
        groups.append((job.nprocs - 1, []))
    return groups


def _hydra(job: MpiJob) -> _Launch:
    """MPICH and Intel MPI: every option but ``-n`` is global, so it is written once."""
    head = [job.mpiexec]
    if job.launcher_exec:
        head += ["-launcher", "ssh", "-launcher-exec", job.launcher_exec]
    if job.ppn is not None:
        head += ["-ppn", str(job.ppn)]
    if job.hosts:
        slots = job.slots or {}
        spec = [host if slots.get(host) is None else f"{host}:{slots[host]}" for host in job.hosts]
        head += ["-hosts", ",".join(spec)]
    elif job.hostfile:
        head += ["-f", job.hostfile]
    for name, value in job.env.items():
        head += ["-genv", name, value]
    head += job.mpi_args
    return _Launch(head, [["-n", str(n), *prefix] for n, prefix in _rank_groups(job)])


def _openmpi(job: MpiJob) -> _Launch:
    """Open MPI: hosts and ``-x`` env belong to one MPMD part, so every part repeats them.

    Measured on Open MPI 4.1: a ``-x`` before the first ``:`` does not reach
    the second part. A host with no slot count has one slot, so unknown counts
    default to ``ppn`` or an even share of ``nprocs``; ``--oversubscribe``
    lets more ranks than cores run, as jarvis-util does.
    """
    head = [job.mpiexec, "--oversubscribe"]
    if job.as_root:
        head.append("--allow-run-as-root")
    if job.ppn is not None:
        head += ["--map-by", f"ppr:{job.ppn}:node"]
    if job.launcher_exec:
        # Open MPI's remote daemons would start further daemons themselves
        # (tree spawn) with the same agent, whose files exist only here.
        head += ["--mca", "plm_rsh_agent", job.launcher_exec,
                 "--mca", "plm_rsh_no_tree_spawn", "1"]
    head += job.mpi_args
    placement: List[str] = []
    if job.hosts:
        slots = job.slots or {}
        share = job.ppn or math.ceil(job.nprocs / len(job.hosts))
        spec = [f"{host}:{slots.get(host) or share}" for host in job.hosts]
        placement = ["--host", ",".join(spec)]
    elif job.hostfile:
        placement = ["--hostfile", job.hostfile]
    for name, value in job.env.items():
        placement += ["-x", f"{name}={value}"]
    return _Launch(head, [[*placement, "-n", str(n), *prefix] for n, prefix in _rank_groups(job)])


def _pals(job: MpiJob) -> _Launch:
    """Cray MPICH's PALS: hosts and env are global options, ``-n`` and ``--ppn`` per MPMD part.

    PALS takes bare host names (no slot counts) and starts ranks through its
    own daemons, so there is no ssh to replace.
    """
    if job.launcher_exec:
        raise MpiError("Cray PALS mpiexec starts ranks without ssh; launcher_exec cannot apply")
    head = [job.mpiexec]
    if job.hosts:
        head += ["--hosts", ",".join(job.hosts)]
    elif job.hostfile:
        head += ["--hostfile", job.hostfile]
    for name, value in job.env.items():
        head += ["--env", f"{name}={value}"]
    head += job.mpi_args
    ppn = ["--ppn", str(job.ppn)] if job.ppn is not None else []
    return _Launch(head, [["-n", str(n), *ppn, *prefix] for n, prefix in _rank_groups(job)])


_BUILDERS: Dict[Flavor, Callable[[MpiJob], _Launch]] = {
    Flavor.MPICH: _hydra,
    Flavor.INTEL_MPI: _hydra,
    Flavor.OPENMPI: _openmpi,
    Flavor.CRAY_MPICH: _pals,
}


def build_argv(flavor: Flavor, job: MpiJob) -> List[str]:
    """The words the launcher receives when `build_line`'s line runs in a shell.

    The program is split as the shell would split a plain command
    (`shlex.split`); shell syntax in it (``|``, ``$VAR``) is not interpreted here.
    """
    launch = _BUILDERS[flavor](job)
    program = shlex.split(job.program)
    argv = list(launch.head)
    for index, context in enumerate(launch.contexts):
        if index:
            argv.append(":")
        argv += [*context, *program]
    return argv


def build_line(flavor: Flavor, job: MpiJob) -> str:
    """The shell line that launches ``job``: options quoted once, the program appended as is.

    Every option value (env values with spaces, quotes, ``$`` or newlines) is
    one `shlex.quote`-d word, so it reaches the ranks exactly. The program is
    not quoted (see the module docstring); under ``do_dbg`` it appears twice,
    so it must then be a plain command.
    """
    launch = _BUILDERS[flavor](job)
    parts = [f"{shlex.join(context)} {job.program}" for context in launch.contexts]
    return f"{shlex.join(launch.head)} {' : '.join(parts)}"
