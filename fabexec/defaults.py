"""Process-wide answers for what an `ExecInfo` leaves unsaid (``None``).

jarvis-util keeps them in its ``JutilManager`` singleton, and programs switch
them once at the top (``JutilManager.get_instance().collect_output = True``);
`fabexec.jarvis.JutilManager` writes here. An `ExecInfo` value always wins.
"""

from __future__ import annotations

from dataclasses import dataclass

from .info import ExecType


@dataclass
class Defaults:
    collect_output: bool = False
    hide_output: bool = False
    #: Print each command's script (the launcher line for MPI) before it runs.
    echo_commands: bool = False
    #: The same, for MPI jobs only.
    echo_mpi: bool = False

    def echo(self, exec_type: ExecType) -> bool:
        return self.echo_commands or (self.echo_mpi and exec_type.is_mpi)


DEFAULTS = Defaults()
