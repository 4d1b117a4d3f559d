"""Turning ``cmd`` + env + cwd + sudo into one bash script, quoted once.

The same script runs locally (``bash -c``) and remotely (sshd hands it to the
login shell, which execs bash), so a command behaves identically everywhere.
Every value the user gave is quoted with `shlex.quote`, which is what Fabric's
inline env leaves undone (see its ``Remote.start``).
"""

from __future__ import annotations

import os
import shlex
import uuid
from typing import Dict, Optional, Sequence, Union

from .errors import CommandError
from .info import TAG_VAR

Command = Union[str, Sequence[str]]

#: Every process a command starts inherits this variable (TAG_VAR), so `kill` can find
#: them all, even those that left the process group (``setsid``, daemons).
#: Its value is a ``:``-separated list: a fabexec program run by a fabexec
#: command adds its own tag to the list instead of replacing it, so the outer
#: run still finds what the inner one started.

#: Longest script read by bash's own ``read`` on the remote side; a longer one
#: is read by ``head -c``, which reads a pipe in blocks (``read`` takes a byte
#: per system call there, so as not to read past its end).
INLINE_READ_MAX = 64 * 1024

#: sudo's prompt when a password is needed, answered from ``sudo_password``.
SUDO_PROMPT = "[fabexec] sudo password: "


def script_of(cmd: Command) -> str:
    """A list of commands runs one after another in one shell, like a script."""
    if isinstance(cmd, str):
        commands = [cmd]
    elif isinstance(cmd, (list, tuple)) and all(isinstance(c, str) for c in cmd):
        commands = list(cmd)
    else:
        raise CommandError(f"cmd must be a string or a list of strings, not {cmd!r}")
    if not commands or not any(c.strip() for c in commands):
        raise CommandError("cmd is empty: nothing to run")
    for number, command in enumerate(commands):
        if "\0" in command:
            where = f"cmd[{number}]" if not isinstance(cmd, str) else "cmd"
            raise CommandError(f"{where} holds a NUL byte, which no shell command can carry")
    return "\n".join(commands)


def shell_script(
    cmd: Command,
    env: Optional[Dict[str, str]] = None,
    cwd: Optional[Union[str, os.PathLike[str]]] = None,
    sudo: bool = False,
    sudoenv: bool = True,
    sudo_password: bool = False,
) -> str:
    """The script that runs ``cmd`` with ``env`` exported, in ``cwd``, under sudo."""
    lines = []
    if env:
        lines.append("export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()))
    if cwd is not None:
        lines.append(f"cd -- {cd_target(os.fspath(cwd))} || exit 1")
    lines.append(script_of(cmd))
    script = "\n".join(lines)
    if not sudo:
        return script
    flags = ["-E"] if sudoenv else []
    if sudo_password:
        # sudo -S reads the password from stdin (typed there by a watcher when the
        # prompt shows); the command itself then gets an empty stdin. One sudo, not
        # `sudo -v` then `sudo -n`: where sudo caches no credentials
        # (timestamp_timeout=0) the second would ask again and fail.
        flags = ["-S", "-p", SUDO_PROMPT, *flags]
        script = f"exec </dev/null\n{script}"
    else:
        flags = ["-n", *flags]
    # The tag crosses sudo as an argument: sudo's env_reset would drop it, and
    # the reaper could not find the command's processes.
    return f"{shlex.join(['sudo', *flags])} {TAG_VAR}=\"${TAG_VAR}\" " \
           f"{shlex.join(['bash', '-c', script])}"


def cd_target(cwd: str) -> str:
    """``cwd`` as ``cd`` should read it, quoted: on the host that runs the command.

    ``~`` and ``~/...`` are that host's home, as `Put` and `Get` read them; a
    relative folder starts with ``./``, so that ``-`` is a folder named ``-``
    (not ``$OLDPWD``) and ``$CDPATH`` is not searched.
    """
    if cwd == "~" or cwd.startswith("~/"):
        return '"$HOME"' + (shlex.quote(cwd[1:]) if len(cwd) > 1 else "")
    if not cwd.startswith("/"):
        cwd = "./" + cwd
    return shlex.quote(cwd)


def sudo_line(script: str, sudo_password: bool) -> str:
    """``script`` as root, for the reaper of a sudo command (password on stdin if needed)."""
    flags = ["-S", "-p", ""] if sudo_password else ["-n"]
    return shlex.join(["sudo", *flags, "bash", "-c", script])


def remote_line(script: bytes, tag: str) -> str:
    """What sshd's login shell runs: a bash, tagged, that reads ``script`` from stdin.

    The script comes first on the channel's stdin (the caller's stdin follows),
    not as an argument: it is sent as it is, quoted once, whatever its size
    (sshd runs the line as one argument, capped at 128 KiB by Linux, and resets
    the whole connection, every channel on it, past its 256 KiB packets), and
    neither ``ps`` on the host nor the shell's report of a killed job shows it,
    secrets of ``env`` included. Not ``exec bash``: the untagged login shell
    stays to report a command that a signal ended (a kill, a crash) as 128+N,
    like a local shell. sshd would send "exit-signal" instead, which paramiko
    ignores, and the command would look like a lost connection.
    """
    size, name = len(script), "__fabexec_script"
    if size <= INLINE_READ_MAX:
        read = f'LC_ALL=C IFS= read -r -d "" -N {size} {name}'
    else:  # the dot keeps the script's last newlines from $(...)
        read = f"{name}=$(head -c {size}; echo .); {name}=${{{name}%.}}"
    inner = f'{read}; eval "${name}"'
    return f"{TAG_VAR}={tag} bash -c {shlex.quote(inner)}; exit $?"


def tag_script(script: str, tag: str) -> str:
    """A local script that tags every process it starts (bash itself leads their group)."""
    return f'export {TAG_VAR}="${{{TAG_VAR}:+${TAG_VAR}:}}{tag}"\n{script}'


def new_tag() -> str:
    return uuid.uuid4().hex
