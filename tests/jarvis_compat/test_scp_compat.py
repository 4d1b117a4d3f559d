"""Issue 12 item 7: `Scp` and `Pscp` as jarvis-util code reads them (``stdout``,
``stderr``, ``exit_code``, ``wait()``), ``~`` and globs in source paths expanded
here as a shell expands them for ``rsync``, and modification times kept (``rsync
-a``) over SFTP and through the shell of a host without SFTP, both ways.

What landed on each node is checked on that node through the OpenSSH client.
"""

from __future__ import annotations

import os
import shlex
import uuid
from pathlib import Path
from typing import Dict, Iterator, Tuple

import pytest

from fabexec import ExecInfo, LocalExecInfo, PsshExecInfo, SshExecInfo, TransferError
from fabexec.sandbox import SandboxCluster, second_sshd
from fabexec.transfer import Get, Pscp, Put, Scp
from tests.clusters import on_every_host, openssh, pssh_info, ssh_info
from tests.test_transfer import remote_folder, remote_names

#: 2001-09-09 01:46:40.5 UTC: far from now, and half a second (SFTP keeps whole seconds).
OLD = 1_000_000_000.5


def times_on(cluster: SandboxCluster, host: str, folder: str) -> Dict[str, int]:
    """Each path under ``folder`` on ``host`` and its modification time, in whole seconds."""
    done = openssh(cluster, host, f"cd {shlex.quote(folder)} && find . -mindepth 1 "
                                  "-printf '%P %T@\\n'")
    assert done.returncode == 0, f"{host}: {done.stderr}"
    return {path: int(float(mtime)) for path, mtime in
            (line.rsplit(" ", 1) for line in done.stdout.splitlines())}


def local_times(folder: Path) -> Dict[str, int]:
    return {str(p.relative_to(folder)): int(p.lstat().st_mtime) for p in folder.rglob("*")}


def aged_tree(root: Path) -> Path:
    """app/ with a file, a subfolder and a file in it, each with its own old time."""
    app = root / "app"
    (app / "sub").mkdir(parents=True)
    (app / "top.txt").write_text("top\n")
    (app / "sub" / "deep.bin").write_bytes(os.urandom(1000))
    for offset, path in enumerate([app / "top.txt", app / "sub" / "deep.bin", app / "sub", app]):
        os.utime(path, (OLD, OLD + 100 * offset))  # folders last: their entries changed them
    return app


# --------------------------------------------------------------------------- results

def test_scp_and_pscp_results_read_as_jarvis_utils(cluster: SandboxCluster,
                                                   tmp_path: Path) -> None:
    local = tmp_path / "x.txt"
    local.write_text("x\n")
    host = cluster.hosts[0]
    with remote_folder(cluster) as folder:
        done = Scp([(str(local), f"{folder}/x.txt")], ssh_info(cluster, host))
        assert (done.stdout, done.stderr, done.exit_code, done.wait(), done.failed()) == \
            ("", "", 0, 0, False)
        failed = Scp([(str(local), "/proc/fabexec-nowhere/x.txt")], ssh_info(cluster, host))
        assert (failed.exit_code, failed.wait(), failed.failed()) == (1, 1, True)
        assert failed.stderr.startswith(f"fabexec: {host}: ") and failed.stdout == ""
        many = Pscp([(str(local), f"{folder}/y.txt")], pssh_info(cluster))
        assert (many.stdout, many.stderr, many.wait()) == (
            {h: "" for h in cluster.hosts}, {h: "" for h in cluster.hosts}, 0)
        assert remote_names(cluster, folder) == {h: ["x.txt", "y.txt"] if h == host
                                                 else ["y.txt"] for h in cluster.hosts}


# --------------------------------------------------------------------------- globs and ~

@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Tuple[Path, str]]:
    """A home folder of our own here (``$HOME``), and a fresh folder's name in it."""
    monkeypatch.setenv("HOME", str(tmp_path))
    name = f"fabexec-glob-{uuid.uuid4().hex}"
    data = tmp_path / name
    data.mkdir()
    for file in ("a.txt", "b.txt", "c.log", ".hidden.txt"):
        (data / file).write_text(f"{file}\n")
    os.utime(data / "a.txt", (OLD, OLD))
    yield data, name


