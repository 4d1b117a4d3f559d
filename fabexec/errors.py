"""The typed errors of fabexec.

Two families. A wrong argument is raised at once, before anything runs
(`ExecInfoError`, `HostfileError`, `PathNotFoundError`, `MpiError`, ...).
What goes wrong *on a host* while a command runs (unreachable, timed out,
stopped answering) is a `HostError`: it is not raised but kept in
``Exec.errors[host]``, so that one bad host never hides the others' results.
"""

from __future__ import annotations

from typing import List, Optional, Tuple


class FabexecError(Exception):
    """Base of every error fabexec raises or records."""


def reason(error: BaseException) -> str:
    """An exception in words: its message, else its type's name (paramiko's EOFError, a
    closed socket's, says nothing: "connection lost: " told the user nothing either)."""
    return str(error) or type(error).__name__


class ExecInfoError(FabexecError, ValueError):
    """An `ExecInfo` keyword has a wrong type or value; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"ExecInfo({field}=...): {message}")


class SchedulerError(ExecInfoError):
    """Slurm (or PBS) refused a request, or is not installed; ``field`` names the keyword
    and the message carries the scheduler's own words."""


class CommandError(FabexecError, ValueError):
    """``cmd`` is not a string or a list of strings, or has nothing to run."""


class HostfileError(FabexecError, ValueError):
    """A hostfile or host expression cannot be parsed.

    ``path`` and ``line`` say where (``path`` is None for text given inline),
    ``text`` is the offending text.
    """

    def __init__(
        self,
        message: str,
        *,
        path: Optional[str] = None,
        line: Optional[int] = None,
        text: Optional[str] = None,
    ) -> None:
        self.path, self.line, self.text = path, line, text
        where = path or "<hosts>"
        if line is not None:
            where += f", line {line}"
        detail = f": {text!r}" if text is not None else ""
        super().__init__(f"{where}{detail}: {message}")


class HostLookupError(HostfileError):
    """A host name has no IP address (raised only when its IP is asked for)."""


class NotInJobError(HostfileError):
    """`Hostfile.from_env` found no Slurm, PBS or Flux job around this process."""


class PathNotFoundError(FabexecError, FileNotFoundError):
    """A local path the command needs (``cwd``, an output folder) does not exist."""

    def __init__(self, field: str, path: str, message: str) -> None:
        self.field, self.path = field, path
        super().__init__(f"{field}={path!r}: {message}")


class MpiError(FabexecError):
    """The MPI launcher is missing, unknown, or cannot do what was asked."""


class TransferError(FabexecError):
    """A file copy cannot even start (e.g. the local source is missing)."""


class HostError(FabexecError):
    """What ended a command on one host; kept in ``Exec.errors[host]``."""

    exit_code = 255

    def __init__(self, host: str, message: str) -> None:
        self.host = host
        super().__init__(f"{host}: {message}")


class UnreachableError(HostError):
    """The host could not be connected to (refused, no route, silent)."""


class AuthenticationError(HostError):
    """The host refused every key or password we offered."""


class HostKeyError(HostError):
    """The host's key is unknown under ``strict_ssh=True``, or has changed."""


class ConnectionLostError(HostError):
    """The connection broke mid-command (reset, or EOF with no exit status)."""


class HostStoppedAnsweringError(ConnectionLostError):
    """Keepalive requests went unanswered: the host hangs or the network is gone."""


class GatewayError(ConnectionLostError):
    """The gateway serving this host failed (refused, gone, frozen, cannot run fabexec)
    before the host's command could be known to have ended; ``gateway`` names it."""

    def __init__(self, host: str, gateway: str, message: str) -> None:
        self.gateway = gateway
        super().__init__(host, f"through gateway {gateway}: {message}")


class CommandTimeoutError(HostError):
    """The command ran longer than ``timeout`` and was stopped with all it started."""

    exit_code = 124  # as coreutils' timeout(1)


class KillFailedError(HostError):
    """kill(), a timeout or an interrupt could not make sure the command ended there:
    processes it started may still run (the host stopped answering, the reaper failed)."""


class StdinReadError(HostError):
    """The caller's ``stdin`` failed while being read: the command got an early EOF."""

    exit_code = 1


class OutputWriteError(HostError):
    """An output file (``pipe_stdout``/``pipe_stderr``) could not be written."""

    def __init__(self, host: str, path: str, reason: str) -> None:
        self.path = path
        super().__init__(host, f"cannot write output file {path!r}: {reason}")


class SchedulerJobError(HostError):
    """A scheduler's job or step did not run or did not end normally (cancelled, killed)."""


class SlurmStepError(SchedulerJobError):
    """A node's part of a Slurm job step did not run or did not end normally (the reason
    is srun's: the step could not start there, a task was killed, the node failed)."""


class SandboxError(FabexecError):
    """The local sandbox cluster cannot start or be handled (sshd missing, a node died)."""


class TransferFailedError(HostError):
    """A copy to or from one host failed (a path that cannot be read or written)."""

    exit_code = 1
    #: True when the link failed rather than a file (the connection broke).
    link_failed = False


class PartialCopyError(TransferFailedError):
    """Some paths could not be copied, and every other one was (as rsync goes on).

    ``skipped`` lists ``(path, reason)`` for each, in the order met; the message
    spells out the first `NAMED`.
    """

    NAMED = 10

    def __init__(self, host: str, skipped: List[Tuple[str, str]]) -> None:
        self.skipped = list(skipped)
        reasons = [reason for _, reason in self.skipped[:self.NAMED]]
        more = len(self.skipped) - len(reasons)
        message = reasons[0] if len(self.skipped) == 1 else (
            f"{len(self.skipped)} paths not copied (the rest were): " + "; ".join(reasons)
            + (f"; and {more} more" if more else ""))
        super().__init__(host, message)
