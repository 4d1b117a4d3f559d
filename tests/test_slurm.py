"""SlurmExecInfo on a real Slurm cluster (the sandbox): job steps inside an allocation,
batch jobs outside, and what Slurm refuses as typed errors naming the keyword."""

from __future__ import annotations

import threading

import pytest

from fabexec import (
    CommandTimeoutError,
    Exec,
    HostStoppedAnsweringError,
    SchedulerError,
    SlurmExecInfo,
    SlurmStepError,
)
from fabexec.errors import ExecInfoError
from tests.proctree import eventually, sleeping

pytestmark = pytest.mark.timeout(120)

QUIET = dict(collect_output=True, hide_output=True)


def steps(slurm) -> list:
    return slurm.run("squeue", "-h", "-s", "-o", "%i").stdout.split()


def no_step_but_the_allocation(slurm) -> bool:
    """Only the allocation's own extern/interactive steps, no command step, are left."""
    return all(not s.split(".")[1].isdigit() for s in steps(slurm))


# ---- a job step inside an allocation ------------------------------------------------


def test_step_runs_once_on_each_node_of_the_allocation_keyed_by_node(allocation):
    run = Exec("echo $SLURMD_NODENAME; echo to-err >&2", SlurmExecInfo(**QUIET))
    assert run.hosts == ["n1", "n2", "n3"]
    assert run.stdout == {"n1": "n1\n", "n2": "n2\n", "n3": "n3\n"}
    assert run.stderr == {h: "to-err\n" for h in run.hosts}
    assert run.exit_code == 0


def test_stderr_written_at_once_goes_under_its_node(allocation):
    # the node's marker is on stdout, which another thread reads: often later (3 in 5 here)
    for _ in range(5):
        run = Exec("echo e-$SLURMD_NODENAME >&2", SlurmExecInfo(**QUIET))
        assert run.stderr == {h: f"e-{h}\n" for h in ("n1", "n2", "n3")}


def test_each_node_keeps_its_own_exit_code(allocation):
    run = Exec('[ "$SLURMD_NODENAME" = n2 ] && exit 3; exit 0', SlurmExecInfo(**QUIET))
    assert run.exit_codes == {"n1": 0, "n2": 3, "n3": 0}
    assert run.exit_code == 3 and run.errors == {}


@pytest.mark.parametrize("ending", ["exec bash -c 'exit 3'", "trap 'echo bye' EXIT; exit 3"])
def test_a_command_that_execs_or_sets_its_own_exit_trap_keeps_its_exit_code(allocation,
                                                                           ending):
    run = Exec(f'[ "$SLURMD_NODENAME" = n2 ] || exit 0; {ending}', SlurmExecInfo(**QUIET))
    assert run.exit_codes == {"n1": 0, "n2": 3, "n3": 0} and run.errors == {}


def test_a_node_killed_by_a_signal_has_128_plus_it_and_the_reason_others_keep_theirs(
        allocation):
    # srun names failed tasks only; it exits 128 + the highest signal, before any exit code.
    # n2 dies at once: a task killed by a signal makes srun force-terminate the step, and a
    # step ended within milliseconds of its start loses every task's output, markers too
    # (3 runs in 8 here): srun's own words must place the tasks then.
    run = Exec('case $SLURMD_NODENAME in n2) kill -TERM $$;; n3) exit 200;; esac; exit 0',
               SlurmExecInfo(**QUIET))
    assert run.exit_codes == {"n1": 0, "n2": 143, "n3": 200}
    assert list(run.errors) == ["n2"] and "Terminated" in str(run.errors["n2"])


def test_srun_told_to_name_one_of_like_failures_still_names_each(allocation, monkeypatch):
    monkeypatch.setenv("SLURM_SRUN_REDUCE_TASK_EXIT_MSG", "1")  # srun would name one only
    run = Exec("exit 3", SlurmExecInfo(**QUIET))
    assert run.exit_codes == {"n1": 3, "n2": 3, "n3": 3}


def test_tasks_of_one_node_go_under_that_node(allocation):
    run = Exec("echo task-$SLURM_PROCID", SlurmExecInfo(ppn=2, num_nodes=2, **QUIET))
    assert run.hosts == ["n1", "n2"]
    assert sorted(run.stdout["n1"].split()) == ["task-0", "task-1"]
    assert sorted(run.stdout["n2"].split()) == ["task-2", "task-3"]


def test_nodelist_and_host_suffix_pick_and_name_the_nodes(allocation):
    run = Exec("hostname >/dev/null", SlurmExecInfo(nodelist="n[2-3]", host_suffix="-ib",
                                                   **QUIET))
    assert run.hosts == ["n2-ib", "n3-ib"] and run.exit_code == 0


