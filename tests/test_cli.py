"""The ``fabexec`` command end to end: a real process, as a user runs it, on the sandbox.

Every test starts ``python -m fabexec`` with its output captured and a time bound, and
checks what a user sees: the exit status, stdout, stderr and the files written. What
happened on a node is checked with the OpenSSH client where the command's own output
could not tell (`tests.clusters.openssh`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pty
import re
import select
import shlex
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from fabexec import ExecInfoError, cli, sandbox
from fabexec.sandbox import Cluster, SandboxCluster
from tests.clusters import (
    SPARE_IP,
    expected_hostname,
    on_every_host,
    only_on,
    openssh,
    ssh_config_with,
)

REPO = Path(__file__).resolve().parent.parent
#: Seconds any one ``fabexec`` process may take before the test fails.
PROCESS_TIMEOUT = 90
#: Hosts of the cluster that shows the progress line (`fabexec.cli.PROGRESS_FROM`).
MANY = 8
#: A value with every character a shell would change: blanks, quotes, $, \, ;, |, &, *, newline.
AWKWARD = "x  y $HOME \"dq\" 'sq' \\ ; | & * `id`\nsecond line"


def fabexec(*args: Any, env: Optional[Dict[str, str]] = None, cwd: Optional[Path] = None,
            stderr: Any = subprocess.PIPE) -> subprocess.CompletedProcess:
    """``python -m fabexec ARGS`` in a fresh process: output captured, bounded in time."""
    paths = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), **(env or {})}
    return subprocess.run([sys.executable, "-m", "fabexec", *map(str, args)],
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
                          text=True, env=environ, cwd=cwd, timeout=PROCESS_TIMEOUT, check=False)


def on(cluster: Cluster) -> List[str]:
    """The options that target every node of ``cluster``."""
    return ["-f", str(cluster.hostfile), "-F", str(cluster.ssh_config)]


def gathered(title: str, body: str) -> str:
    """One group of ``--gather`` output: the hosts' title between rules, then the output."""
    rule = "-" * len(title)
    return f"{rule}\n{title}\n{rule}\n{body}"


def free_port(ip: str) -> int:
    """A port nothing listens on at ``ip`` (just released by the kernel)."""
    with socket.socket() as sock:
        sock.bind((ip, 0))
        return sock.getsockname()[1]


@pytest.fixture
def ghost_config(cluster: SandboxCluster, tmp_path: Path) -> Path:
    """The cluster's ssh_config plus ``ghost``: an address where nothing listens."""
    return ssh_config_with(cluster, tmp_path / "ssh_config",
                           {"ghost": (SPARE_IP, free_port(SPARE_IP))})


@pytest.fixture(scope="module")
def many_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxCluster]:
    """A second sandbox of `MANY` nodes, enough for the progress line; stopped after."""
    if os.geteuid() != 0 and not sandbox.SSHD.exists():
        pytest.skip(f"{sandbox.SSHD} is missing and only root may install it")
    state_dir = tmp_path_factory.mktemp("sandbox-many")
    try:
        yield sandbox.up(MANY, state_dir, timeout=60)
    finally:
        sandbox.down(state_dir)


# --- run, locally ------------------------------------------------------------------


def test_run_locally_prints_the_output_and_exits_with_the_commands_status() -> None:
    done = fabexec("run", "--", "echo hello; echo oops >&2; exit 3")
    assert (done.returncode, done.stdout, done.stderr) == (3, "hello\n", "oops\n")


def test_words_after_double_dash_are_the_command_even_when_they_look_like_options() -> None:
    done = fabexec("run", "--", "echo", "-q", "--json", "--")
    assert (done.returncode, done.stdout) == (0, "-q --json --\n")


def test_env_value_reaches_the_command_unchanged() -> None:
    done = fabexec("run", "-e", f"AWKWARD={AWKWARD}", "-e", "EMPTY=", "--",
                   'printf "%s|%s\\n" "$AWKWARD" "${EMPTY-unset}"')
    assert (done.returncode, done.stdout, done.stderr) == (0, f"{AWKWARD}|\n", "")


def test_cwd_is_where_the_command_runs(tmp_path: Path) -> None:
    done = fabexec("run", "--cwd", tmp_path, "--", "pwd")
    assert (done.returncode, done.stdout) == (0, f"{tmp_path}\n")


