"""Defaults for `ExecInfo` from invoke's configuration: the ``fabexec`` section.

A user's ``tasks.py`` writes ``Exec(cmd, PsshExecInfo.from_config(c))`` and keeps the
cluster (hostfile, user, key, ...) in ``invoke.yaml``. These tests build the config the
ways invoke does: in memory, from a project's ``invoke.yaml``, and through a real
``invoke`` process running a task against the sandbox.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Dict

import pytest
from invoke import Config, Context

from fabexec import ExecInfo, ExecType, PsshExecInfo, SshExecInfo
from fabexec.errors import ExecInfoError
from fabexec.hostfile import Hostfile
from fabexec.sandbox import SandboxCluster
from tests.clusters import expected_hostname

REPO = Path(__file__).resolve().parent.parent


def context(section: Any) -> Context:
    """A task's Context whose configuration holds ``fabexec: section`` (no files read)."""
    return Context(Config(overrides={"fabexec": section}, lazy=True))


def project_context(folder: Path) -> Context:
    """A task's Context with ``folder``'s ``invoke.yaml`` loaded, as ``inv`` run there does."""
    config = Config(project_location=str(folder))
    config.load_project()
    return Context(config)


def test_section_gives_the_defaults() -> None:
    c = context({"user": "me", "pkey": "~/.ssh/id_test", "port": 2222, "connect_timeout": 3,
                 "max_parallel": 5, "hosts": ["a", "b"]})
    info = PsshExecInfo.from_config(c)
    assert (info.exec_type, info.user, info.pkey, info.port) == (
        ExecType.PSSH, "me", "~/.ssh/id_test", 2222)
    assert (info.connect_timeout, info.max_parallel) == (3, 5)
    assert info.hostfile == Hostfile(all_hosts=["a", "b"])


def test_each_preset_keeps_its_own_way_of_running() -> None:
    c = context({"user": "me"})
    assert ExecInfo.from_config(c).exec_type is ExecType.LOCAL
    assert SshExecInfo.from_config(c, hosts="a").exec_type is ExecType.SSH
    assert type(PsshExecInfo.from_config(c)) is PsshExecInfo


def test_without_a_section_the_defaults_are_the_classes_own() -> None:
    assert PsshExecInfo.from_config(Context(Config(lazy=True))) == PsshExecInfo()
    assert PsshExecInfo.from_config(context(None)) == PsshExecInfo()


def test_hostfile_key_reads_the_file(tmp_path: Path) -> None:
    hostfile = tmp_path / "hosts"
    hostfile.write_text("# the rack\nn[1-3]\n")
    info = PsshExecInfo.from_config(context({"hostfile": str(hostfile)}))
    assert info.hostfile.hosts == ["n1", "n2", "n3"]


def test_overrides_win_over_the_section() -> None:
    c = context({"user": "me", "max_parallel": 5, "timeout": 60})
    info = PsshExecInfo.from_config(c, user="other", max_parallel=2)
    assert (info.user, info.max_parallel, info.timeout) == ("other", 2, 60)


def test_hosts_given_as_override_replace_the_sections_hostfile(tmp_path: Path) -> None:
    hostfile = tmp_path / "hosts"
    hostfile.write_text("n1\nn2\n")
    c = context({"hostfile": str(hostfile)})
    assert PsshExecInfo.from_config(c, hosts=["x"]).hostfile.hosts == ["x"]
    assert PsshExecInfo.from_config(context({"hosts": ["a"]}), hostfile=hostfile).hostfile.hosts \
        == ["n1", "n2"]


def test_the_configuration_is_left_as_it_was() -> None:
    section: Dict[str, Any] = {"hosts": ["a", "b"], "env": {"N": 1}, "mpi_args": ["-v"]}
    c = context(section)
    PsshExecInfo.from_config(c, hosts=["x"])
    PsshExecInfo.from_config(c)
    assert c.config.fabexec == {"hosts": ["a", "b"], "env": {"N": 1}, "mpi_args": ["-v"]}


def test_unknown_key_is_an_error_naming_it() -> None:
    with pytest.raises(ExecInfoError, match="hostfiel") as caught:
        PsshExecInfo.from_config(context({"user": "me", "hostfiel": "hosts.txt"}))
    assert caught.value.field == "hostfiel"
    assert "'fabexec' section" in str(caught.value)


def test_wrong_value_is_an_error_naming_its_key() -> None:
    with pytest.raises(ExecInfoError) as caught:
        PsshExecInfo.from_config(context({"max_parallel": 0}))
    assert caught.value.field == "max_parallel"


def test_project_invoke_yaml_gives_the_defaults(tmp_path: Path) -> None:
    (tmp_path / "hosts.txt").write_text("node[01-02]\n")
    (tmp_path / "invoke.yaml").write_text(textwrap.dedent(f"""\
        fabexec:
          hostfile: {tmp_path / 'hosts.txt'}
          user: deploy
          pkey: ~/.ssh/id_cluster
          connect_timeout: 4.5
          max_parallel: 16
          env:
            OMP_NUM_THREADS: 1
        """))
    info = PsshExecInfo.from_config(project_context(tmp_path), timeout=60)
    assert info.hostfile.hosts == ["node01", "node02"]
    assert (info.user, info.pkey, info.connect_timeout, info.max_parallel, info.timeout) == (
        "deploy", "~/.ssh/id_cluster", 4.5, 16, 60)
    assert info.given_env == {"OMP_NUM_THREADS": "1"}  # info.env adds the forwarded PATH...


def test_project_invoke_yaml_with_an_unknown_key_is_an_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "invoke.yaml").write_text("fabexec:\n  users: deploy\n")
    with pytest.raises(ExecInfoError, match="users"):
        PsshExecInfo.from_config(project_context(tmp_path))


TASKS = '''\
from invoke import task

from fabexec import Exec, PsshExecInfo


@task
def names(c):
    """hostname on every host of invoke.yaml's fabexec section."""
    node = Exec("hostname", PsshExecInfo.from_config(c))
    if node.exit_code:
        raise SystemExit(node.exit_code)


@task
def one(c, host):
    """hostname on one host: an override of the section's hostfile."""
    Exec("hostname", PsshExecInfo.from_config(c, hosts=[host]))
'''


def invoke(folder: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m invoke ARGS`` in ``folder``, as a user runs ``inv`` in a project."""
    paths = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=folder,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(paths)},
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=90,
                          check=False)


def test_a_users_tasks_py_runs_on_the_cluster_of_its_invoke_yaml(
        cluster: SandboxCluster, tmp_path: Path) -> None:
    (tmp_path / "tasks.py").write_text(TASKS)
    (tmp_path / "invoke.yaml").write_text(
        f"fabexec:\n  hostfile: {cluster.hostfile}\n  ssh_config: {cluster.ssh_config}\n"
        "  connect_timeout: 10\n")
    done = invoke(tmp_path, "names")
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == [
        f"[{host}] {expected_hostname(cluster, host)}" for host in cluster.hosts]
    single = invoke(tmp_path, "one", "--host", "node3")
    assert (single.returncode, single.stdout) == (0, f"{expected_hostname(cluster, 'node3')}\n")
