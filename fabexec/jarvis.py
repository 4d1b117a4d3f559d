"""jarvis-util's shell API on fabexec: the names a jarvis-util program imports.

jarvis-util builds its shell API from classes that each own one way of
running (``LocalExec``, ``SshExec``, ``PsshExec``, the MPI ones) and helpers
built on them (``Mkdir``, ``Kill``, ``Cmake``...). Here every one of them is
an `Exec` given the `ExecType` its name says, so it runs, reports and is
killed like any other command, and a program keeps working after changing its
imports only. What jarvis-util keeps as an internal (``exec_``, ``smash_cmd``,
``print_stdout_worker``) has no counterpart; the README's "Migrating from
jarvis-util" table lists every difference that remains.

Paths given to `Mkdir`, `Rm`, `Chmod`, `Copy` and `Cmake` are shell words, as
in jarvis-util: a glob or ``~`` expands on the host that runs the command.
"""

from __future__ import annotations

import abc
import shlex
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from .command import Command
from .defaults import DEFAULTS
from .errors import CommandError, MpiError
from .exec import Exec
from .info import ExecInfo, ExecType
from .mpi_flavors import Flavor, parse_flavor

__all__ = [
    "Chmod", "Cmake", "Copy", "CrayMpichExec", "Executable", "JutilManager", "Kill",
    "LocalExec", "LocalMpiExec", "Make", "Mkdir", "MpiVersion", "MpichExec", "OpenMpiExec",
    "PsshExec", "Rm", "SparkExec", "SshExec",
]

Paths = Union[str, Sequence[str]]


class JutilManager:
    """jarvis-util's switches for every command whose `ExecInfo` leaves them ``None``.

    All instances share one state (`fabexec.defaults.DEFAULTS`), the one
    `get_instance` returns included. ``debug_local_exec`` prints every
    command's script before it runs, ``debug_mpi_exec`` the launcher line of
    MPI jobs; ``debug_scp``, ``debug_slurm`` and ``debug_pbs`` are kept for
    code that sets them and change nothing.
    """

    instance_: Optional[JutilManager] = None

    def __init__(self) -> None:
        self.debug_scp = False
        self.debug_slurm = False
        self.debug_pbs = False

    @staticmethod
    def get_instance() -> JutilManager:
        if JutilManager.instance_ is None:
            JutilManager.instance_ = JutilManager()
        return JutilManager.instance_

    collect_output = property(
        lambda self: DEFAULTS.collect_output,
        lambda self, value: setattr(DEFAULTS, "collect_output", bool(value)))
    hide_output = property(
        lambda self: DEFAULTS.hide_output,
        lambda self, value: setattr(DEFAULTS, "hide_output", bool(value)))
    debug_local_exec = property(
        lambda self: DEFAULTS.echo_commands,
        lambda self, value: setattr(DEFAULTS, "echo_commands", bool(value)))
    debug_mpi_exec = property(
        lambda self: DEFAULTS.echo_mpi,
        lambda self, value: setattr(DEFAULTS, "echo_mpi", bool(value)))


class Executable(abc.ABC):
    """What jarvis-util's runners have in common; every `Exec` is one."""

    exit_code: Optional[int]
    stdout: Any
    stderr: Any

    def failed(self) -> bool:
        return self.exit_code != 0

    @abc.abstractmethod
    def wait(self) -> Optional[int]: ...


Executable.register(Exec)


def _info(exec_info: Optional[ExecInfo], exec_type: Optional[ExecType] = None,
          **changes: Any) -> ExecInfo:
    info = exec_info if exec_info is not None else ExecInfo()
    if exec_type is not None and info.exec_type is not exec_type:
        changes["exec_type"] = exec_type
    return info.mod(**changes) if changes else info


# --------------------------------------------------------------------------- runners

class _OneStream(Exec):
    """An `Exec` on one host whose ``stdout``/``stderr`` are strings, as jarvis-util's are."""

    def __init__(self, cmd: Command, exec_info: ExecInfo) -> None:
        super().__init__(cmd, exec_info)
        if not self.done:  # async: jarvis-util gives the text once waited for
            self.stdout, self.stderr = "", ""  # type: ignore[assignment]

    def _collect(self, results: Any) -> None:
        self.stdout = {h: "" for h in self.hosts}
        self.stderr = {h: "" for h in self.hosts}
        super()._collect(results)
        host = self.hosts[0]
        self.stdout, self.stderr = self.stdout[host], self.stderr[host]  # type: ignore

    def get_pid(self) -> Optional[int]:
        """The PID of the local bash that runs the command; None where nothing runs here."""
        process = getattr(getattr(self._executor, "runner", None), "process", None)
        return None if process is None else process.pid


