"""A local cluster of real OpenSSH ``sshd`` daemons, for tests, demos and ``inv deploy``.

``up(4)`` starts four ``sshd`` processes and returns a `SandboxCluster` that says how to
reach them: aliases ``node1`` .. ``node4`` in an ``ssh_config``, a hostfile, a known_hosts
and a client key, all in one state folder (``$FABEXEC_SANDBOX_DIR``, else
``~/.cache/fabexec/sandbox``). ``down()`` stops exactly the daemons that folder records,
with every session they started, and nothing else.

As root, each node listens on port 22 of its own loopback address (127.0.1.1, 127.0.1.2,
...; see `loopback_ips`), is as separate from the others as this machine allows (its own
hostname and /etc/hosts naming every node; its own /tmp, /var/tmp, /dev/shm and homes;
its own processes: see `.isolation`), and lets in two users it creates:
``fabexec`` (passwordless sudo) and ``fabexec-pw`` (sudo asks for
`Cluster.sudo_password`). Not root's own login, because root's ``~/.bashrc`` may be slow
(pyenv init costs 80 ms per session here). The users and their sudo rules stay after
`down`, like an installed package.

Without root, each node listens on a free port of its own loopback address, only the
current user can log in, there is no sudo, and the nodes share the machine's hostname,
folders and processes (`Cluster.own_hostnames`, ``own_folders`` and ``own_processes``
are False): namespaces need root.

Faults for tests are methods of `SandboxCluster`: `~SandboxCluster.freeze` /
`~SandboxCluster.thaw` (SIGSTOP / SIGCONT to a node's whole process tree) and
`~SandboxCluster.crash` (SIGKILL to its sessions, the listening daemon stays up).

The modules: `.cluster` (what any cluster offers, saved as JSON), `.nodes` (starting,
finding and stopping the daemons), `.isolation` (what each node has of its own),
`.software` (packages, users, sudo rules, keys the machine needs first), `.faults`
(signals to a node's processes), `.chaos` (faults at random, from a thread, for a soak).
"""

from .cluster import CLUSTER_FILE, Cluster
from .faults import STOP_TIMEOUT
from .nodes import (
    MAX_NODES,
    START_TIMEOUT,
    STATE_DIR_VAR,
    SandboxCluster,
    can_bind,
    default_state_dir,
    down,
    loopback_ips,
    second_sshd,
    up,
)
from .software import PASSWORD_FILE, PASSWORD_USER, SSHD, SUDO, SUDOERS_FILE, USER

__all__ = [
    "CLUSTER_FILE",
    "MAX_NODES",
    "PASSWORD_FILE",
    "PASSWORD_USER",
    "SSHD",
    "START_TIMEOUT",
    "STATE_DIR_VAR",
    "STOP_TIMEOUT",
    "SUDO",
    "SUDOERS_FILE",
    "USER",
    "Cluster",
    "SandboxCluster",
    "can_bind",
    "default_state_dir",
    "down",
    "loopback_ips",
    "second_sshd",
    "up",
]
