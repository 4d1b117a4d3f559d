"""What a sandbox node has of its own, and the script that gives it that before sshd starts.

As root, where the kernel lets us (not every container does), each node runs in new UTS
and mount namespaces and, where it can, a new PID namespace:

- its hostname, and an /etc/hosts that names every node;
- its own /tmp, /var/tmp, /dev/shm and login users' homes: folders under the node's
  state folder (``nodes/<host>/tmp`` ...; /dev/shm a tmpfs), bound over the machine's in
  the node's mount namespace only, made afresh by ``up`` and removed by ``down``. A file
  one node writes there is neither on another node nor on this machine, so a test that
  looks at each node looks at a different place;
- its own processes: sshd is the first process of the node's PID namespace, which has a
  /proc of its own, so ``ps -e`` on a node lists that node only. This machine still sees
  every node's processes under its own PIDs, which is how `.faults` finds them.

The rest of the filesystem is the machine's, as on a cluster whose nodes boot one image:
programs, libraries, and root's home, made traversable in the nodes (see `_root_home`).
Where the state folder itself lies under a folder a node gets of its own (``/tmp/...``),
it is bound back at its path inside the node, since sshd reads its files there; the
node's /tmp then holds that path's folders, closed to its users. Root on a node (sudo)
still reaches the state folder under /mnt/state, and every node's folders there: nodes are
kept apart so that tests look at each one, not to contain an adversary.

Without root, or where namespaces are refused, nodes have none of this, and the
`~fabexec.sandbox.Cluster` flags say so (``own_hostnames``, ``own_folders``,
``own_processes``): tests that need it skip with that reason.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence, Tuple

from .software import run

#: The per-node folders bound over the machine's: (name under the node's folder, path).
FOLDERS = (("tmp", "/tmp"), ("var-tmp", "/var/tmp"))
#: The login users' homes, one folder each under this one in the node's folder.
HOMES = "home"
#: Where sshd's PID as this machine sees it is written; sshd's own PID file holds its PID
#: in the node's PID namespace (1).
HOST_PID_FILE = "host.pid"
START_SCRIPT = "start-node.sh"
SKELETON = Path("/etc/skel")


@dataclass(frozen=True)
class Isolation:
    """What this machine lets a node have of its own (see the module's docstring)."""

    mounts: bool = False  # hostname, /etc/hosts, folders
    processes: bool = False  # PID namespace and /proc

    @classmethod
    def allowed(cls, as_root: bool) -> Isolation:
        """Tried here, with the namespaces and mounts a node's start uses."""
        if not as_root:
            return cls()
        mounts = ("unshare", "--uts", "--mount", "sh", "-c",
                  "mount --bind /etc/hosts /etc/hosts && mount -t tmpfs tmpfs /mnt")
        if run(*mounts, check=False).returncode != 0:
            return cls()
        processes = ("unshare", "--uts", "--mount", "--pid", "--fork", "sh", "-c",
                     "mount -t proc proc /proc")
        return cls(mounts=True, processes=run(*processes, check=False).returncode == 0)

    def launcher(self) -> List[str]:
        """The command line prefix of the shell that starts every node: a mount namespace
        of its own, which `launch_setup` prepares once and each node's copies."""
        return ["unshare", "--mount"] if self.mounts else []

    def unshare(self) -> List[str]:
        """The ``unshare`` command line a node's start script runs under."""
        argv = ["unshare", "--uts", "--mount"]
        return argv + ["--pid", "--fork"] if self.processes else argv


@dataclass(frozen=True)
class Homes:
    """The login users' homes as a new account gets them: /etc/skel's folders and files,
    read once per `up` and written into every node's folder."""

    users: Sequence[pwd.struct_passwd]
    folders: Sequence[str]
    files: Sequence[Tuple[str, int, bytes]]  # relative path, mode, content

    @classmethod
    def of(cls, users: Sequence[str]) -> Homes:
        folders, files = [], []
        for top, dirs, names in os.walk(SKELETON):
            base = os.path.relpath(top, SKELETON)
            folders += [os.path.normpath(os.path.join(base, d)) for d in dirs]
            for name in names:
                path = os.path.join(top, name)
                if os.path.isfile(path) and not os.path.islink(path):
                    files.append((os.path.normpath(os.path.join(base, name)),
                                  os.stat(path).st_mode & 0o7777, Path(path).read_bytes()))
        return cls([pwd.getpwnam(user) for user in users], folders, files)

    def write(self, node_dir: Path) -> None:
        for user in self.users:
            home = node_dir / HOMES / user.pw_name
            home.mkdir(parents=True)
            for folder in self.folders:
                (home / folder).mkdir()
                os.chown(home / folder, user.pw_uid, user.pw_gid)
            for name, mode, data in self.files:
                fd = os.open(home / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
                with os.fdopen(fd, "wb") as f:
                    os.fchown(fd, user.pw_uid, user.pw_gid)
                    f.write(data)
            os.chown(home, user.pw_uid, user.pw_gid)
            home.chmod(Path(user.pw_dir).stat().st_mode & 0o7777)


def fresh_folders(node_dir: Path, homes: Homes) -> None:
    """The node's own folders, empty, and its users' homes as new accounts'."""
    remove_folders(node_dir)
    for name, _ in FOLDERS:
        (node_dir / name).mkdir()
        (node_dir / name).chmod(0o1777)  # as /tmp: anyone writes, only owners delete
    homes.write(node_dir)


def remove_folders(node_dir: Path) -> None:
    """What the node wrote in its own folders is gone (its processes must be gone first)."""
    for name in [*(name for name, _ in FOLDERS), HOMES]:
        shutil.rmtree(node_dir / name, ignore_errors=True)
    (node_dir / HOST_PID_FILE).unlink(missing_ok=True)


def launch_setup(state: Path) -> List[str]:
    """Shell run once in the launcher's mount namespace, before any node starts.

    Each node's mount namespace starts as a copy of this one, so what every node sees
    alike is mounted here once rather than once per node: a tmpfs on /mnt holding views
    of the state folder (``/mnt/state``, where a node finds its own folders even once
    its /tmp covers the state folder) and of root's home (see `_root_home`).
    """
    return [
        "mount -t tmpfs -o mode=0755 tmpfs /mnt",
        "mkdir /mnt/state",
        f"mount --bind {shlex.quote(str(state))} /mnt/state",
        *_root_home(Path.home()),
    ]


def start_script(state: Path, isolation: Isolation, homes: Homes) -> str:
    """The shell a node starts with, inside its new namespaces, before it execs sshd.

    Arguments: the node's name, then sshd's command line. sshd keeps the shell's PID.
    """
    q = shlex.quote
    lines = [
        "# Written by fabexec.sandbox: gives a node what it has of its own, then becomes",
        "# its sshd. $1: the node's name; the rest: sshd's command line.",
        "set -eu",
        'host=$1; shift',
        'node=/mnt/state/nodes/"$host"',
    ]
    if isolation.processes:
        lines += [
            "# This machine's /proc still shows our PID as the machine sees it.",
            f'read -r pid _ </proc/self/stat; echo "$pid" >"$node/{HOST_PID_FILE}"',
            "mount -t proc proc /proc",
        ]
    lines += [
        'hostname "$host"',
        "mount --bind /mnt/state/hosts /etc/hosts",
        *(f'mount --bind "$node/{name}" {path}' for name, path in FOLDERS),
        "mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm",
        *(f'mount --bind "$node/{HOMES}/{user.pw_name}" {q(user.pw_dir)}'
          for user in homes.users),
        "# sshd reads its files in the state folder: back at its path if now covered.",
        f'[ -e {q(str(state))}/nodes/"$host"/sshd_config ] || {{ mkdir -p {q(str(state))}; '
        f"mount --bind /mnt/state {q(str(state))}; }}",
        'exec "$@"',
    ]
    return "\n".join(lines) + "\n"


def _root_home(home: Path) -> List[str]:
    """Shell that makes ``home`` traversable (0711) in the node, as a shared home is.

    Root's home is 0700, so the nodes' users could not run what is installed under it:
    Hydra (pip's mpich) starts ``hydra_pmi_proxy`` on every node by its path here. In
    the node's own namespace only, a 0711 tmpfs covers the home and each entry is bound
    back from a view kept under /mnt, in the launcher's mount namespace (the nodes' start
    as its copies); nothing changes on the machine. Nothing when the home is traversable
    already.
    """
    if home.stat().st_mode & 0o001:
        return []
    view, quoted = "/mnt/home", shlex.quote(str(home))
    return [
        f"mkdir {view}",
        f"mount --rbind {quoted} {view}",
        f"mount -t tmpfs -o mode=0711 tmpfs {quoted}",
        f"for e in {view}/.[!.]* {view}/*; do",
        '    [ -e "$e" ] || continue',
        f'    n={quoted}/"${{e##*/}}"',
        '    if [ -d "$e" ]; then mkdir "$n"; else : >"$n"; fi',
        '    mount --rbind "$e" "$n"',
        "done",
    ]