def test_timeout_stops_the_command_with_status_124() -> None:
    done = fabexec("run", "--timeout", "1", "--", "sleep 60; echo too late")
    assert done.returncode == 124
    assert "too late" not in done.stdout


def test_out_and_err_files_get_each_stream_while_the_terminal_still_shows_it(
        tmp_path: Path) -> None:
    out, err = tmp_path / "out.log", tmp_path / "err.log"
    done = fabexec("run", "--out", out, "--err", err, "--", "echo to-out; echo to-err >&2")
    assert (done.returncode, done.stdout, done.stderr) == (0, "to-out\n", "to-err\n")
    assert (out.read_text(), err.read_text()) == ("to-out\n", "to-err\n")


def test_quiet_prints_nothing_but_keeps_the_status_and_the_files(tmp_path: Path) -> None:
    out = tmp_path / "out.log"
    done = fabexec("run", "-q", "--out", out, "--", "echo hidden; echo hidden >&2; exit 4")
    assert (done.returncode, done.stdout, done.stderr) == (4, "", "")
    assert out.read_text() == "hidden\n"


def test_mpi_runs_n_ranks_and_exits_with_a_failing_ranks_status() -> None:
    if shutil.which("mpiexec") is None:
        pytest.skip("no mpiexec on PATH (pip install mpich)")
    rank = "${PMI_RANK:-$OMPI_COMM_WORLD_RANK}"
    done = fabexec("run", "--mpi", "-n", "2", "--",
                   shlex.join(["sh", "-c", f"echo rank {rank}; exit $(( {rank} == 1 ? 3 : 0 ))"]))
    assert done.returncode == 3, done.stderr
    assert sorted(done.stdout.splitlines()) == ["rank 0", "rank 1"]


# --- run, on the nodes ---------------------------------------------------------------


def test_run_on_a_hostfile_prefixes_each_line_with_its_host(cluster: SandboxCluster) -> None:
    done = fabexec("run", *on(cluster), "--", "hostname")
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == [
        f"[{host}] {expected_hostname(cluster, host)}" for host in cluster.hosts]


def test_run_on_a_host_range(cluster: SandboxCluster) -> None:
    assert cluster.hosts == ["node1", "node2", "node3", "node4"]
    done = fabexec("run", "-H", "node[1-4]", "-F", cluster.ssh_config, "--", "hostname")
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == [
        f"[{host}] {expected_hostname(cluster, host)}" for host in cluster.hosts]


def test_exit_status_is_nonzero_when_one_host_fails(cluster: SandboxCluster) -> None:
    done = fabexec("run", *on(cluster), "--", f"! {only_on(cluster, 'node2')}")
    assert done.returncode == 1


def test_gather_shows_identical_outputs_once_under_the_folded_hosts(
        cluster: SandboxCluster) -> None:
    done = fabexec("run", *on(cluster), "--gather", "--", "echo same")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == gathered("node[1-4] (4)", "same\n")


def test_gather_groups_different_outputs_apart_with_their_exit_status(
        cluster: SandboxCluster) -> None:
    even = f"{only_on(cluster, 'node2')} || {only_on(cluster, 'node4')}"
    done = fabexec("run", *on(cluster), "--gather", "--",
                   f"if {even}; then echo even; else echo odd; exit 1; fi")
    assert done.returncode == 1
    assert done.stdout == (gathered("node[1,3] (2) exit 1", "odd\n")
                           + gathered("node[2,4] (2)", "even\n"))


def test_gather_with_live_prints_the_lines_as_they_come_then_the_summary(
        cluster: SandboxCluster) -> None:
    done = fabexec("run", *on(cluster), "-b", "--live", "--", "echo same")
    assert (done.returncode, done.stderr) == (0, "")
    live, summary = done.stdout.splitlines(keepends=True)[:4], done.stdout.splitlines()[4:]
    assert sorted(live) == [f"[{host}] same\n" for host in cluster.hosts]
    assert "".join(line + "\n" for line in summary) == gathered("node[1-4] (4)", "same\n")


