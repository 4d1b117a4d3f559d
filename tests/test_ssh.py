"""SSH on one host: what the caller gives (env, cwd, command, stdin) reaches the remote
command exactly, and what it prints comes back exactly.

The core behaviours run on the sandbox and on the docker cluster (``any_cluster``).
"""

from __future__ import annotations

import hashlib
import io
import os
import shlex
import signal
import uuid
from pathlib import Path
from typing import List, Tuple

import pytest
from invoke import Responder

from fabexec import Exec, LocalExecInfo, SshExecInfo
from fabexec.errors import HostfileError
from fabexec.sandbox import Cluster
from tests.clusters import (
    expected_hostname,
    openssh,
    random_binary_command,
    remote_sha256,
    ssh_info,
)

#: Values a careless quoting step would change: blanks, both quotes, expansions,
#: backslashes, newlines, globs, shell operators, a leading dash, non-ASCII, nothing.
AWKWARD = [
    "two  spaces",
    "it's \"quoted\"",
    "$HOME ${PATH} $(echo no) `echo no` $((1+1))",
    "back\\slash \\n \\\\ \\",
    "line one\nline two\n",
    "* ? [a-z] ~",
    "; exit 3 | cat & <in >out",
    "-n",
    "héllo ✓",
    "",
]



def test_ssh_runs_on_the_first_host_only(any_cluster: Cluster) -> None:
    second, third = any_cluster.hosts[1:3]
    node = Exec("hostname", ssh_info(any_cluster, [second, third]))
    assert node.hosts == [second]
    assert node.stdout == {second: expected_hostname(any_cluster, second) + "\n"}


def test_env_values_reach_the_remote_command_exactly(any_cluster: Cluster) -> None:
    env = {f"FABEXEC_V{i}": value for i, value in enumerate(AWKWARD)}
    host = any_cluster.hosts[0]
    node = Exec(f"printenv -0 {' '.join(env)}", ssh_info(any_cluster, host, env=env))
    assert node.exit_code == 0, node.stderr
    assert node.stdout[host].split("\0")[:-1] == AWKWARD


def test_command_text_reaches_the_remote_shell_exactly(any_cluster: Cluster) -> None:
    host = any_cluster.hosts[0]
    node = Exec(shlex.join(["printf", "%s\\0", *AWKWARD]), ssh_info(any_cluster, host))
    assert node.exit_code == 0, node.stderr
    assert node.stdout[host].split("\0")[:-1] == AWKWARD


def test_command_runs_in_the_remote_cwd(any_cluster: Cluster) -> None:
    host = any_cluster.hosts[0]
    folder = f"/tmp/fabexec cwd 'it's' $x {uuid.uuid4().hex}"
    made = Exec(shlex.join(["mkdir", "--", folder]), ssh_info(any_cluster, host))
    assert made.exit_code == 0, made.stderr
    try:
        node = Exec("pwd", ssh_info(any_cluster, host, cwd=folder))
        assert node.stdout == {host: folder + "\n"}
    finally:
        Exec(shlex.join(["rm", "-rf", "--", folder]), ssh_info(any_cluster, host))


def test_missing_remote_cwd_fails_with_a_message_instead_of_running(any_cluster: Cluster
                                                                    ) -> None:
    host = any_cluster.hosts[0]
    folder = f"/nonexistent-{uuid.uuid4().hex}"
    node = Exec("echo ran", ssh_info(any_cluster, host, cwd=folder))
    assert node.exit_code != 0
    assert node.stdout[host] == ""
    assert folder in node.stderr[host]


def test_stdin_bytes_reach_the_remote_command_exactly(any_cluster: Cluster) -> None:
    data = os.urandom(1 << 20)
    host = any_cluster.hosts[0]
    node = Exec("sha256sum", ssh_info(any_cluster, host, stdin=data))
    assert node.stdout[host].split()[0] == hashlib.sha256(data).hexdigest()


def test_stdin_file_is_read_to_its_end_by_the_remote_command(any_cluster: Cluster) -> None:
    text = "".join(f"line {i}\n" for i in range(10_000))
    host = any_cluster.hosts[0]
    node = Exec("cat", ssh_info(any_cluster, host, stdin=io.BytesIO(text.encode())))
    assert node.stdout == {host: text}


