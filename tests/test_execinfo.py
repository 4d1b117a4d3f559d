"""ExecInfo: jarvis-util's keywords and defaults, every field checked at construction."""

from __future__ import annotations

import dataclasses
import io
import math
from pathlib import Path
from typing import Any

import pytest

from fabexec import (
    Exec,
    ExecInfo,
    ExecInfoError,
    ExecType,
    Hostfile,
    LocalExecInfo,
    MpiExecInfo,
    PsshExecInfo,
    SshExecInfo,
)

#: jarvis-util's ExecInfo keywords, in its order, with its defaults.
JARVIS_KEYWORDS = {
    "exec_type": ExecType.LOCAL, "nprocs": None, "ppn": None, "user": None, "pkey": None,
    "port": None, "hostfile": None, "hosts": None, "env": None, "sleep_ms": 0,
    "sudo": False, "sudoenv": True, "cwd": None, "collect_output": None, "pipe_stdout": None,
    "pipe_stderr": None, "hide_output": None, "exec_async": False, "stdin": None,
    "do_dbg": False, "dbg_port": None, "strict_ssh": False, "timeout": None,
}


# ---- the jarvis-util surface -------------------------------------------------

def test_the_first_fields_are_jarvis_utils_keywords_in_its_order() -> None:
    names = [f.name for f in dataclasses.fields(ExecInfo)]
    assert names[:len(JARVIS_KEYWORDS)] == list(JARVIS_KEYWORDS)


def test_every_jarvis_keyword_has_jarvis_utils_default() -> None:
    info = ExecInfo()
    read_back = {"hostfile", "env"}  # jarvis-util fills them in: read as jarvis-util reads them
    assert {name: getattr(info, name) for name in JARVIS_KEYWORDS if name not in read_back} == {
        name: default for name, default in JARVIS_KEYWORDS.items() if name not in read_back}
    assert info.hostfile == Hostfile(all_hosts=["localhost"]) and info.env == {}


def test_every_jarvis_keyword_is_accepted_by_name(tmp_path: Path) -> None:
    info = ExecInfo(
        exec_type=ExecType.SSH, nprocs=4, ppn=2, user="me", pkey="~/.ssh/id_ed25519",
        port=2222, hostfile=None, hosts=["node1", "node2"], env={"A": "1"}, sleep_ms=10,
        sudo=True, sudoenv=False, cwd=tmp_path, collect_output=True,
        pipe_stdout=tmp_path / "o", pipe_stderr=tmp_path / "e", hide_output=True,
        exec_async=True, stdin="input", do_dbg=True, dbg_port=4000, strict_ssh=True,
        timeout=30,
    )
    assert (info.exec_type, info.nprocs, info.ppn, info.user, info.port) == (
        ExecType.SSH, 4, 2, "me", 2222)
    assert info.hostfile.hosts == ["node1", "node2"]
    assert (info.sudo, info.sudoenv, info.exec_async, info.do_dbg, info.strict_ssh) == (
        True, False, True, True, True)
    assert (info.sleep_ms, info.dbg_port, info.timeout, info.stdin) == (10, 4000, 30, "input")


@pytest.mark.parametrize("preset, exec_type", [
    (LocalExecInfo, ExecType.LOCAL), (SshExecInfo, ExecType.SSH),
    (PsshExecInfo, ExecType.PSSH),
])
def test_each_preset_sets_its_exec_type(preset: type, exec_type: ExecType) -> None:
    assert preset().exec_type is exec_type


def test_the_mpi_preset_sets_mpi() -> None:
    assert MpiExecInfo(nprocs=2).exec_type is ExecType.MPI


def test_exec_type_may_be_named_by_a_string_in_any_case() -> None:
    assert ExecInfo(exec_type="pssh").exec_type is ExecType.PSSH


def test_env_numbers_are_kept_as_text() -> None:
    assert ExecInfo(env={"N": 4, "F": 0.5}).env == {"N": "4", "F": "0.5"}


