"""What a run did on each host, and which hosts it runs on: one vocabulary for all.

`Exec` and every copy (`Put`, `Get`, `Scp`, `Pscp`) pick their hosts with
`run_hosts` and `split_local`, and report through `HostResults`, so a command
and a copy given the same `ExecInfo` reach the same hosts the same way:

- **Which hosts.** `LOCAL` runs on this machine; `SSH` on the first host given
  (jarvis-util's SshExec); every other kind on every host.
- **Duplicates** run once, where the name first appears: results are keyed by
  host, so a second run could only overwrite the first (as pdsh and clush
  fold a repeated name). MPI is not concerned: there a repeated host is a slot.
- **This machine** (``localhost``, ``127.0.0.1``, ``::1``, its own hostname)
  runs here, without SSH, as the caller, unless ``port`` or a ``user`` other
  than the caller says to reach it through SSH (a tunnel, an sshd of its
  own, another account). In a list that mixes it with
  remote hosts, it still runs here; the others go through SSH.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from .errors import HostError
from .hostfile import is_local_name
from .info import ExecInfo, ExecType

#: How this machine is named in results when no host was given.
LOCALHOST = "localhost"


@dataclass
class HostResult:
    """How a command or a copy ended on one host."""

    exit_code: int
    error: Optional[HostError] = None

    @classmethod
    def of(cls, error: HostError) -> HostResult:
        """The result of a host that ``error`` stopped (255 unreachable, 124 timed out...)."""
        return cls(error.exit_code, error)


def every_host(info: ExecInfo) -> List[str]:
    """Every host ``info`` names, each once, in the order given (``localhost`` if none)."""
    return list(dict.fromkeys(info.targets.hosts))


def run_hosts(info: ExecInfo) -> List[str]:
    """The hosts ``info`` reaches, by its kind (see the module's rules)."""
    if info.exec_type is ExecType.LOCAL:
        return [LOCALHOST]
    hosts = every_host(info)
    return hosts[:1] if info.exec_type is ExecType.SSH else hosts


def runs_here(host: str, info: ExecInfo) -> bool:
    """True when ``host`` names this machine and nothing asks to reach it over SSH."""
    # The name first: the user's name is asked of the OS (without $USER, the password
    # database), 14 us a call, which 1,024 remote hosts need not pay.
    return (info.port is None and is_local_name(host)
            and info.user in (None, getpass.getuser()))


def split_local(hosts: List[str], info: ExecInfo) -> Tuple[List[str], List[str]]:
    """``hosts`` as (those that run here, those reached over SSH), order kept."""
    here = [h for h in hosts if runs_here(h, info)]
    return here, [h for h in hosts if h not in here]


class HostResults:
    """The per-host results shared by `Exec` and the copies.

    ``exit_codes[host]`` and ``errors[host]`` (the `HostError` that stopped a
    host); ``exit_code``, 0 when every host succeeded, else the first failing
    host's code; a failed host never hides the others.
    """

    def __init__(self, hosts: List[str]) -> None:
        self.hosts = list(hosts)
        self.exit_codes: Dict[str, Optional[int]] = {h: None for h in self.hosts}
        self.errors: Dict[str, HostError] = {}
        self.exit_code: Optional[int] = None

    def _settle(self, results: Dict[str, HostResult]) -> None:
        for host in self.hosts:
            result = results[host]
            self.exit_codes[host] = result.exit_code
            if result.error is not None:
                self.errors[host] = result.error
        failing = [code for code in self.exit_codes.values() if code]
        self.exit_code = failing[0] if failing else 0

    def failed(self) -> bool:
        """True when any host failed (nonzero exit, or an error)."""
        return bool(self.exit_code) or bool(self.errors)