def test_json_prints_one_object_per_host(cluster: SandboxCluster) -> None:
    done = fabexec("run", *on(cluster), "--json", "--",
                   f"echo out; echo err >&2; ! {only_on(cluster, 'node3')}")
    assert done.returncode == 1
    objects = sorted((json.loads(line) for line in done.stdout.splitlines()),
                     key=lambda o: o["host"])
    assert objects == [
        {"schema": cli.JSON_SCHEMA, "host": host, "exit_code": 1 if host == "node3" else 0,
         "stdout": "out\n", "stderr": "err\n", "error": None}
        for host in cluster.hosts]


def test_json_gives_an_unreachable_host_255_and_its_error(cluster: SandboxCluster,
                                                          ghost_config: Path) -> None:
    done = fabexec("run", "-H", "node1,ghost", "-F", ghost_config, "--connect-timeout", "10",
                   "--json", "--", "echo hi")
    assert done.returncode == 255
    ghost, node1 = sorted(map(json.loads, done.stdout.splitlines()), key=lambda o: o["host"])
    assert node1 == {"schema": cli.JSON_SCHEMA, "host": "node1", "exit_code": 0,
                     "stdout": "hi\n", "stderr": "", "error": None}
    assert (ghost["host"], ghost["exit_code"], ghost["stdout"]) == ("ghost", 255, "")
    assert isinstance(ghost["error"], str) and "ghost" in ghost["error"]


def touch_on(cluster: SandboxCluster, hosts: List[str], path: str) -> None:
    """Create ``path`` on each of ``hosts`` (nodes have their own /tmp), over OpenSSH."""
    on_every_host(cluster, lambda host: openssh(cluster, host, f"touch {path}")
                  if host in hosts else None)


def test_json_prints_each_host_as_it_ends(cluster: SandboxCluster) -> None:
    """node3 ends at once; the others end only once the test has read node3's line
    (else they give up after `GIVE_UP` seconds and fail)."""
    go = f"/tmp/fabexec-cli-go-{uuid.uuid4().hex}"
    wait_for_go = (f"i=0; while [ ! -e {go} ] && [ $i -lt {GIVE_UP * 10} ]; do sleep 0.1; "
                   f"i=$((i+1)); done; [ -e {go} ]")
    paths = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    proc = subprocess.Popen(
        [sys.executable, "-m", "fabexec", "run", *map(str, on(cluster)), "--json", "--",
         f"if {only_on(cluster, 'node3')}; then echo early; else {wait_for_go}; fi"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(paths)})
    try:
        first = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
        touch_on(cluster, cluster.hosts, go)
        rest = [json.loads(line) for line in proc.stdout]  # type: ignore[union-attr]
    finally:
        status = proc.wait(timeout=PROCESS_TIMEOUT)
    assert (first["host"], first["stdout"], first["exit_code"]) == ("node3", "early\n", 0)
    assert sorted((o["host"], o["exit_code"]) for o in rest) == [
        (host, 0) for host in cluster.hosts if host != "node3"]
    assert status == 0


# --- the habits of pdsh and clush ----------------------------------------------------


def parsed(*argv: str) -> Any:
    return cli.build_parser().parse_args(["run", *argv, "--", "true"])


def test_w_names_the_hosts_as_H_does() -> None:
    assert parsed("-w", "n[1-2]").hosts == parsed("-H", "n[1-2]").hosts == "n[1-2]"


def test_b_gathers_as_gather_does() -> None:
    assert parsed("-b").gather and parsed("--gather").gather


def test_fanout_bounds_the_hosts_in_flight_as_max_parallel_does() -> None:
    assert cli._exec_info(parsed("-w", "n[1-4]", "--fanout", "3")).max_parallel == 3


def test_exclude_keeps_the_order_repeats_and_slot_counts_of_the_rest() -> None:
    info = cli._exec_info(parsed("-w", "n4:2,n1,n2,n3:8,n4:2", "-x", "n[2-3]"))
    assert info.targets.hosts == ["n4", "n1", "n4"]
    assert info.targets.slots == {"n4": 2, "n1": None}


def test_exclude_leaves_out_hosts_of_a_hostfile(cluster: SandboxCluster) -> None:
    done = fabexec("run", *on(cluster), "-x", "node[2-3]", "--", "hostname")
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == [
        f"[{host}] {expected_hostname(cluster, host)}" for host in ("node1", "node4")]


#: Every node prints these; odd nodes one line more. A line with ': ' inside and one
#: starting with a blank show whether a reader splits at the label only.
LABEL_LINES = ["first", "key: value", " indented"]


