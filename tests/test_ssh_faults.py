"""Faults are results, not hangs: a host that cannot be reached or refuses us ends that
host only, with exit code 255 and the reason in ``errors[host]`` and ``stderr[host]``.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, List, Tuple

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from fabexec import Exec, SshExecInfo, sandbox
from fabexec.errors import AuthenticationError, ExecInfoError, UnreachableError
from fabexec.sandbox import Cluster
from tests.clusters import SPARE_IP, expected_hostname, pssh_info, ssh_config_with

UNREACHABLE = 255


def test_unreachable_host_keeps_the_other_hosts_results(any_cluster: Cluster,
                                                        tmp_path: Path) -> None:
    """``dead`` names a loopback port where nothing listens: the connection is refused."""
    config = ssh_config_with(any_cluster, tmp_path / "ssh_config", {"dead": (SPARE_IP, 1)})
    hosts = [*any_cluster.hosts[:2], "dead", *any_cluster.hosts[2:]]
    node = Exec("hostname", pssh_info(any_cluster, hosts=hosts, ssh_config=config))
    live = [h for h in hosts if h != "dead"]
    assert node.stdout == {"dead": "", **{h: expected_hostname(any_cluster, h) + "\n"
                                          for h in live}}
    assert node.exit_codes == {"dead": UNREACHABLE, **{h: 0 for h in live}}
    assert node.exit_code == UNREACHABLE
    assert list(node.errors) == ["dead"]
    assert isinstance(node.errors["dead"], UnreachableError)
    assert str(node.errors["dead"]) in node.stderr["dead"]
    assert "refused" in str(node.errors["dead"]).lower()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections (the kernel does) and never says a word."""
    with socket.socket() as listener:
        listener.bind((SPARE_IP, 0))
        listener.listen(16)
        yield listener.getsockname()[1]


# Unbounded, paramiko would wait 15 s for the banner alone: pytest-timeout catches it.
@pytest.mark.timeout(12)
def test_silent_host_ends_within_connect_timeout(cluster: Cluster, silent_port: int,
                                                 tmp_path: Path) -> None:
    config = ssh_config_with(cluster, tmp_path / "ssh_config", {"silent": (SPARE_IP, silent_port)})
    node = Exec("hostname", pssh_info(cluster, hosts=["silent", cluster.hosts[0]],
                                      ssh_config=config, connect_timeout=2))
    assert node.exit_codes == {"silent": UNREACHABLE, cluster.hosts[0]: 0}
    assert isinstance(node.errors["silent"], UnreachableError)
    assert "within 2 s" in str(node.errors["silent"])
    assert str(node.errors["silent"]) in node.stderr["silent"]


def test_refused_key_is_an_authentication_error(any_cluster: Cluster, tmp_path: Path) -> None:
    """A key the node never saw; the alias says only where the node is."""
    stranger = tmp_path / "id_stranger"
    stranger.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption()))
    stranger.chmod(0o600)
    ip, port = any_cluster.addresses[any_cluster.hosts[0]]
    bare = tmp_path / "ssh_config"
    bare.write_text(f"Host bare\n    HostName {ip}\n")
    node = Exec("hostname", SshExecInfo(
        hosts="bare", ssh_config=bare, user=any_cluster.user, port=port, pkey=stranger,
        known_hosts=any_cluster.known_hosts, collect_output=True, hide_output=True))
    assert node.exit_codes == {"bare": UNREACHABLE}
    assert isinstance(node.errors["bare"], AuthenticationError)
    assert str(node.errors["bare"]) in node.stderr["bare"]
    assert node.stdout == {"bare": ""}


# --------------------------------------------------------------------------- bad local inputs
# A key or known_hosts that cannot be used is the caller's mistake: one typed error naming the
# keyword, raised before any host is dialled, not a per-host failure after every host was tried.

@pytest.fixture
def probe(cluster: Cluster, tmp_path: Path) -> Iterator[Tuple[Path, socket.socket]]:
    """An ssh_config whose alias ``probe`` leads to a socket that counts who dialled it."""
    with socket.socket() as listener:
        listener.bind((SPARE_IP, 0))
        listener.listen(16)
        listener.setblocking(False)
        yield (ssh_config_with(cluster, tmp_path / "ssh_config",
                               {"probe": listener.getsockname()}), listener)


def dialled(listener: socket.socket) -> bool:
    try:
        listener.accept()[0].close()
    except BlockingIOError:
        return False
    return True


def _public_key(tmp_path: Path) -> Path:
    path = tmp_path / "id.pub"
    path.write_bytes(Ed25519PrivateKey.generate().public_key().public_bytes(
        Encoding.OpenSSH, PublicFormat.OpenSSH))
    return path