class LocalExec(_OneStream):
    """Run ``cmd`` on this machine, whatever kind ``exec_info`` says."""

    def __init__(self, cmd: Command, exec_info: Optional[ExecInfo] = None) -> None:
        super().__init__(cmd, _info(exec_info, ExecType.LOCAL))


class SshExec(_OneStream):
    """Run ``cmd`` on the first host of ``exec_info``; ``addr`` names it."""

    def __init__(self, cmd: Command, exec_info: ExecInfo) -> None:
        super().__init__(cmd, _info(exec_info, ExecType.SSH))
        self.addr = self.hosts[0]


class PsshExec(Exec):
    """Run ``cmd`` on every host of ``exec_info`` at once; outputs keyed by host."""

    def __init__(self, cmd: Command, exec_info: ExecInfo) -> None:
        super().__init__(cmd, _info(exec_info, ExecType.PSSH))


class LocalMpiExec(_OneStream):
    """Run ``cmd`` as an MPI job with the installed launcher (its flavor detected)."""

    exec_type = ExecType.MPI

    def __init__(self, cmd: Command, exec_info: ExecInfo) -> None:
        super().__init__(cmd, _info(exec_info, self.exec_type))

    def mpicmd(self) -> str:
        """The launcher line that ran (one line per command of a list)."""
        return self.cmd


class MpichExec(LocalMpiExec):
    """An MPI job written for MPICH's Hydra (Intel MPI's too), without asking the launcher."""

    exec_type = ExecType.MPICH


class OpenMpiExec(LocalMpiExec):
    """An MPI job written for Open MPI, without asking the launcher."""

    exec_type = ExecType.OPENMPI


class CrayMpichExec(LocalMpiExec):
    """An MPI job written for Cray MPICH's PALS, without asking the launcher."""

    exec_type = ExecType.CRAY_MPICH


_FLAVOR_TYPES = {Flavor.MPICH: ExecType.MPICH, Flavor.OPENMPI: ExecType.OPENMPI,
                 Flavor.INTEL_MPI: ExecType.INTEL_MPI, Flavor.CRAY_MPICH: ExecType.CRAY_MPICH}


class MpiVersion(LocalExec):
    """Ask ``exec_info.mpiexec --version`` which MPI is installed; ``version`` is its ExecType."""

    def __init__(self, exec_info: Optional[ExecInfo] = None) -> None:
        info = _info(exec_info, ExecType.LOCAL, collect_output=True, hide_output=True,
                     exec_async=False, do_dbg=False)
        super().__init__(f"{shlex.quote(info.mpiexec)} --version", info)
        flavor = parse_flavor(f"{self.stdout}\n{self.stderr}")
        if flavor is None:
            raise MpiError(f"could not identify the MPI implementation of {info.mpiexec!r} "
                           f"(exit {self.exit_code}): {self.stdout or self.stderr!r}")
        self.version = _FLAVOR_TYPES[flavor]


# --------------------------------------------------------------------------- helpers

def _words(paths: Paths) -> str:
    return " ".join([paths] if isinstance(paths, str) else list(paths))


class Mkdir(Exec):
    """``mkdir -p`` on every host of ``exec_info``; existing folders are fine."""

    def __init__(self, paths: Paths, exec_info: Optional[ExecInfo] = None) -> None:
        super().__init__(f"mkdir -p {_words(paths)}", exec_info)


class Rm(Exec):
    """``rm -rf`` on every host of ``exec_info``."""

    def __init__(self, paths: Paths, exec_info: Optional[ExecInfo] = None) -> None:
        super().__init__(f"rm -rf {_words(paths)}", exec_info)