def labelled_run(cluster: SandboxCluster) -> str:
    odd = f"{only_on(cluster, 'node1')} || {only_on(cluster, 'node3')}"
    lines = " ".join(shlex.quote(line) for line in LABEL_LINES)
    done = fabexec("run", *on(cluster), "--label", "colon", "--",
                   f"printf '%s\\n' {lines}; if {odd}; then echo odd; fi")
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    return done.stdout


def test_colon_labels_read_host_colon_line(cluster: SandboxCluster) -> None:
    out = labelled_run(cluster)
    expected = [f"{host}: {line}" for host in cluster.hosts
                for line in LABEL_LINES + (["odd"] if host in ("node1", "node3") else [])]
    assert sorted(out.splitlines()) == sorted(expected)


def test_colon_labels_name_the_only_host_too(cluster: SandboxCluster) -> None:
    done = fabexec("run", "-w", "node2", "-F", cluster.ssh_config, "--label", "colon", "--",
                   "printf 'one\\ntwo'")
    assert (done.returncode, done.stdout) == (0, "node2: one\nnode2: two\n")


def debian_tool(name: str) -> str:
    """The path of ``name`` as Debian installs it (``inv setup``), else on PATH, else skip."""
    path = f"/usr/bin/{name}" if os.path.exists(f"/usr/bin/{name}") else shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (inv setup installs it as root on Debian)")
    return path


def test_dshbak_groups_colon_labelled_output_back_by_host(cluster: SandboxCluster) -> None:
    """pdsh's dshbak -c: hosts with the same lines under one header, each line as printed."""
    shown = subprocess.run([debian_tool("dshbak"), "-c"], input=labelled_run(cluster),
                           capture_output=True, text=True, timeout=PROCESS_TIMEOUT, check=True)
    rule = "-" * 16
    body = "".join(f"{line}\n" for line in LABEL_LINES)
    assert shown.stdout == (f"{rule}\nnode[1,3]\n{rule}\n{body}odd\n"
                            f"{rule}\nnode[2,4]\n{rule}\n{body}")


def test_clubak_groups_colon_labelled_output_back_by_host(cluster: SandboxCluster) -> None:
    """ClusterShell's clubak -b, as it reads clush's own output: each line after 'host:'."""
    shown = subprocess.run([debian_tool("clubak"), "-b"], input=labelled_run(cluster),
                           capture_output=True, text=True, timeout=PROCESS_TIMEOUT, check=True)
    rule = "-" * 15  # as long as the title and two more
    body = "".join(f" {line}\n" for line in LABEL_LINES)
    assert shown.stdout == (f"{rule}\nnode[1,3] (2)\n{rule}\n{body} odd\n"
                            f"{rule}\nnode[2,4] (2)\n{rule}\n{body}")


def test_unreachable_host_is_one_line_naming_it_and_status_255(cluster: SandboxCluster,
                                                               ghost_config: Path) -> None:
    done = fabexec("run", "-H", "node1,ghost", "-F", ghost_config, "--connect-timeout", "10",
                   "--", "echo hi")
    assert done.returncode == 255
    assert done.stdout == "[node1] hi\n"
    assert len(done.stderr.splitlines()) == 1 and "ghost" in done.stderr
    assert "Traceback" not in done.stderr


def test_env_value_reaches_a_node_unchanged(cluster: SandboxCluster) -> None:
    done = fabexec("run", "-H", "node1", "-F", cluster.ssh_config, "-e", f"AWKWARD={AWKWARD}",
                   "--", 'printf "%s\\n" "$AWKWARD"')
    assert (done.returncode, done.stdout, done.stderr) == (0, f"{AWKWARD}\n", "")


def test_cwd_on_a_node(cluster: SandboxCluster) -> None:
    done = fabexec("run", "-H", "node2", "-F", cluster.ssh_config, "--cwd", "/usr/bin", "--",
                   "pwd")
    assert (done.returncode, done.stdout) == (0, "/usr/bin\n")


def test_timeout_on_the_nodes_is_124_with_the_reason_for_each_host(
        cluster: SandboxCluster) -> None:
    done = fabexec("run", "-H", "node[1-2]", "-F", cluster.ssh_config, "--timeout", "1",
                   "--", "sleep 60")
    assert done.returncode == 124
    for host in ("node1", "node2"):
        assert re.search(rf"^\[{host}\] .*{host}.*timed out", done.stderr, re.M), done.stderr


