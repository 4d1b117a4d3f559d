"""ssh_config look-ups that cost the same for a file of 4 blocks or of 4,000.

paramiko's `SSHConfig` matches every ``Host`` block against the host at every
look-up, twice (a first pass and a final one), and asks the OS for the user name
at each block even when it has no ``Match``. HPC sites generate an ssh_config with
one block per node, so a fan-out to N nodes cost N x N pattern matches:
0.27 ms a host at 64 blocks, over 1 ms at 256.
"""

from __future__ import annotations

from typing import Any, Dict, List

from .seams import NarrowedSSHConfig

#: Characters that make a ``Host`` pattern more than a literal name (``!`` negates).
PATTERN_CHARS = frozenset("*?[!,")


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

    def candidates(self, hostname: str) -> List[Dict[str, Any]]:
        blocks = self.blocks()
        return [blocks[i] for i in sorted(self._always + self._by_name.get(hostname, []))]
