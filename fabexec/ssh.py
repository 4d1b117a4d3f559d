"""Running a command on one host through a Fabric Connection."""

from __future__ import annotations

from .command import Command
from .info import ExecInfo
from .pssh import PsshExecutor


class SshExecutor(PsshExecutor):
    """The first host of ``info.targets``, as jarvis-util's SshExec does.

    One host is a fan-out of one: the same runner, cache and results.
    """

    def __init__(self, cmd: Command, info: ExecInfo) -> None:
        super().__init__(cmd, info, hosts=list(info.targets.hosts[:1]))