# ---- hosts and hostfile ------------------------------------------------------

def test_hosts_as_one_name_becomes_a_one_host_hostfile() -> None:
    assert ExecInfo(hosts="node1").hostfile.hosts == ["node1"]


def test_hosts_as_a_hostfile_is_used_as_is() -> None:
    hosts = Hostfile(all_hosts=["a", "b"], find_ips=False)
    assert ExecInfo(hosts=hosts).hostfile is hosts


def test_hostfile_as_a_path_is_read(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text("node-[1-3]\n")
    assert ExecInfo(hostfile=path).hostfile.hosts == ["node-1", "node-2", "node-3"]


def test_no_hosts_means_localhost() -> None:
    assert ExecInfo().targets.hosts == ["localhost"]


# ---- mod and copy -----------------------------------------------------------

def test_mod_returns_a_changed_copy_and_leaves_the_original_alone() -> None:
    info = ExecInfo(env={"A": "1"}, timeout=5)
    changed = info.mod(timeout=9)
    assert (changed.timeout, changed.env) == (9, {"A": "1"})
    assert info.timeout == 5
    assert changed is not info


def test_mod_hosts_replaces_an_earlier_hostfile(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text("node1\nnode2\n")
    changed = ExecInfo(hostfile=path).mod(hosts=["other"])
    assert changed.hostfile.hosts == ["other"]


def test_mod_hostfile_replaces_earlier_hosts(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text("node1\nnode2\n")
    changed = ExecInfo(hosts="other").mod(hostfile=path)
    assert changed.hostfile.hosts == ["node1", "node2"]


def test_mod_of_another_field_keeps_the_hosts_as_given() -> None:
    changed = ExecInfo(hosts=["a", "b"]).mod(timeout=3)
    assert changed.hosts == ["a", "b"]
    assert changed.hostfile.hosts == ["a", "b"]


def test_mod_checks_the_new_values() -> None:
    with pytest.raises(ExecInfoError) as caught:
        ExecInfo().mod(nprocs=0)
    assert caught.value.field == "nprocs"


def test_mod_keeps_the_preset_class() -> None:
    assert type(SshExecInfo(hosts="node1").mod(port=22)) is SshExecInfo


def test_copy_is_equal_but_independent() -> None:
    info = ExecInfo(env={"A": "1"}, hosts=["a"], timeout=5)
    copy = info.copy()
    assert copy == info
    copy.env["A"] = "2"
    assert info.env == {"A": "1"}


# ---- every bad input names its field -------------------------------------------

BAD_VALUES = [
    ("exec_type", "NO_SUCH_TYPE"), ("exec_type", 42),
    ("nprocs", 0), ("nprocs", -1), ("nprocs", 1.5), ("nprocs", "4"), ("nprocs", True),
    ("ppn", 0), ("ppn", -2), ("ppn", "2"),
    ("user", ""), ("user", 5),
    ("pkey", 5), ("pkey", ""),
    ("port", 0), ("port", -1), ("port", 65536), ("port", "22"), ("port", True),
    ("hostfile", 5), ("hostfile", ["node1"]),
    ("hosts", 5), ("hosts", []), ("hosts", ["node1", 2]), ("hosts", {"node1": 1}),
    ("env", "A=1"), ("env", ["A=1"]), ("env", {"1A": "x"}), ("env", {"A B": "x"}),
    ("env", {"A-B": "x"}), ("env", {"": "x"}), ("env", {5: "x"}), ("env", {"A": None}),
    ("env", {"A": ["x"]}), ("env", {"A": b"x"}),
    ("sleep_ms", -1), ("sleep_ms", "10"), ("sleep_ms", True),
    ("sudo", "yes"), ("sudo", 1), ("sudo", None),
    ("sudoenv", "no"), ("sudoenv", None),
    ("cwd", 5), ("cwd", ""),
    ("collect_output", "yes"), ("collect_output", 1),
    ("pipe_stdout", 5), ("pipe_stdout", ""),
    ("pipe_stderr", 5), ("pipe_stderr", ""),
    ("hide_output", "no"), ("hide_output", 0),
    ("exec_async", None), ("exec_async", "true"),
    ("stdin", 5), ("stdin", ["line"]), ("stdin", object()),
    ("do_dbg", "yes"),
    ("dbg_port", 0), ("dbg_port", -1), ("dbg_port", "4000"),
    ("strict_ssh", "yes"),
    ("timeout", 0), ("timeout", -1), ("timeout", "10"), ("timeout", True),
    ("connect_timeout", 0), ("connect_timeout", -5),
    ("max_parallel", 0), ("max_parallel", 2.5),
    ("ssh_config", 5), ("known_hosts", 5),
    ("sudo_password", ""), ("sudo_password", 5),
    ("keepalive_interval", -1), ("keepalive_count", 0),
    # NaN passes every comparison and inf never ends: both refused up front
    *[(name, value) for name in ("connect_timeout", "timeout", "keepalive_interval", "sleep_ms")
      for value in (math.nan, math.inf, -math.inf)],
    ("pkey_passphrase", ""), ("pkey_passphrase", b"secret"),
    ("mpiexec", ""), ("mpi_args", "-n 4"), ("mpi_args", ["-n", 4]),
    ("watchers", "responder"),
]


@pytest.mark.parametrize("field, value", BAD_VALUES,
                         ids=[f"{field}={value!r}" for field, value in BAD_VALUES])
def test_a_bad_value_raises_exec_info_error_naming_its_field(field: str, value: Any) -> None:
    with pytest.raises(ExecInfoError) as caught:
        ExecInfo(**{field: value})
    assert caught.value.field == field
    assert field in str(caught.value)


def test_hosts_and_hostfile_together_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text("node1\n")
    with pytest.raises(ExecInfoError) as caught:
        ExecInfo(hosts="node2", hostfile=path)
    assert caught.value.field in ("hosts", "hostfile")
    assert "hostfile" in str(caught.value)


@pytest.mark.parametrize("exec_type", [t for t in ExecType if t.is_mpi])
def test_an_mpi_job_without_nprocs_is_refused_when_it_runs(exec_type: ExecType) -> None:
    info = ExecInfo(exec_type=exec_type)  # a base info, given nprocs later with mod()
    with pytest.raises(ExecInfoError) as caught:
        Exec("true", info)
    assert caught.value.field == "nprocs"


def test_stdin_and_sudo_password_together_are_refused() -> None:
    with pytest.raises(ExecInfoError) as caught:
        ExecInfo(stdin="data", sudo_password="secret")
    assert caught.value.field == "stdin"


def test_the_sudo_password_never_shows_in_the_repr() -> None:
    assert "secret" not in repr(ExecInfo(sudo_password="secret"))


def test_the_key_passphrase_never_shows_in_the_repr() -> None:
    assert "secret" not in repr(ExecInfo(pkey="id", pkey_passphrase="secret"))


def test_a_key_passphrase_without_a_key_is_refused() -> None:
    with pytest.raises(ExecInfoError) as caught:
        ExecInfo(pkey_passphrase="secret")
    assert caught.value.field == "pkey_passphrase" and "pkey" in str(caught.value)


def test_a_key_passphrase_for_mpi_is_refused() -> None:
    """mpiexec starts its ranks with OpenSSH, which cannot be handed a passphrase."""
    with pytest.raises(ExecInfoError) as caught:
        MpiExecInfo(nprocs=2, pkey="id", pkey_passphrase="secret")
    assert caught.value.field == "pkey_passphrase" and "ssh-agent" in str(caught.value)


@pytest.mark.parametrize("value", ["text", b"bytes", io.BytesIO(b"file"), None])
def test_stdin_takes_text_bytes_a_file_or_nothing(value: Any) -> None:
    assert ExecInfo(stdin=value).stdin is value


def test_exec_info_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        ExecInfo(nprocs=-1)
