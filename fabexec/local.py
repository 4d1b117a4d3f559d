"""Running a command in a local bash, through our invoke runner."""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Tuple

from invoke import Promise
from invoke.exceptions import CommandTimedOut

from .command import Command, new_tag, shell_script, tag_script
from .errors import CommandTimeoutError, KillFailedError, PathNotFoundError, StdinReadError
from .info import ExecInfo, ExecType
from .results import LOCALHOST, HostResult
from .runners import LocalRunner, local_context
from .stdin import StdinSource
from .tee import Outputs

BASH = "/bin/bash"


def exit_status(returncode: Optional[int]) -> int:
    """A shell's ``$?``: a command killed by signal N gives 128+N."""
    if returncode is None:
        return 255
    return 128 - returncode if returncode < 0 else returncode


class LocalExecutor:
    """One command (or an mpiexec line) in a local bash, in its own session.

    ``host`` is the name its results go under: ``localhost``, or the name by
    which a list of hosts named this machine.
    """

    #: The command is a launcher that ends its job elsewhere itself (see `kill_local`).
    launcher = False

    def __init__(self, cmd: Command, info: ExecInfo, script: Optional[str] = None,
                 host: str = LOCALHOST, stdin: Optional[StdinSource] = None) -> None:
        self.info = info
        if info.cwd is not None and not os.path.isdir(os.path.expanduser(info.cwd)):
            raise PathNotFoundError("cwd", os.fspath(info.cwd), "no such folder")
        self.cmd = script or shell_script(cmd, info.env, info.cwd, info.sudo, info.sudoenv,
                                          info.sudo_password is not None)
        self.host = host
        self.hosts: List[str] = [host]
        self.stdin = stdin if stdin is not None else StdinSource(info.stdin, 1)

    def start(self, outputs: Outputs) -> None:
        tag = new_tag()
        self.runner = LocalRunner(local_context())
        # The caller's stdin for a plain local command it waits for (see `fabexec.stdin`).
        self.runner.inherit_stdin = (self.info.exec_type is ExecType.LOCAL
                                     and not self.info.exec_async)
        self.runner.launcher = self.launcher
        self.runner.setup_io(outputs.tees[self.host], tag, self.stdin.reader(local=True),
                             self.info.watchers, self.info.sudo_password)
        self._ended = self._outcome(lambda: self.runner.run(
            tag_script(self.cmd, tag), shell=BASH, env={}, replace_env=True,
            warn=True, hide=True, echo=False, in_stream=False, watchers=[],
            asynchronous=self.info.exec_async, timeout=self.info.timeout,
        ))

    def _outcome(self, step: Callable[[], Any]) -> Optional[HostResult]:
        """Run ``step``; its `HostResult` once the command ended, None while it runs."""
        try:
            result = step()
        except CommandTimedOut as e:
            error = CommandTimeoutError(self.host, f"timed out after {e.timeout} s; the "
                                        "command and every process it started were ended")
            return HostResult.of(error)
        if isinstance(result, Promise):
            self.promise = result
            return None
        return HostResult(exit_status(result.exited))

    def wait(self) -> Dict[str, HostResult]:
        if self._ended is None:
            self._ended = self._outcome(self.promise.join)
        left, unread = self.runner.reap_error, self.runner.stdin_error
        if left is not None and self._ended.error is None:
            self._ended = HostResult(self._ended.exit_code or 255,
                                     KillFailedError(self.host, left))
        if unread is not None and self._ended.error is None:
            self._ended = HostResult(self._ended.exit_code or 1, StdinReadError(self.host, unread))
        return {self.host: self._ended}

    def progress(self) -> Tuple[int, int, int]:
        """(hosts done, of which failed, hosts in all): one host, done once it exited."""
        ended = getattr(self, "_ended", None)
        if ended is not None:
            return 1, int(bool(ended.exit_code)), 1
        process = getattr(getattr(self, "runner", None), "process", None)
        code = None if process is None else process.poll()
        return (0, 0, 1) if code is None else (1, int(bool(exit_status(code))), 1)

    def ended(self) -> Dict[str, HostResult]:
        """The host once its command ended and its output was read (after `wait`)."""
        ended = getattr(self, "_ended", None)
        return {} if ended is None else {self.host: ended}

    def kill(self) -> None:
        if getattr(getattr(self, "runner", None), "process", None) is not None:
            self.runner.kill()