def test_user_option_overrides_the_ssh_config_user(cluster: SandboxCluster) -> None:
    if cluster.password_user is None:
        pytest.skip("this sandbox has a single login user (not started as root)")
    done = fabexec("run", "-H", "node1", "-F", cluster.ssh_config, "-u", cluster.password_user,
                   "--", "id -un")
    assert (done.returncode, done.stdout) == (0, f"{cluster.password_user}\n")


def test_sudo_runs_as_root_on_the_node(cluster: SandboxCluster) -> None:
    if not cluster.sudo:
        pytest.skip("this sandbox has no sudo (not started as root)")
    done = fabexec("run", "-H", "node3", "-F", cluster.ssh_config, "--sudo", "--", "id -un")
    assert (done.returncode, done.stdout) == (0, "root\n")


def test_out_and_err_files_per_host(cluster: SandboxCluster, tmp_path: Path) -> None:
    done = fabexec("run", *on(cluster), "-q", "--out", tmp_path / "{host}.out",
                   "--err", tmp_path / "{host}.err", "--",
                   f"printf '%s\\n' {shlex.quote(AWKWARD)}; echo e >&2")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{host}.{stream}" for host in cluster.hosts for stream in ("out", "err"))
    for host in cluster.hosts:
        assert (tmp_path / f"{host}.out").read_text() == f"{AWKWARD}\n"
        assert (tmp_path / f"{host}.err").read_text() == "e\n"


# --- the progress line -------------------------------------------------------------

PROGRESS = re.compile(rb"\[(\d+)/(\d+) done, (\d+) failed, (\d+) running\]")
#: Seconds the hosts of the progress test wait for the terminal to show a failure.
GIVE_UP = 20
ANY_BYTE = re.compile(rb"[\s\S]")


def read_until(fd: int, found: re.Pattern[bytes], seconds: float) -> bytes:
    """What ``fd`` gives until ``found`` matches it, it closes, or ``seconds`` pass."""
    data = b""
    deadline = time.monotonic() + seconds
    while not found.search(data) and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: every writer of the terminal is gone
            break
        if not chunk:
            break
        data += chunk
    return data


def run_on_terminal(*args: Any, until: re.Pattern[bytes],
                    then: Optional[Callable[[], object]] = None) -> Tuple[int, bytes, str]:
    """``fabexec ARGS`` with stderr on a pseudo-terminal: status, terminal bytes, stdout.

    Once the terminal has shown ``until`` (or gave up waiting), ``then()`` is called.
    """
    master, slave = pty.openpty()
    paths = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    proc = subprocess.Popen([sys.executable, "-m", "fabexec", *map(str, args)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(paths)})
    os.close(slave)
    try:
        shown = read_until(master, until, PROCESS_TIMEOUT)
        if then is not None:
            then()
        shown += read_until(master, re.compile(rb"(?!)"), PROCESS_TIMEOUT)
        out, _ = proc.communicate(timeout=PROCESS_TIMEOUT)
        return proc.returncode, shown, out.decode()
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture
def node_folder(cluster: SandboxCluster) -> Iterator[str]:
    """A fresh folder on every node, made and removed over OpenSSH as the login user."""
    folder = f"/tmp/fabexec-cli-{uuid.uuid4().hex}"
    made = on_every_host(cluster, lambda host: openssh(cluster, host, f"mkdir -p {folder}"))
    assert all(done.returncode == 0 for done in made.values()), made
    yield folder
    on_every_host(cluster, lambda host: openssh(cluster, host, f"rm -rf {folder}"))


