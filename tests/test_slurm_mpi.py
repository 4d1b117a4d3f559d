"""MPI inside a Slurm job: MpiExecInfo without hosts runs on the job's nodes (MPICH's Hydra
detects Slurm and starts its proxies with srun); hosts given must be the job's nodes."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from fabexec import Exec, MpiExecInfo
from fabexec.errors import ExecInfoError
from fabexec.mpi_flavors import Flavor, detect_flavor

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(shutil.which("mpiexec") is None, reason="no mpiexec")]

ROOT = Path(__file__).resolve().parent.parent
#: Run by `salloc` in the cluster (as a user's script run inside a job); prints the result.
PROGRAM = """\
import json, sys
from fabexec import Exec, MpiExecInfo
run = Exec("bash -c 'echo rank $PMI_RANK on $SLURMD_NODENAME'",
           MpiExecInfo(**{'nprocs': 3, 'ppn': 1, **json.loads(sys.argv[1])},
                       collect_output=True, hide_output=True))
print(json.dumps([run.exit_code, run.stdout['localhost']]))
"""


@pytest.fixture
def hydra():
    if detect_flavor() is not Flavor.MPICH:
        pytest.skip("the installed mpiexec is not MPICH's Hydra")


def in_job(slurm, monkeypatch, **info) -> list:
    """PROGRAM's result, run by ``salloc -N3`` with ``info``'s keywords."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    proc = slurm.run("salloc", "-N3", "--exclusive", "--immediate=30", "-J", "mpi",
                     sys.executable, "-c", PROGRAM, json.dumps(info))
    return json.loads(proc.stdout.splitlines()[-1])


def test_mpi_without_hosts_runs_one_rank_on_each_node_of_the_job(hydra, slurm, monkeypatch):
    code, out = in_job(slurm, monkeypatch)
    assert code == 0
    assert sorted(out.splitlines()) == ["rank 0 on n1", "rank 1 on n2", "rank 2 on n3"]


def test_mpi_on_hosts_of_the_job_runs_there_through_srun(hydra, slurm, monkeypatch):
    code, out = in_job(slurm, monkeypatch, hosts=["n1", "n3"], nprocs=2)
    assert code == 0
    assert sorted(out.splitlines()) == ["rank 0 on n1", "rank 1 on n3"]


def test_mpi_on_hosts_outside_the_job_is_refused_naming_hosts(hydra, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "n[1-3]")
    with pytest.raises(ExecInfoError) as caught:
        Exec("true", MpiExecInfo(nprocs=2, hosts=["n2", "n4"]))
    assert caught.value.field == "hosts" and "n4 not in Slurm job 7" in str(caught.value)


def test_mpi_on_this_machine_inside_a_job_stays_here(hydra, slurm, monkeypatch):
    code, out = in_job(slurm, monkeypatch, hosts="localhost", nprocs=2)
    assert code == 0
    assert sorted(out.splitlines()) == ["rank 0 on", "rank 1 on"]  # not on a node: no name