def test_output_is_prefixed_live_and_piped_per_node(allocation, capsys, tmp_path):
    Exec("echo hello from $SLURMD_NODENAME",
         SlurmExecInfo(num_nodes=2, pipe_stdout=str(tmp_path / "{host}.out")))
    printed = capsys.readouterr().out.splitlines()
    assert sorted(printed) == ["[n1] hello from n1", "[n2] hello from n2"]
    assert (tmp_path / "n1.out").read_text() == "hello from n1\n"
    assert (tmp_path / "n2.out").read_text() == "hello from n2\n"


def test_env_cwd_and_stdin_reach_every_task(allocation, tmp_path):
    run = Exec("echo $GREETING $(pwd) $(cat)",
               SlurmExecInfo(env={"GREETING": "hi there"}, cwd=str(tmp_path), stdin="in",
                             num_nodes=2, **QUIET))
    assert run.stdout == {h: f"hi there {tmp_path} in\n" for h in ("n1", "n2")}


def test_more_nodes_than_the_allocation_is_refused_up_front(allocation):
    with pytest.raises(ExecInfoError) as caught:
        Exec("true", SlurmExecInfo(num_nodes=4))
    assert caught.value.field == "num_nodes" and "n[1-3]" in str(caught.value)


def test_kill_cancels_the_step_and_its_processes(allocation, slurm, tag):
    run = Exec(f"sleep {tag} & sleep {tag}", SlurmExecInfo(exec_async=True, **QUIET))
    assert eventually(lambda: len(sleeping(tag)) == 6)
    assert run.ended() == {} and run.progress() == (0, 0, 3)
    run.kill()
    assert all(code for code in run.exit_codes.values())
    assert all(isinstance(e, SlurmStepError) for e in run.errors.values())
    assert eventually(lambda: sleeping(tag) == [], 15)
    assert eventually(lambda: no_step_but_the_allocation(slurm), 15)


def test_a_node_that_ended_before_kill_keeps_its_code(allocation, slurm, tag):
    # exec_async asks srun -v for each task that ends with 0, as it ends
    run = Exec(f'[ "$SLURMD_NODENAME" != n1 ] || exit 0; sleep {tag}',
               SlurmExecInfo(exec_async=True, **QUIET))
    assert eventually(lambda: len(sleeping(tag)) == 2 and run.progress()[0] == 1)
    run.kill()
    assert run.exit_codes["n1"] == 0 and list(run.errors) == ["n2", "n3"]
    assert eventually(lambda: no_step_but_the_allocation(slurm), 15)


def test_timeout_cancels_the_step_on_every_node(allocation, slurm, tag):
    run = Exec(f"sleep {tag}", SlurmExecInfo(timeout=1, num_nodes=2, **QUIET))
    assert run.exit_codes == {"n1": 124, "n2": 124}
    assert all(isinstance(e, CommandTimeoutError) for e in run.errors.values())
    assert eventually(lambda: sleeping(tag) == [], 15)
    assert eventually(lambda: no_step_but_the_allocation(slurm), 15)


def test_a_node_that_ended_before_the_timeout_keeps_its_code(allocation, tag):
    run = Exec(f'[ "$SLURMD_NODENAME" != n1 ] || exit 0; sleep {tag}',
               SlurmExecInfo(timeout=8, num_nodes=2, **QUIET))
    assert run.exit_codes == {"n1": 0, "n2": 124} and list(run.errors) == ["n2"]


def test_node_whose_slurmd_dies_mid_step_ends_255_with_the_reason_others_keep_output(
        allocation, slurm, tag):
    run = Exec(f'echo out-$SLURMD_NODENAME; [ "$SLURMD_NODENAME" != n2 ] || sleep {tag}',
               SlurmExecInfo(exec_async=True, **QUIET))
    try:
        assert eventually(lambda: len(sleeping(tag)) == 1 and run.progress()[0] == 2)
        slurm.kill_slurmd("n2")  # the controller declares n2 DOWN and kills the job
        run.wait()
    finally:
        slurm.start_slurmd("n2")  # and has it end the orphaned step's processes
    assert run.stdout == {h: f"out-{h}\n" for h in ("n1", "n2", "n3")}
    assert run.exit_codes == {"n1": 0, "n2": 255, "n3": 0}
    assert isinstance(run.errors["n2"], HostStoppedAnsweringError)
    assert "Node failure" in str(run.errors["n2"]) and list(run.errors) == ["n2"]
    assert eventually(lambda: sleeping(tag) == [], 15)