def test_progress_line_counts_done_failed_and_running_hosts_on_a_terminal(
        many_nodes: SandboxCluster) -> None:
    """node3 fails at once; the others succeed only if the terminal shows that while they run.

    They wait for a file that the test creates on each of them once the progress line
    says one host failed and seven still run (or after `GIVE_UP` seconds, when they fail).
    """
    go = f"/tmp/fabexec-cli-go-{uuid.uuid4().hex}"

    def go_everywhere() -> None:
        on_every_host(many_nodes, lambda host: openssh(many_nodes, host, f"touch {go}"))

    wait_for_go = (f"i=0; while [ ! -e {go} ] && [ $i -lt {GIVE_UP * 10} ]; do sleep 0.1; "
                   f"i=$((i+1)); done; [ -e {go} ]")
    status, shown, out = run_on_terminal(
        "run", *on(many_nodes), "--json", "--",
        f"if {only_on(many_nodes, 'node3')}; then exit 1; fi; {wait_for_go}",
        until=re.compile(rb"\[1/8 done, 1 failed, 7 running\]"),
        then=go_everywhere)
    codes = {line["host"]: line["exit_code"] for line in map(json.loads, out.splitlines())}
    assert codes == {host: int(host == "node3") for host in many_nodes.hosts}, (
        f"the terminal did not show node3's failure while the others ran: {shown!r}")
    assert status == 1
    lines = [tuple(map(int, m)) for m in PROGRESS.findall(shown)]
    assert all(total == MANY and done + running == MANY and failed <= done
               for done, total, failed, running in lines), shown
    assert shown.endswith(b"\r\x1b[K"), "the progress line is not cleared at the end"


class Screen:
    """``fabexec ARGS`` with stdout and stderr on one pseudo-terminal, read as a person
    sees it: the bytes go through a terminal emulator (pyte), rows of text come out."""

    def __init__(self, *args: Any) -> None:
        pyte = pytest.importorskip("pyte", reason="pip install pyte (a test dependency)")
        self.screen = pyte.Screen(100, 40)
        self.stream = pyte.ByteStream(self.screen)
        self.master, slave = pty.openpty()
        paths = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
        self.proc = subprocess.Popen([sys.executable, "-m", "fabexec", *map(str, args)],
                                     stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                                     env={**os.environ, "PYTHONPATH": os.pathsep.join(paths)})
        os.close(slave)
        self.shown = b""

    def read_until(self, found: re.Pattern[bytes]) -> None:
        """Take what the terminal gets until ``found`` matches all of it, or it ends."""
        deadline = time.monotonic() + PROCESS_TIMEOUT
        while not found.search(self.shown) and time.monotonic() < deadline:
            chunk = read_until(self.master, ANY_BYTE, deadline - time.monotonic())
            if not chunk:
                break
            self.shown += chunk
            self.stream.feed(chunk)

    def rows(self) -> List[str]:
        """The rows of the screen, down to the cursor's, right blanks dropped."""
        return [row.rstrip() for row in self.screen.display[:self.screen.cursor.y + 1]]

    def close(self) -> int:
        self.read_until(re.compile(b"(?!)"))
        status = self.proc.wait(timeout=PROCESS_TIMEOUT)
        os.close(self.master)
        return status


def test_progress_line_and_output_never_share_a_row_of_the_terminal(
        many_nodes: SandboxCluster) -> None:
    """node3 prints a line once the progress line shows, the others once the test says go.

    The screen then holds node3's line whole and, below it, the progress line drawn
    again; at the end every host's line whole, one a row, and no progress line.
    """
    first, go = (f"/tmp/fabexec-cli-{name}-{uuid.uuid4().hex}" for name in ("first", "go"))

    def wait_for(path: str) -> str:
        return (f"i=0; while [ ! -e {path} ] && [ $i -lt {GIVE_UP * 10} ]; do sleep 0.1; "
                f"i=$((i+1)); done; [ -e {path} ]")

    terminal = Screen("run", *on(many_nodes), "--",
                      f"if {only_on(many_nodes, 'node3')}; then {wait_for(first)} && "
                      f"echo early on node3; else {wait_for(go)} && echo late; fi")
    try:
        terminal.read_until(PROGRESS)
        touch_on(many_nodes, ["node3"], first)
        terminal.read_until(re.compile(rb"\[1/8 done, 0 failed, 7 running\]$"))
        assert terminal.rows() == ["[node3] early on node3", "[1/8 done, 0 failed, 7 running]"]
        touch_on(many_nodes, many_nodes.hosts, go)
    finally:
        status = terminal.close()
    assert status == 0, terminal.shown
    rows = terminal.rows()
    assert rows[0] == "[node3] early on node3" and rows[-1] == "", rows
    assert sorted(rows[1:-1]) == [f"[{host}] late" for host in many_nodes.hosts
                                  if host != "node3"], rows


def test_no_progress_line_for_a_few_hosts_on_a_terminal(cluster: SandboxCluster) -> None:
    status, shown, out = run_on_terminal("run", *on(cluster), "-q", "--", "true",
                                         until=re.compile(rb"(?!)"))
    assert (status, shown, out) == (0, b"", "")


