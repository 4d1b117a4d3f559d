"""Hostfile.from_env: the hosts of the Slurm, PBS or Flux job around the process."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from fabexec.errors import HostfileError, NotInJobError
from fabexec.hostfile import Hostfile

BARE = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
REPO = Path(__file__).resolve().parent.parent


def test_slurm_nodelist_with_ranges_and_padding():
    hosts = Hostfile.from_env({**BARE, "SLURM_JOB_NODELIST": "n[1-3,7],gpu[01-02]"})
    assert hosts.hosts == ["n1", "n2", "n3", "n7", "gpu01", "gpu02"]


def test_slurm_nodelist_with_suffix_after_range():
    hosts = Hostfile.from_env({**BARE, "SLURM_JOB_NODELIST": "r[1-2]-ib,login"})
    assert hosts.hosts == ["r1-ib", "r2-ib", "login"]


def test_slurm_older_nodelist_variable():
    assert Hostfile.from_env({**BARE, "SLURM_NODELIST": "a,b"}).hosts == ["a", "b"]


def test_slurm_tasks_per_node_become_slots():
    env = {**BARE, "SLURM_JOB_NODELIST": "n[1-4]", "SLURM_TASKS_PER_NODE": "2(x3),1"}
    assert Hostfile.from_env(env).slots == {"n1": 2, "n2": 2, "n3": 2, "n4": 1}


def test_slurm_without_tasks_per_node_has_no_slots():
    assert Hostfile.from_env({**BARE, "SLURM_JOB_NODELIST": "n1"}).slots == {"n1": None}


def test_slurm_tasks_per_node_that_disagree_is_an_error():
    env = {**BARE, "SLURM_JOB_NODELIST": "n[1-4]", "SLURM_TASKS_PER_NODE": "2(x3)"}
    with pytest.raises(HostfileError, match="SLURM_TASKS_PER_NODE gives 3 nodes"):
        Hostfile.from_env(env)


def test_slurm_nodelist_that_cannot_be_parsed_names_the_variable():
    with pytest.raises(HostfileError, match="SLURM_JOB_NODELIST cannot be parsed"):
        Hostfile.from_env({**BARE, "SLURM_JOB_NODELIST": "n[1-3"})


def test_pbs_nodefile_repeated_lines_become_slots(tmp_path):
    nodefile = tmp_path / "nodes"
    nodefile.write_text("b\nb\na\nb\na\nc\n")
    hosts = Hostfile.from_env({**BARE, "PBS_NODEFILE": str(nodefile)})
    assert hosts.hosts == ["b", "a", "c"]
    assert hosts.slots == {"b": 3, "a": 2, "c": 1}


def test_pbs_nodefile_missing_names_the_variable(tmp_path):
    with pytest.raises(HostfileError, match="PBS_NODEFILE cannot be read"):
        Hostfile.from_env({**BARE, "PBS_NODEFILE": str(tmp_path / "gone")})


def test_pbs_empty_nodefile_is_an_error(tmp_path):
    nodefile = tmp_path / "nodes"
    nodefile.write_text("\n")
    with pytest.raises(HostfileError, match="lists no node"):
        Hostfile.from_env({**BARE, "PBS_NODEFILE": str(nodefile)})


def test_slurm_wins_over_pbs(tmp_path):
    """slurm-wlm-torque's jobs carry both; Slurm's own list is the exact one."""
    nodefile = tmp_path / "nodes"
    nodefile.write_text("x\n")
    env = {**BARE, "SLURM_JOB_NODELIST": "n1", "PBS_NODEFILE": str(nodefile)}
    assert Hostfile.from_env(env).hosts == ["n1"]


def _fake_flux(folder, output: str, code: int = 0) -> dict:
    """A stand-in for `flux` (Flux is not installable here): prints ``output``."""
    flux = folder / "flux"
    flux.write_text(f"#!/bin/sh\n[ \"$1\" = hostlist ] || exit 9\necho '{output}'\nexit {code}\n")
    flux.chmod(flux.stat().st_mode | stat.S_IEXEC)
    return {"PATH": f"{folder}:{BARE['PATH']}", "FLUX_URI": "local:///tmp/flux-x/local-0"}


def test_flux_hostlist_is_parsed(tmp_path):
    assert Hostfile.from_env(_fake_flux(tmp_path, "fluke[0-2]")).hosts == [
        "fluke0", "fluke1", "fluke2"]


def test_flux_hostlist_failing_is_an_error(tmp_path):
    with pytest.raises(HostfileError, match="flux hostlist` failed"):
        Hostfile.from_env(_fake_flux(tmp_path, "", code=1))


def test_flux_without_the_command_is_an_error(tmp_path):
    env = {"PATH": str(tmp_path), "FLUX_URI": "local:///nowhere"}
    with pytest.raises(HostfileError, match="no `flux` command"):
        Hostfile.from_env(env)


def test_outside_any_job_is_a_typed_error_naming_what_it_looked_for():
    with pytest.raises(NotInJobError) as caught:
        Hostfile.from_env(BARE)
    for name in ("SLURM_JOB_NODELIST", "PBS_NODEFILE", "FLUX_URI"):
        assert name in str(caught.value)


def test_reads_the_process_environment_by_default(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_NODELIST", "z[1-2]")
    assert Hostfile.from_env().hosts == ["z1", "z2"]


def _cli(args, env):
    return subprocess.run([sys.executable, "-m", "fabexec", *args], capture_output=True,
                          text=True, timeout=60, env=env, cwd=REPO)


def test_cli_job_option_runs_on_the_jobs_nodes():
    """``fabexec run -j``: here the job's one node is this machine, which runs it locally."""
    env = {**BARE, "PYTHONPATH": str(REPO), "SLURM_JOB_NODELIST": "localhost"}
    proc = _cli(["run", "-j", "--", "echo", "from-job"], env)
    assert proc.returncode == 0 and "from-job" in proc.stdout


def test_cli_job_option_outside_a_job_says_so():
    proc = _cli(["run", "-j", "--", "true"], {**BARE, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2 and "not inside a scheduler job" in proc.stderr