def _garbage(tmp_path: Path) -> Path:
    path = tmp_path / "garbage"
    path.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nnot a key\n")
    return path


def _encrypted(tmp_path: Path) -> Path:
    path = tmp_path / "id_encrypted"
    path.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        Encoding.PEM, PrivateFormat.OpenSSH, BestAvailableEncryption(b"secret")))
    return path


@pytest.mark.parametrize("make", [lambda d: d / "missing", lambda d: d, _public_key, _garbage,
                                  _encrypted],
                         ids=["missing", "directory", "public", "garbage", "no-passphrase"])
def test_a_key_that_cannot_be_used_fails_before_any_host_is_dialled(
        cluster: Cluster, probe: Tuple[Path, socket.socket], tmp_path: Path, make: Any) -> None:
    config, listener = probe
    key = make(tmp_path)
    with pytest.raises(ExecInfoError) as error:
        Exec("hostname", pssh_info(cluster, hosts=["probe", cluster.hosts[0]], ssh_config=config,
                                   pkey=key, connect_timeout=1))
    assert error.value.field == "pkey" and str(key) in str(error.value)
    assert not dialled(listener)


@pytest.mark.timeout(30)  # before: /dev/full was read until memory ran out
@pytest.mark.parametrize("known_hosts", ["directory", "/dev/full"])
def test_a_known_hosts_that_is_no_file_fails_before_any_host_is_dialled(
        cluster: Cluster, probe: Tuple[Path, socket.socket], tmp_path: Path,
        known_hosts: str) -> None:
    config, listener = probe
    path = tmp_path if known_hosts == "directory" else Path(known_hosts)
    with pytest.raises(ExecInfoError) as error:
        Exec("hostname", pssh_info(cluster, hosts=["probe", cluster.hosts[0]], ssh_config=config,
                                   known_hosts=path, connect_timeout=1))
    assert error.value.field == "known_hosts" and str(path) in str(error.value)
    assert not dialled(listener)


def test_an_encrypted_key_logs_in_with_pkey_passphrase(cluster: Cluster, tmp_path: Path) -> None:
    """The cluster's own key, encrypted; the alias says only where the node is."""
    key = serialization.load_ssh_private_key(cluster.key.read_bytes(), None)
    encrypted = tmp_path / "id_encrypted"
    encrypted.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH,
                                            BestAvailableEncryption(b"s3cret phrase")))
    encrypted.chmod(0o600)
    ip, port = cluster.addresses[cluster.hosts[0]]
    bare = tmp_path / "ssh_config"
    bare.write_text(f"Host bare\n    HostName {ip}\n")
    info = SshExecInfo(hosts="bare", ssh_config=bare, user=cluster.user, port=port,
                       pkey=encrypted, pkey_passphrase="s3cret phrase",
                       known_hosts=cluster.known_hosts, collect_output=True, hide_output=True)
    assert "s3cret" not in repr(info)
    node = Exec("hostname", info)
    assert (node.errors, node.stdout) == ({}, {"bare": expected_hostname(cluster,
                                                                          cluster.hosts[0]) + "\n"})
    with pytest.raises(ExecInfoError) as error:
        Exec("hostname", info.mod(pkey_passphrase="not it"))
    assert error.value.field == "pkey_passphrase"


# --------------------------------------------------------------------------- paramiko's own logs

SILENT_HOSTS = """
import socket, sys
from pathlib import Path
from fabexec import Exec, PsshExecInfo
{configure}
listener = socket.socket()
listener.bind(({ip!r}, 0))
listener.listen(64)
port = listener.getsockname()[1]
config = Path(sys.argv[1])
config.write_text("".join(f"Host silent{{k}}\\n    HostName {ip}\\n    Port {{port}}\\n"
                          for k in range(8)))
node = Exec("true", PsshExecInfo(hosts=[f"silent{{k}}" for k in range(8)], ssh_config=config,
                                 known_hosts=Path(sys.argv[2]), connect_timeout=1,
                                 hide_output=True))
print(sorted({{type(error).__name__ for error in node.errors.values()}}), len(node.errors))
"""


def run_silent_hosts(tmp_path: Path, configure: str = "") -> subprocess.CompletedProcess:
    """A child interpreter runs on 8 hosts that accept TCP and never speak SSH."""
    script = SILENT_HOSTS.format(configure=configure, ip=SPARE_IP)
    return subprocess.run([sys.executable, "-c", script, str(tmp_path / "ssh_config"),
                           str(tmp_path / "known_hosts")], capture_output=True, text=True,
                          timeout=60, check=False, cwd=Path(__file__).parent.parent)