def test_no_progress_line_when_stderr_is_not_a_terminal(many_nodes: SandboxCluster) -> None:
    done = fabexec("run", *on(many_nodes), "-q", "--", "true")
    assert (done.returncode, done.stderr) == (0, "")


# --- hosts ---------------------------------------------------------------------------


def test_hosts_prints_one_expanded_host_per_line() -> None:
    done = fabexec("hosts", "node[01-03],login,rack[1-2]-n[1-2]")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines() == ["node01", "node02", "node03", "login",
                                        "rack1-n1", "rack1-n2", "rack2-n1", "rack2-n2"]


# --- put and get ---------------------------------------------------------------------


def test_put_copies_a_file_to_every_node_byte_for_byte(cluster: SandboxCluster,
                                                       tmp_path: Path, node_folder: str) -> None:
    payload = bytes(range(256)) * 64 + b"\r\nno final newline"
    src = tmp_path / "payload.bin"
    src.write_bytes(payload)
    dst = f"{node_folder}/new-folder/payload.bin"
    done = fabexec("put", *on(cluster), src, dst)
    assert (done.returncode, done.stderr) == (0, "")
    for host in cluster.hosts:
        seen = openssh(cluster, host, f"sha256sum < {dst}")
        assert seen.stdout.split()[0] == hashlib.sha256(payload).hexdigest(), host


def test_get_fetches_a_file_from_every_node_into_one_folder_per_host(
        cluster: SandboxCluster, tmp_path: Path, node_folder: str) -> None:
    """Each node holds a file of its own under the same path: each comes back to its folder."""
    if not cluster.own_folders:
        pytest.skip("the nodes share this machine's folders: one path is one file for all")
    payloads = {host: os.urandom(50_000) for host in cluster.hosts}
    written = on_every_host(cluster, lambda host: openssh(
        cluster, host, f"echo {base64.b64encode(payloads[host]).decode()} | base64 -d "
                       f"> {node_folder}/remote.bin"))
    assert all(done.returncode == 0 for done in written.values()), written
    dst = tmp_path / "fetched"
    done = fabexec("get", *on(cluster), f"{node_folder}/remote.bin", dst)
    assert (done.returncode, done.stderr) == (0, "")
    assert sorted(p.name for p in dst.iterdir()) == sorted(cluster.hosts)
    for host in cluster.hosts:
        assert (dst / host / "remote.bin").read_bytes() == payloads[host], host


def test_put_names_an_unreachable_host_and_still_copies_to_the_others(
        cluster: SandboxCluster, ghost_config: Path, tmp_path: Path, node_folder: str) -> None:
    src = tmp_path / "small.txt"
    src.write_text("small\n")
    done = fabexec("put", "-H", "node1,ghost", "-F", ghost_config, "--connect-timeout", "10",
                   src, f"{node_folder}/small.txt")
    assert done.returncode == 255
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("fabexec: ghost: ") and "ghost: ghost" not in done.stderr
    assert openssh(cluster, "node1", f"cat {node_folder}/small.txt").stdout == "small\n"


def test_put_of_a_missing_local_file_is_one_line(cluster: SandboxCluster,
                                                 tmp_path: Path) -> None:
    done = fabexec("put", *on(cluster), tmp_path / "missing.txt", "/tmp/never-written.txt")
    assert done.returncode != 0
    assert "missing.txt" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr


# --- cluster -------------------------------------------------------------------------


def test_cluster_status_lists_the_running_nodes(cluster: SandboxCluster) -> None:
    done = fabexec("cluster", "status", env={sandbox.STATE_DIR_VAR: str(cluster.state_dir)})
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines() == [f"{host}\trunning" for host in cluster.hosts]