def test_without_stdin_a_remote_reader_gets_eof_at_once(any_cluster: Cluster) -> None:
    host = any_cluster.hosts[0]
    node = Exec("cat; echo after-eof", ssh_info(any_cluster, host, timeout=30))
    assert (node.exit_code, node.errors) == (0, {})
    assert node.stdout == {host: "after-eof\n"}


def test_a_responder_answering_after_stdin_was_closed_is_ignored(cluster: Cluster) -> None:
    host = cluster.hosts[0]
    answer = Responder(pattern=r"more\?", response="yes\n")
    node = Exec("cat >/dev/null; echo 'more?'",
                ssh_info(cluster, host, stdin=b"data", watchers=[answer], timeout=30))
    assert (node.exit_code, node.stdout[host]) == (0, "more?\n")


def test_command_ended_by_a_signal_exits_128_plus_the_signal_as_locally(any_cluster: Cluster
                                                                       ) -> None:
    """sshd reports such an end as "exit-signal", which paramiko drops: not a lost connection."""
    host = any_cluster.hosts[0]
    local = Exec("kill -KILL $$", LocalExecInfo(hide_output=True))
    node = Exec("kill -KILL $$", ssh_info(any_cluster, host))
    assert node.errors == {}
    assert node.exit_codes == {host: 128 + signal.SIGKILL} == {host: local.exit_code}


def test_one_hosts_pipe_file_is_byte_exact(any_cluster: Cluster, tmp_path: Path) -> None:
    host = any_cluster.hosts[0]
    node = Exec(random_binary_command(1 << 20), ssh_info(
        any_cluster, host, pipe_stdout=tmp_path / "out.bin", pipe_stderr=tmp_path / "err",
        collect_output=False))
    data = (tmp_path / "out.bin").read_bytes()
    assert node.exit_code == 0
    assert len(data) == 1 << 20
    assert hashlib.sha256(data).hexdigest() == remote_sha256((tmp_path / "err").read_text())


def test_one_hosts_terminal_output_is_not_prefixed(any_cluster: Cluster,
                                                   capfd: pytest.CaptureFixture) -> None:
    capfd.readouterr()
    Exec("echo hello; echo oops >&2", ssh_info(any_cluster, any_cluster.hosts[0],
                                               hide_output=False, collect_output=False))
    captured = capfd.readouterr()
    assert (captured.out, captured.err) == ("hello\n", "oops\n")


def test_user_port_and_pkey_given_in_exec_info_reach_the_node(any_cluster: Cluster,
                                                               tmp_path: Path) -> None:
    """An alias that only says where the node is: the rest comes from ExecInfo."""
    host = any_cluster.hosts[-1]
    ip, port = any_cluster.addresses[host]
    bare = tmp_path / "ssh_config"
    bare.write_text(f"Host bare\n    HostName {ip}\n")
    node = Exec("id -un; hostname", SshExecInfo(
        hosts="bare", ssh_config=bare, user=any_cluster.user, port=port, pkey=any_cluster.key,
        known_hosts=any_cluster.known_hosts, collect_output=True, hide_output=True))
    assert node.errors == {}
    assert node.stdout == {"bare": f"{any_cluster.user}\n{expected_hostname(any_cluster, host)}\n"}


def test_localhost_alone_runs_locally_without_ssh() -> None:
    node = Exec('echo "$PPID ${SSH_CONNECTION:-no-ssh}"',
                SshExecInfo(hosts="localhost", collect_output=True, hide_output=True))
    assert node.stdout == {"localhost": f"{os.getpid()} no-ssh\n"}


@pytest.mark.parametrize("name", ["node1;reboot", "-oProxyCommand=touch_x", "node 1", "nöde",
                                  "node1/../x", "$(reboot)"])
def test_invalid_host_name_is_refused_before_connecting(name: str) -> None:
    with pytest.raises(HostfileError):
        Exec("true", SshExecInfo(hosts=name, connect_timeout=1))


# --------------------------------------------------------------------------- sudo


def test_sudo_without_a_password_runs_as_root(any_cluster: Cluster) -> None:
    if not any_cluster.sudo:
        pytest.skip(f"{any_cluster.user} has no sudo on this cluster")
    host = any_cluster.hosts[0]
    node = Exec("whoami", ssh_info(any_cluster, host, sudo=True))
    assert node.stdout == {host: "root\n"}, node.stderr


