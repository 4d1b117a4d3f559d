"""ssh_config look-ups that cost the same for a file of 4 blocks or of 4,000.

paramiko's `SSHConfig` matches every ``Host`` block against the host at every
look-up, twice (a first pass and a final one), and asks the OS for the user name
at each block even when it has no ``Match``. HPC sites generate an ssh_config with
one block per node, so a fan-out to N nodes cost N x N pattern matches:
0.27 ms a host at 64 blocks, over 1 ms at 256.

A tree's client tells each gateway where its targets are (`SshConfigFile.route`)
without paramiko's whole look-up, which also expands every option's ``%``
tokens (a user-name and host-name query each) and compiles each block's pattern
the first time: 90 to 220 us a target, most of the client's cost per target.
"""

from __future__ import annotations

import fnmatch
from typing import Any, Dict, List

from .seams import NarrowedSSHConfig

#: Characters that make a ``Host`` pattern more than a literal name (``!`` negates).
PATTERN_CHARS = frozenset("*?[!,")

#: Where a host is: what a gateway needs of the client's ssh_config for each target.
ROUTE_OPTIONS = ("hostname", "port", "user")

#: Options that make a host's name change between look-up passes.
RENAMING_OPTIONS = ("canonicalizehostname", "canonicaldomains")


class SshConfigFile(NarrowedSSHConfig):
    """paramiko's `SSHConfig` that tries only the blocks which can match a host.

    A ``Host`` block whose patterns are all literal names can only match those
    names; every other block (wildcards, negations, ``Match``) is tried as
    paramiko tries it. Blocks are applied in file order, so the first value of
    each option still wins, as in OpenSSH.
    """

    def __init__(self) -> None:
        super().__init__()
        self._by_name: Dict[str, List[int]] = {}
        self._always: List[int] = []
        self._routes_read = True

    def parse(self, file_obj: Any) -> None:
        super().parse(file_obj)
        self._by_name, self._always = {}, []
        for index, block in enumerate(self.blocks()):
            names = block.get("host")
            if names and not any(PATTERN_CHARS.intersection(n) for n in names):
                for name in set(names):
                    self._by_name.setdefault(name, []).append(index)
            else:
                self._always.append(index)
        # `route` reads the blocks itself unless a Match block could set where a host is
        # or a host's name can change between passes (canonicalization).
        self._routes_read = not any(
            any(key in block["config"] for key in RENAMING_OPTIONS)
            or (block.get("host") is None and any(key in block["config"]
                                                   for key in ROUTE_OPTIONS))
            for block in self.blocks())

    def candidates(self, hostname: str) -> List[Dict[str, Any]]:
        blocks = self.blocks()
        return [blocks[i] for i in sorted(self._always + self._by_name.get(hostname, []))]

    def route(self, hostname: str) -> Dict[str, str]:
        """``hostname``'s HostName (its own name when none is set), and its Port and User
        where set, as `lookup` gives them: the first value of each in file order from the
        ``Host`` blocks that match.

        paramiko's `lookup` answers when a ``Match`` block could set one, a host can be
        renamed (canonicalization) or a value holds a ``%`` token to expand.
        """
        found: Dict[str, str] = {}
        if self._routes_read:
            for block in self.candidates(hostname):
                if not _host_matches(block["host"], hostname):
                    continue
                for key in ROUTE_OPTIONS:
                    if key in block["config"] and key not in found:
                        found[key] = str(block["config"][key])
            if not any("%" in value or "~" in value for value in found.values()):
                found.setdefault("hostname", hostname)
                return found
        options = self.lookup(hostname)
        return {key: str(options[key]) for key in ROUTE_OPTIONS if key in options}


def _host_matches(patterns: List[str], hostname: str) -> bool:
    """A ``Host`` line's patterns against ``hostname``: one must match, none negated may."""
    matched = False
    for pattern in patterns:
        if pattern.startswith("!"):
            if fnmatch.fnmatchcase(hostname, pattern[1:]):
                return False
        elif pattern == hostname or (PATTERN_CHARS.intersection(pattern)
                                     and fnmatch.fnmatchcase(hostname, pattern)):
            matched = True
    return matched