def test_node_failure_in_a_step_nobody_watches_keeps_the_others_codes(allocation, slurm,
                                                                        tag):
    # no exec_async, no timeout: srun runs without -v, so the others' 0 is inferred
    runs = []
    step = threading.Thread(target=lambda: runs.append(Exec(
        f'echo out-$SLURMD_NODENAME; [ "$SLURMD_NODENAME" != n2 ] || sleep {tag}',
        SlurmExecInfo(**QUIET))))
    step.start()
    try:
        assert eventually(lambda: len(sleeping(tag)) == 1)
        slurm.kill_slurmd("n2")
        step.join(90)
    finally:
        slurm.start_slurmd("n2")
    assert runs[0].stdout == {h: f"out-{h}\n" for h in ("n1", "n2", "n3")}
    assert runs[0].exit_codes == {"n1": 0, "n2": 255, "n3": 0}
    assert list(runs[0].errors) == ["n2"]
    assert isinstance(runs[0].errors["n2"], HostStoppedAnsweringError)
    assert eventually(lambda: sleeping(tag) == [], 15)


# ---- a batch job outside any allocation -----------------------------------------


def test_batch_job_waits_and_gives_job_id_output_and_exit_code(slurm):
    run = Exec("echo nodes=$SLURM_JOB_NUM_NODES; echo oops >&2; exit 3",
               SlurmExecInfo(num_nodes=2, job_name="fabexec-test", **QUIET))
    assert run.job_id is not None and run.job_id.isdigit()
    assert run.stdout == {"localhost": "nodes=2\n"}
    assert run.stderr == {"localhost": "oops\n"}
    assert run.exit_code == 3


def test_async_batch_job_killed_leaves_no_job(slurm, tag):
    run = Exec(f"sleep {tag}", SlurmExecInfo(exec_async=True, **QUIET))
    assert run.job_id is not None
    assert eventually(lambda: len(sleeping(tag)) == 1)
    assert run.ended() == {}
    run.kill()
    assert run.exit_code != 0 and isinstance(run.errors["localhost"], SlurmStepError)
    assert eventually(lambda: sleeping(tag) == [], 15)


def test_batch_job_timeout_cancels_the_job(slurm, tag):
    run = Exec(f"sleep {tag}", SlurmExecInfo(timeout=1, **QUIET))
    assert run.exit_code == 124
    assert isinstance(run.errors["localhost"], CommandTimeoutError)
    assert eventually(lambda: sleeping(tag) == [], 15)  # and the queue: see the fixture


@pytest.mark.parametrize("keyword, value, said", [
    ("partition", "nope", "invalid partition"),
    ("time", "bogus", "Invalid --time specification"),
    ("num_nodes", 9, "node configuration is not available"),
])
def test_what_slurm_refuses_names_the_keyword_with_slurms_message(slurm, keyword, value,
                                                                   said):
    with pytest.raises(SchedulerError) as caught:
        Exec("true", SlurmExecInfo(**{keyword: value}, **QUIET))
    assert caught.value.field == keyword
    assert said in str(caught.value)


def test_sbatch_missing_from_path_is_a_typed_error(slurm, monkeypatch, tmp_path):
    with monkeypatch.context() as patch, \
            pytest.raises(SchedulerError, match="`sbatch` is not on PATH") as caught:
        patch.setenv("PATH", str(tmp_path))
        Exec("true", SlurmExecInfo(**QUIET))
    assert caught.value.field == "exec_type"


# ---- keywords checked before anything runs (no cluster needed) -------------------


@pytest.mark.parametrize("keyword, value", [
    ("num_nodes", 0), ("cpus_per_task", "2"), ("time", ""), ("partition", 3),
    ("exclusive", "yes"), ("nodelist", "n[1-"), ("mem", "1G\n"), ("hosts", "n1"),
])
def test_bad_slurm_keyword_is_refused_naming_it(keyword, value):
    with pytest.raises(ExecInfoError) as caught:
        SlurmExecInfo(**{keyword: value})
    assert caught.value.field == keyword


def test_numbers_are_slurms_minutes_and_megabytes_and_nodelist_expands():
    info = SlurmExecInfo(time=10, mem=512, nodelist="n[1-2],gpu01")
    assert (info.time, info.mem, info.nodelist) == ("10", "512", ["n1", "n2", "gpu01"])


def test_fewer_nodes_than_nodelist_names_num_nodes():
    with pytest.raises(ExecInfoError) as caught:
        SlurmExecInfo(num_nodes=1, nodelist="n[1-2]")
    assert caught.value.field == "num_nodes"
