"""`ExecInfo` as jarvis-util code reads it: a localhost hostfile, a dict env, keys, late nprocs."""

from __future__ import annotations

import dataclasses

import pytest

from fabexec import (
    Exec,
    ExecInfo,
    ExecInfoError,
    Hostfile,
    LocalExecInfo,
    MpiExecInfo,
    PsshExecInfo,
)


def test_hostfile_defaults_to_this_machine() -> None:
    info = ExecInfo()
    assert isinstance(info.hostfile, Hostfile) and len(info.hostfile) == 1
    assert info.hostfile.hosts == ["localhost"] and info.hostfile.is_local()


def test_the_default_hostfile_still_runs_here_and_gives_way_to_hosts() -> None:
    info = PsshExecInfo(collect_output=True, hide_output=True)
    assert Exec("echo here", info).stdout == {"localhost": "here\n"}
    assert info.mod(hosts=["a", "b"]).hostfile.hosts == ["a", "b"]


def test_env_is_a_dict() -> None:
    info = LocalExecInfo()
    assert info.env == {}
    info.env["X"] = "1"  # jarvis-util code writes into it, then copies the info
    assert Exec("echo $X", info.mod(collect_output=True, hide_output=True)).stdout == \
        {"localhost": "1\n"}
    ssh = PsshExecInfo()
    ssh.env["PATH"] = "/changed"
    assert ssh.mod().env["PATH"] == "/changed" and ssh.mod().given_env == {"PATH": "/changed"}


def test_keys_names_every_keyword() -> None:
    assert ExecInfo().keys == [f.name for f in dataclasses.fields(ExecInfo)]
    assert {"exec_type", "nprocs", "hostfile", "env", "timeout"} <= set(ExecInfo().keys)


def test_a_base_mpi_info_gets_nprocs_later() -> None:
    base = MpiExecInfo(collect_output=True, hide_output=True)
    assert base.nprocs is None
    assert base.mod(nprocs=2).nprocs == 2


def test_nprocs_is_checked_when_the_job_runs() -> None:
    with pytest.raises(ExecInfoError) as caught:
        Exec("true", MpiExecInfo())
    assert caught.value.field == "nprocs"


@pytest.mark.parametrize("keyword,suggested", [("hostfle", "hostfile"), ("nproc", "nprocs"),
                                               ("colect_output", "collect_output")])
def test_an_unknown_keyword_names_the_closest_valid_ones(keyword: str, suggested: str) -> None:
    with pytest.raises(ExecInfoError) as caught:
        PsshExecInfo(**{keyword: 1})
    assert caught.value.field == keyword and suggested in str(caught.value)


def test_an_unknown_keyword_through_mod_is_named_too() -> None:
    with pytest.raises(ExecInfoError, match="unknown keyword"):
        ExecInfo().mod(no_such_keyword=1)