def test_paramikos_tracebacks_stay_off_stderr(tmp_path: Path) -> None:
    child = run_silent_hosts(tmp_path)
    assert child.stdout == "['UnreachableError'] 8\n", child.stderr
    assert child.stderr == ""


def test_paramikos_logs_reach_a_user_who_configured_logging(tmp_path: Path) -> None:
    child = run_silent_hosts(tmp_path, "import logging; logging.basicConfig(level=logging.DEBUG)")
    assert child.stdout == "['UnreachableError'] 8\n", child.stderr
    assert "paramiko.transport" in child.stderr


def test_a_host_name_that_does_not_resolve_ends_with_255_and_keeps_the_others(
        cluster: Cluster) -> None:
    """``.invalid`` is reserved never to resolve (RFC 6761): no DNS answer is waited for."""
    hosts = [cluster.hosts[0], "no-such-node.invalid"]
    node = Exec("hostname", pssh_info(cluster, hosts=hosts, connect_timeout=5))
    assert node.exit_codes == {cluster.hosts[0]: 0, "no-such-node.invalid": UNREACHABLE}
    assert isinstance(node.errors["no-such-node.invalid"], UnreachableError)
    assert "no-such-node.invalid" in str(node.errors["no-such-node.invalid"])
    assert node.stdout[cluster.hosts[0]] == expected_hostname(cluster, cluster.hosts[0]) + "\n"


@pytest.mark.timeout(60)
def test_host_silent_while_authenticating_is_unreachable_not_refused(cluster: Cluster,
                                                                     tmp_path: Path) -> None:
    """A node's second sshd whose key look-up hangs (a frozen host looks the same once
    the key exchange is done): connect_timeout ends it as UnreachableError, not as a
    refused key. paramiko reports the closed transport as an authentication failure."""
    stall = "Match all\n    AuthorizedKeysCommand /bin/sleep 5\n"  # Match: overrides the node's
    with sandbox.second_sshd(cluster, cluster.hosts[0], stall) as address:
        config = ssh_config_with(cluster, tmp_path / "ssh_config", {"stalls": address})
        node = Exec("hostname", pssh_info(cluster, hosts=["stalls", cluster.hosts[1]],
                                          ssh_config=config, connect_timeout=2))
    assert node.exit_codes == {"stalls": UNREACHABLE, cluster.hosts[1]: 0}
    assert isinstance(node.errors["stalls"], UnreachableError)
    assert "within 2 s" in str(node.errors["stalls"])


@contextmanager
def answering_late(address: Tuple[str, int], seconds: float) -> Iterator[Tuple[str, int]]:
    """A loopback port passing one connection to ``address``, holding back what the
    server says after its banner for ``seconds``: a node too loaded to go on."""
    listener = socket.create_server(("127.0.0.1", 0))
    held = threading.Event()
    sockets: List[socket.socket] = [listener]

    def pump(source: socket.socket, sink: socket.socket, hold: bool) -> None:
        try:
            if hold:  # the banner line as it comes, then nothing for a while
                byte = b""
                while byte != b"\n":
                    byte = source.recv(1)
                    if not byte:
                        return
                    sink.sendall(byte)
                held.wait(seconds)
            while True:
                chunk = source.recv(65536)
                if not chunk:
                    break
                sink.sendall(chunk)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def relay() -> None:
        client, _ = listener.accept()
        server = socket.create_connection(address)
        sockets.extend((client, server))
        for source, sink, hold in ((client, server, False), (server, client, True)):
            threading.Thread(target=pump, args=(source, sink, hold), daemon=True).start()

    threading.Thread(target=relay, daemon=True).start()
    try:
        yield listener.getsockname()[:2]
    finally:
        held.set()
        for sock in sockets:
            sock.close()


def test_a_host_slow_to_start_its_key_exchange_has_the_whole_connect_timeout(
        cluster: Cluster, tmp_path: Path) -> None:
    """paramiko gives the key exchange 15 s of its own, whatever the caller's timeouts: a
    node silent for 16 s after its banner (as under a thousand handshakes at once on a
    loaded machine) was lost to a bare EOFError inside a 40 s connect_timeout."""
    host = cluster.hosts[0]
    with answering_late(cluster.addresses[host], 16) as address:
        config = ssh_config_with(cluster, tmp_path / "ssh_config", {"late": address})
        node = Exec("hostname", pssh_info(cluster, hosts=["late", cluster.hosts[1]],
                                          ssh_config=config, connect_timeout=40))
    assert node.exit_codes == {"late": 0, cluster.hosts[1]: 0}, node.errors
    assert node.stdout["late"] == expected_hostname(cluster, host) + "\n"
