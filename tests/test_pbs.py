"""PbsExecInfo through qsub/qstat/qdel: the PBS commands of Debian's slurm-wlm-torque on
the real Slurm sandbox (OpenPBS and Torque are not installable here)."""

from __future__ import annotations

import pytest

from fabexec import Exec, PbsExecInfo, SchedulerError, SchedulerJobError
from fabexec.errors import ExecInfoError
from tests.proctree import eventually, sleeping

pytestmark = pytest.mark.timeout(120)

QUIET = dict(collect_output=True, hide_output=True)


def test_job_runs_on_its_nodes_and_gives_output_and_exit_code(slurm):
    run = Exec("echo nodes=$SLURM_JOB_NUM_NODES $GREETING; echo oops >&2; exit 3",
               PbsExecInfo(nnodes=2, walltime="00:05:00", env_vars={"GREETING": "hi"},
                           **QUIET))
    assert run.job_id is not None and run.job_id.isdigit()
    assert run.stdout == {"localhost": "nodes=2 hi\n"}
    assert run.stderr == {"localhost": "oops\n"}
    assert run.exit_code == 3


def test_async_job_killed_is_deleted_with_its_processes(slurm, tag):
    run = Exec(f"sleep {tag}", PbsExecInfo(exec_async=True, **QUIET))
    assert eventually(lambda: len(sleeping(tag)) == 1)
    assert run.ended() == {}
    run.kill()
    assert run.exit_code == 1 and isinstance(run.errors["localhost"], SchedulerJobError)
    assert eventually(lambda: sleeping(tag) == [], 15)


@pytest.mark.parametrize("keyword, value, said", [
    ("queue", "nope", "invalid partition"),
    ("walltime", "bogus", "Invalid time limit"),
])
def test_what_the_scheduler_refuses_names_the_keyword(slurm, keyword, value, said):
    with pytest.raises(SchedulerError) as caught:
        Exec("true", PbsExecInfo(**{keyword: value}, **QUIET))
    assert caught.value.field == keyword and said in str(caught.value)


def test_interactive_is_refused_up_front():
    with pytest.raises(ExecInfoError) as caught:
        PbsExecInfo(interactive=True)
    assert caught.value.field == "interactive"