class Chmod(Exec):
    """``chmod`` one ``path`` to ``mode``, and/or each ``(path, mode)`` of ``modes``."""

    def __init__(self, path: Optional[str] = None, mode: Any = None,
                 modes: Optional[Sequence[Tuple[str, Any]]] = None,
                 exec_info: Optional[ExecInfo] = None) -> None:
        pairs = [(path, mode)] if path is not None and mode is not None else []
        pairs += list(modes or [])
        if not pairs:
            raise CommandError("Chmod needs path and mode, or modes=[(path, mode), ...]")
        super().__init__([f"chmod {m} {p}" for p, m in pairs], exec_info)


class Copy(Exec):
    """``cp -r target destination`` on every host of ``exec_info``."""

    def __init__(self, target: Optional[str] = None, destination: Optional[str] = None,
                 exec_info: Optional[ExecInfo] = None) -> None:
        if not isinstance(target, str) or not isinstance(destination, str):
            raise CommandError(f"Copy takes two path strings, not {target!r} and "
                               f"{destination!r}")
        super().__init__(f"cp -r {target} {destination}", exec_info)


class Kill(Exec):
    """End (SIGKILL) every process whose command line matches ``cmd``, on every host.

    ``partial=False`` matches the process name only, as ``pkill`` does. The
    kill spares its own processes, whose command lines hold the pattern too:
    their ancestors (the caller's Python here, sshd's shell there) and every
    process carrying its tag (see `fabexec.command`). Exits 1 where nothing
    matched, as ``pkill`` does.
    """

    def __init__(self, cmd: str, exec_info: ExecInfo, partial: bool = True) -> None:
        flags = "-f " if partial else ""
        script = (
            'own="FABEXEC_TAG=$FABEXEC_TAG"; spare=" $$ "; p=$$; found=1\n'
            'while p=$(ps -o ppid= -p "$p" 2>/dev/null) && p=${p// /} && [ "${p:-0}" -gt 1 ]; do\n'
            '  spare="$spare$p "\n'
            "done\n"
            f"for pid in $(pgrep {flags}-- {shlex.quote(cmd)}); do\n"
            '  case "$spare" in *" $pid "*) continue;; esac\n'
            '  tr "\\0" "\\n" </proc/$pid/environ 2>/dev/null | grep -qxF -- "$own" && continue\n'
            '  kill -9 "$pid" 2>/dev/null && found=0\n'
            "done\n"
            "exit $found"
        )
        super().__init__(script, exec_info)


class Cmake(Exec):
    """``cmake root_dir -DKEY=VALUE...`` in ``out_dir`` (made first); booleans are ON/OFF."""

    def __init__(self, root_dir: str, out_dir: str, opts: Optional[Dict[str, Any]] = None,
                 exec_info: Optional[ExecInfo] = None) -> None:
        self.opts, self.root_dir, self.out_dir = opts, root_dir, out_dir
        Mkdir(out_dir, _info(exec_info, exec_async=False))
        words = [f"cmake {root_dir}"]
        for key, value in (opts or {}).items():
            if isinstance(value, bool):
                value = "ON" if value else "OFF"
            words.append(shlex.quote(f"-D{key}={value}"))  # a ``;`` list stays one value
        super().__init__(" ".join(words), _info(exec_info, cwd=out_dir))


class Make(Exec):
    """``make -jN`` (and ``install``) in ``build_dir``."""

    def __init__(self, build_dir: str, nthreads: int = 8, install: bool = False,
                 exec_info: Optional[ExecInfo] = None) -> None:
        cmd = f"make -j{int(nthreads)}" + (" install" if install else "")
        super().__init__(cmd, _info(exec_info, cwd=build_dir))


class SparkExec(LocalExec):
    """``spark-submit`` of ``cmd`` to the master at ``master_host:master_port``, from here."""

    def __init__(self, cmd: str, master_host: str, master_port: Union[int, str],
                 driver_mem: str = "1g", executor_mem: str = "1g", scratch: str = "/tmp",
                 replication: int = 1, exec_info: Optional[ExecInfo] = None) -> None:
        words: List[str] = [
            "spark-submit", "--master", f"spark://{master_host}:{master_port}",
            "--driver-memory", driver_mem, "--executor-memory", executor_mem,
            "--conf", "spark.speculation=false",
            "--conf", f"spark.storage.replication={replication}",
            "--conf", f"spark.local.dir={scratch}",
        ]
        super().__init__(f"{shlex.join(words)} {cmd}", exec_info)