def test_pscp_expands_a_glob_in_a_home_path_here_and_puts_the_matches_inside_dst(
        cluster: SandboxCluster, home: Tuple[Path, str]) -> None:
    _, name = home
    with remote_folder(cluster) as folder:
        done = Pscp([(f"~/{name}/*.txt", f"{folder}/in")], pssh_info(cluster))
        assert done.exit_codes == {h: 0 for h in cluster.hosts}, done.errors
        assert remote_names(cluster, f"{folder}/in") == {h: ["a.txt", "b.txt"]
                                                         for h in cluster.hosts}
        assert on_every_host(cluster, lambda h: times_on(cluster, h, folder)["in/a.txt"]) == \
            {h: int(OLD) for h in cluster.hosts}


def test_scp_of_a_glob_alone_puts_each_match_at_its_own_path_in_the_hosts_home(
        cluster: SandboxCluster, home: Tuple[Path, str]) -> None:
    _, name = home
    host = cluster.hosts[0]
    try:
        done = Scp(f"~/{name}/?.t[x]t", ssh_info(cluster, host))
        assert done.exit_code == 0, done.stderr
        listed = openssh(cluster, host, f"ls -A ~/{name}")
        assert listed.stdout.split() == ["a.txt", "b.txt"], listed.stderr
    finally:
        openssh(cluster, host, f"rm -rf ~/{name}")


def test_a_glob_that_matches_nothing_names_itself_before_any_host_is_contacted(
        home: Tuple[Path, str]) -> None:
    _, name = home
    unreachable = PsshExecInfo(hosts=["never.invalid"])
    with pytest.raises(TransferError, match=rf"'~/{name}/\*\.csv' matches no file"):
        Pscp(f"~/{name}/*.csv", unreachable)
    with pytest.raises(TransferError, match=r"'\*\.csv' matches no file"):
        Put("*.csv", "/tmp/fabexec-never", unreachable)


def test_put_here_expands_globs_and_keeps_a_name_that_only_looks_like_one(
        home: Tuple[Path, str], tmp_path: Path) -> None:
    data, name = home
    (data / "odd[1].txt").write_text("odd\n")  # the glob [1] matches no "odd1.txt"
    done = Put([f"~/{name}/*.log", str(data / "odd[1].txt")], tmp_path / "out", LocalExecInfo())
    assert done.exit_code == 0, done.errors
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["c.log", "odd[1].txt"]
    one = Put(f"~/{name}/a.*", tmp_path / "one", LocalExecInfo())  # a glob: always inside
    assert one.exit_code == 0 and (tmp_path / "one" / "a.txt").read_text() == "a.txt\n"
    named = Put(str(data / "odd[1].txt"), tmp_path / "named", LocalExecInfo())  # not a glob
    assert named.exit_code == 0 and (tmp_path / "named").read_text() == "odd\n"


# --------------------------------------------------------------------------- times

@pytest.fixture(params=["sftp", "shell"])
def way(request: pytest.FixtureRequest, cluster: SandboxCluster,
        tmp_path: Path) -> Iterator[Tuple[ExecInfo, str]]:
    """node2 over SFTP, or through the shell of a second sshd of node2 without SFTP."""
    if request.param == "sftp":
        yield ssh_info(cluster, "node2"), "node2"
        return
    with second_sshd(cluster, "node2", "") as (ip, port):
        yield SshExecInfo(hosts=ip, port=port, user=cluster.user, pkey=cluster.key,
                          known_hosts=tmp_path / "known_hosts", hide_output=True), "node2"


def test_modification_times_are_kept_by_put_and_get(cluster: SandboxCluster, tmp_path: Path,
                                                    way: Tuple[ExecInfo, str]) -> None:
    info, host = way
    app = aged_tree(tmp_path / "src")
    expected = local_times(app.parent)
    assert len(set(expected.values())) == 4, expected
    with remote_folder(cluster) as folder:
        sent = Put(app, f"{folder}/", info)
        assert sent.exit_code == 0, sent.errors
        assert times_on(cluster, host, folder) == expected
        back = Get(f"{folder}/app", f"{tmp_path / 'back'}/", info)
        assert back.exit_code == 0, back.errors
    assert local_times(tmp_path / "back") == expected
