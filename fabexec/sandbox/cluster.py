"""`Cluster`: how to reach a cluster of SSH nodes and what they offer, whoever runs them.

The sandbox writes one when it starts; the tests' docker cluster builds one too, so that
the same test runs on both and skips only what a cluster lacks.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Type, TypeVar, Union

CLUSTER_FILE = "cluster.json"

ClusterT = TypeVar("ClusterT", bound="Cluster")
PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class Cluster:
    """How to reach a cluster of SSH nodes, whoever runs them (the sandbox, docker).

    The fields after ``known_hosts`` say what the nodes offer, so that a test can skip
    what a cluster lacks: ``own_hostnames`` (``hostname`` answers the alias),
    ``own_folders`` (/tmp, /var/tmp, /dev/shm and home are each node's own: what one
    node writes there, another does not see), ``own_processes`` (``ps`` on a node lists
    that node's processes only), ``sudo`` (``user`` has passwordless sudo),
    ``password_user`` whose sudo needs ``sudo_password``. ``own_folders`` and
    ``own_processes`` read False from a cluster saved before they existed: what a
    cluster does not claim, a test must not assume.
    """

    state_dir: Path
    hosts: List[str]
    addresses: Dict[str, Tuple[str, int]]
    user: str
    key: Path
    hostfile: Path
    ssh_config: Path
    known_hosts: Path
    own_hostnames: bool = True
    own_folders: bool = False
    own_processes: bool = False
    sudo: bool = False
    password_user: Optional[str] = None
    sudo_password: Optional[str] = None

    def save(self) -> Path:
        """Write the cluster to ``state_dir/cluster.json`` (owner only: it may hold a password)."""
        path = self.state_dir / CLUSTER_FILE
        text = json.dumps(asdict(self), default=str, indent=2) + "\n"
        write_private(path, text.encode())
        return path

    @classmethod
    def load(cls: Type[ClusterT], state_dir: PathLike) -> ClusterT:
        """The cluster saved in ``state_dir``; FileNotFoundError when there is none."""
        data = json.loads((Path(state_dir) / CLUSTER_FILE).read_text())
        for name in ("state_dir", "key", "hostfile", "ssh_config", "known_hosts"):
            data[name] = Path(data[name])
        data["addresses"] = {host: (ip, int(port)) for host, (ip, port) in
                             data["addresses"].items()}
        return cls(**data)


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a file only its owner can read (keys, passwords)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
