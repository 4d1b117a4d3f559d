"""What the SSH tests share: ExecInfo for a cluster, fake hosts, and independent witnesses.

Checks of what happened on a node go through the OpenSSH client, never through fabexec,
so that a test cannot pass because fabexec fooled itself. The ``any_cluster`` fixture
lives in tests/fixtures_clusters.py.
"""

from __future__ import annotations

import random
import re
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar, Union

from fabexec import PsshExecInfo, SshExecInfo
from fabexec.sandbox import Cluster

#: A loopback address the sandbox never gives a node (see `fabexec.sandbox.loopback_ips`):
#: the tests' own fake hosts live there.
SPARE_IP = "127.0.2.250"

T = TypeVar("T")


def pssh_info(cluster: Cluster, **changes: Any) -> PsshExecInfo:
    """All of ``cluster`` (or ``hosts``) through its ssh_config; output collected, not shown."""
    settings: Dict[str, Any] = dict(ssh_config=cluster.ssh_config, collect_output=True,
                                    hide_output=True)
    if "hosts" not in changes:
        settings["hostfile"] = cluster.hostfile
    settings.update(changes)
    return PsshExecInfo(**settings)


def ssh_info(cluster: Cluster, host: Union[str, List[str]], **changes: Any) -> SshExecInfo:
    """One node of ``cluster`` (the first of a list), like `pssh_info`."""
    settings: Dict[str, Any] = dict(hosts=host, ssh_config=cluster.ssh_config,
                                    collect_output=True, hide_output=True)
    settings.update(changes)
    return SshExecInfo(**settings)


def expected_hostname(cluster: Cluster, host: str) -> str:
    """What ``hostname`` answers on ``host`` (the machine's name where nodes cannot have theirs)."""
    return host if cluster.own_hostnames else socket.gethostname()


def host_block(cluster: Cluster, alias: str, address: Tuple[str, int]) -> str:
    """An ssh_config ``Host`` entry that reaches ``address`` as the cluster's user and key."""
    ip, port = address
    return (f"Host {alias}\n"
            f"    HostName {ip}\n"
            f"    Port {port}\n"
            f"    User {cluster.user}\n"
            f"    IdentityFile {cluster.key}\n"
            "    IdentitiesOnly yes\n"
            f"    UserKnownHostsFile {cluster.known_hosts}\n")


def ssh_config_with(cluster: Cluster, path: Path, extra: Dict[str, Tuple[str, int]]) -> Path:
    """A copy of the cluster's ssh_config at ``path``, plus one entry per alias in ``extra``.

    The new entries come first: OpenSSH takes the first value it finds for a setting.
    """
    blocks = [host_block(cluster, alias, address) for alias, address in extra.items()]
    path.write_text("\n".join([*blocks, cluster.ssh_config.read_text()]))
    return path


def openssh(cluster: Cluster, host: str, command: str) -> subprocess.CompletedProcess:
    """Run ``command`` on ``host`` with the OpenSSH client: a witness independent of fabexec."""
    return subprocess.run(
        ["ssh", "-F", str(cluster.ssh_config), "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
         host, command],
        capture_output=True, text=True, timeout=60, check=False,
    )


def on_every_host(cluster: Cluster, fn: Callable[[str], T]) -> Dict[str, T]:
    """``fn(host)`` for every node at once (an OpenSSH login costs ~0.2 s)."""
    with ThreadPoolExecutor(len(cluster.hosts)) as pool:
        return dict(zip(cluster.hosts, pool.map(fn, cluster.hosts)))


def unique_seconds() -> str:
    """A ``sleep`` duration that no other process on any node is using."""
    return f"900.{random.randrange(10**8, 10**9)}"


def escaping_tree(seconds: str) -> str:
    """A script whose ``sleep {seconds}N`` children leave it every usual way, then ``started``.

    A background child (same process group), a ``nohup`` child, a ``setsid`` child (its
    own session), a double-forked ``setsid`` daemon (parent gone) and a foreground sleep
    that keeps the command running.
    """
    return "\n".join([
        f"sleep {seconds}1 &",
        f"nohup sleep {seconds}2 >/dev/null 2>&1 &",
        f"setsid sleep {seconds}3 </dev/null >/dev/null 2>&1 &",
        f"( setsid sleep {seconds}4 </dev/null >/dev/null 2>&1 & )",
        "echo started",
        f"sleep {seconds}5",
    ])


TREE_SIZE = 5  # sleeps in `escaping_tree`


def sleeping(cluster: Cluster, host: str, seconds: str) -> List[str]:
    """The ``sleep {seconds}...`` processes alive on ``host``, as seen by ``pgrep`` over SSH.

    Anchored at ``^sleep``, so that the shell running ``pgrep`` (whose command line holds
    the pattern too) is not counted.
    """
    pattern = "^sleep " + re.escape(seconds)
    done = openssh(cluster, host, f"pgrep -af '{pattern}'; test $? -le 1")
    assert done.returncode == 0, f"pgrep failed on {host}: {done.stderr}"
    return done.stdout.splitlines()


def end_sleeping(cluster: Cluster, seconds: str) -> None:
    """Kill, by PID, the ``sleep {seconds}...`` processes a failed test left on any node.

    With sudo where the cluster has it, since a command run with ``sudo=True``
    leaves root's processes.
    """
    kill = "sudo -n kill -KILL" if cluster.sudo else "kill -KILL"

    def end(host: str) -> None:
        pids = [line.split()[0] for line in sleeping(cluster, host, seconds)]
        if pids:
            openssh(cluster, host, f"{kill} {' '.join(pids)}")

    on_every_host(cluster, end)


def eventually(condition: Callable[[], bool], seconds: float = 30, step: float = 0.2) -> bool:
    """Whether ``condition`` became true within ``seconds`` (polled, bounded in count)."""
    deadline = time.monotonic() + seconds
    for _ in range(int(seconds / step) + 1):
        if condition():
            return True
        if time.monotonic() > deadline:
            break
        time.sleep(step)
    return condition()


def random_binary_command(size: int) -> str:
    """Writes ``size`` random bytes to stdout and their ``sha256sum`` to stderr.

    Random bytes hold every byte value, CR/LF pairs, invalid UTF-8 and no final
    newline: whatever a decoding or line-splitting step would change. The hash is
    computed on the node, from a temporary file, so nothing needs python there.
    """
    return (f'f=$(mktemp) && head -c {size} /dev/urandom >"$f" && sha256sum <"$f" >&2 '
            '&& cat "$f"; status=$?; rm -f "$f"; exit $status')


def remote_sha256(stderr_text: str) -> Optional[str]:
    """The hash that `random_binary_command` printed, None if it printed none."""
    found = re.fullmatch(r"([0-9a-f]{64})\s+-\s*", stderr_text)
    return found[1] if found else None


def only_on(cluster: Cluster, host: str) -> str:
    """A shell test that is true on ``host`` alone.

    By its name where nodes have their own; else by the address its sshd answered on
    (each node has its own loopback address).
    """
    if cluster.own_hostnames:
        return f'[ "$(hostname)" = {host} ]'
    return f'( set -- $SSH_CONNECTION; [ "$3" = {cluster.addresses[host][0]} ] )'