def test_cluster_up_status_down(tmp_path: Path) -> None:
    if os.geteuid() != 0 and not sandbox.SSHD.exists():
        pytest.skip(f"{sandbox.SSHD} is missing and only root may install it")
    state = tmp_path / "own-sandbox"
    env = {sandbox.STATE_DIR_VAR: str(state)}
    try:
        before = fabexec("cluster", "status", env=env)
        assert before.returncode == 1 and "no sandbox" in before.stdout
        up = fabexec("cluster", "up", "-n", "2", env=env)
        assert up.returncode == 0, up.stderr
        assert up.stdout.splitlines()[0] == "2 nodes up: node[1-2]"
        started = SandboxCluster.load(state)
        assert openssh(started, "node2", "echo reached").stdout == "reached\n"
        status = fabexec("cluster", "status", env=env)
        assert (status.returncode, status.stdout) == (0, "node1\trunning\nnode2\trunning\n")
        down = fabexec("cluster", "down", env=env)
        assert (down.returncode, down.stdout) == (0, "sandbox down\n")
        after = fabexec("cluster", "status", env=env)
        assert after.stdout == "node1\tstopped\nnode2\tstopped\n"
        assert openssh(started, "node1", "true").returncode == 255
    finally:
        sandbox.down(state)


# --- wrong input: one line, nothing run ----------------------------------------------

BAD_INPUTS = {
    "unknown option": (["run", "--bogus", "--", "touch {ran}"], "unrecognized arguments: --bogus"),
    "unknown subcommand": (["bogus"], "invalid choice: 'bogus'"),
    "no subcommand": ([], "required: command"),
    "bad range": (["run", "-H", "node[1-4", "--", "touch {ran}"], "node[1-4"),
    "bad range in hosts": (["hosts", "node[1-4"], "node[1-4"),
    "missing hostfile": (["run", "-f", "{tmp}/no-such-hostfile", "--", "touch {ran}"],
                         "no-such-hostfile"),
    "env without =": (["run", "-e", "X", "--", "touch {ran}"], "NAME=VALUE"),
    "bad env name": (["run", "-e", "1X=y", "--", "touch {ran}"], "'1X'"),
    "run without a command": (["run"], "no COMMAND"),
    "run with an empty command": (["run", "--"], "no COMMAND"),
    "mpi without -n": (["run", "--mpi", "--", "touch {ran}"], "--mpi needs -n"),
    "negative timeout": (["run", "--timeout", "-1", "--", "touch {ran}"], "timeout"),
    "port not a number": (["run", "-p", "x", "--", "touch {ran}"], "-p/--port"),
    "hosts and hostfile": (["run", "-H", "a", "-f", "b", "--", "touch {ran}"], "not allowed"),
    "gather and json": (["run", "--gather", "--json", "--", "touch {ran}"], "not allowed"),
    "exclude without hosts": (["run", "-x", "n1", "--", "touch {ran}"], "-x/--exclude needs"),
    "exclude every host": (["run", "-w", "n[1-2]", "-x", "n[1-2]", "--", "touch {ran}"],
                           "leaves no host"),
    "unknown label": (["run", "--label", "curly", "--", "touch {ran}"], "invalid choice"),
    "live without gather": (["run", "--live", "--", "touch {ran}"], "--live goes with"),
    "missing cwd": (["run", "--cwd", "{tmp}/no-such-dir", "--", "touch {ran}"], "no-such-dir"),
    "missing ssh_config": (["run", "-H", "n1", "-F", "{tmp}/no-such-config", "--", "touch {ran}"],
                           "no-such-config"),
    "unknown cluster action": (["cluster", "sideways"], "invalid choice: 'sideways'"),
    "no nodes for the cluster": (["cluster", "up", "-n", "0"], "nodes=0"),
}


@pytest.mark.parametrize("argv,says", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_wrong_input_is_one_line_on_stderr_and_runs_nothing(argv: List[str], says: str,
                                                            tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    done = fabexec(*(arg.format(ran=ran, tmp=tmp_path) for arg in argv),
                   env={sandbox.STATE_DIR_VAR: str(tmp_path / "sandbox")})
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("fabexec") and says in done.stderr, done.stderr
    assert not ran.exists()


def test_host_expression_keeps_its_slot_counts_for_mpi() -> None:
    args = cli.build_parser().parse_args(["run", "--mpi", "-n", "6", "-H", "n1:4,n2:2", "--",
                                          "true"])
    assert cli._exec_info(args, nprocs=6).targets.slots == {"n1": 4, "n2": 2}


def test_a_slot_count_in_an_ssh_host_expression_is_refused() -> None:
    args = cli.build_parser().parse_args(["run", "-H", "n1:4,n2:2", "--", "true"])
    with pytest.raises(ExecInfoError, match="port="):
        cli._exec_info(args)