@pytest.fixture
def password_user(cluster: Cluster) -> str:
    """The sandbox user whose sudo asks for a password (only a root sandbox has one)."""
    if cluster.password_user is None or cluster.sudo_password is None:
        pytest.skip("this sandbox has no user whose sudo asks for a password (not root)")
    return cluster.password_user


def test_sudo_with_a_password_runs_as_root(cluster: Cluster, password_user: str) -> None:
    host = cluster.hosts[0]
    node = Exec("whoami", ssh_info(cluster, host, user=password_user, sudo=True,
                                   sudo_password=cluster.sudo_password))
    assert (node.exit_code, node.stdout) == (0, {host: "root\n"}), node.stderr


def sudo_as_password_user(cluster: Cluster, user: str, password: str, tmp_path: Path,
                          capfd: pytest.CaptureFixture) -> Tuple[Exec, List[str]]:
    """``sudo id -un`` as ``user``, shown, collected and piped; and every text it left."""
    capfd.readouterr()
    node = Exec("id -un", ssh_info(
        cluster, cluster.hosts[0], user=user, sudo=True, sudo_password=password,
        hide_output=False, pipe_stdout=tmp_path / "out", pipe_stderr=tmp_path / "err"))
    terminal = capfd.readouterr()
    texts = [terminal.out, terminal.err, (tmp_path / "out").read_text(),
             (tmp_path / "err").read_text(), *node.stdout.values(), *node.stderr.values(),
             *map(repr, node.errors.values()), node.cmd, repr(node)]
    return node, texts


def test_sudo_password_never_appears_in_output_files_or_errors(
        cluster: Cluster, password_user: str, tmp_path: Path,
        capfd: pytest.CaptureFixture) -> None:
    password = cluster.sudo_password
    assert password is not None
    node, texts = sudo_as_password_user(cluster, password_user, password, tmp_path, capfd)
    assert node.stdout == {cluster.hosts[0]: "root\n"}
    assert [text for text in texts if password in text] == []


def test_wrong_sudo_password_fails_cleanly_without_revealing_it(
        cluster: Cluster, password_user: str, tmp_path: Path,
        capfd: pytest.CaptureFixture) -> None:
    password = f"wrong-{uuid.uuid4().hex}"
    node, texts = sudo_as_password_user(cluster, password_user, password, tmp_path, capfd)
    host = cluster.hosts[0]
    assert node.exit_code != 0
    assert node.stdout == {host: ""}
    assert "incorrect password" in node.stderr[host]
    assert [text for text in texts if password in text] == []


def test_sudoenv_is_seen_by_its_effect_on_the_login_environment(cluster: Cluster) -> None:
    """With sudoenv (``sudo -E``) the command still sees the login's SSH_CONNECTION;
    without, sudo resets the environment and it is gone."""
    if not cluster.sudo:
        pytest.skip(f"{cluster.user} has no sudo on this cluster")
    host = cluster.hosts[0]
    probe = 'echo "$(id -u) ${SSH_CONNECTION:+kept}"'
    kept = Exec(probe, ssh_info(cluster, host, sudo=True))
    reset = Exec(probe, ssh_info(cluster, host, sudo=True, sudoenv=False))
    assert (kept.stdout[host], reset.stdout[host]) == ("0 kept\n", "0 \n"), (kept.stderr,
                                                                            reset.stderr)


def test_cwd_tilde_is_the_hosts_home_and_dash_a_folder_named_dash(cluster: Cluster) -> None:
    host = cluster.hosts[0]
    assert openssh(cluster, host, "mkdir -p ~/-/inner").returncode == 0
    try:
        home = Exec("pwd", ssh_info(cluster, host, cwd="~"))
        dash = Exec("pwd", ssh_info(cluster, host, cwd="-"))
        inner = Exec("pwd", ssh_info(cluster, host, cwd="~/-/inner"))
        expected = openssh(cluster, host, "echo $HOME").stdout
        assert home.stdout[host] == expected
        assert dash.stdout[host] == expected.rstrip("\n") + "/-\n"
        assert inner.stdout[host] == expected.rstrip("\n") + "/-/inner\n"
    finally:
        openssh(cluster, host, "rm -rf ~/-")
