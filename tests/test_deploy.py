"""``inv deploy`` end to end on a sandbox of its own, and the key-value service it deploys.

The deploy runs as a user runs it, ``python -m invoke ... deploy`` in a fresh process, with
``$FABEXEC_SANDBOX_DIR`` pointing at a sandbox folder of these tests (not the session's
``cluster`` fixture). The tests start that sandbox first, so that the deploy leaves it
running and "nothing left running" and "nothing left behind" can be checked afterwards
on each node over OpenSSH (each node has its own /tmp where the machine allows it), and
on this machine, which sees every node's processes; one test lets the deploy start and
stop a sandbox of its own.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

from examples.kvstore.deploy import Deployment, Target
from examples.kvstore.kvstore import Client
from fabexec import sandbox
from fabexec.sandbox import SandboxCluster, second_sshd
from tests.clusters import on_every_host, openssh

ROOT = Path(__file__).resolve().parent.parent
KVSTORE = ROOT / "examples" / "kvstore"
REMOTE_ROOT = Path("/tmp/fabexec-deploy")
NODES = 4
DEPLOY_TIMEOUT = 150


# --------------------------------------------------------------------------- helpers

def free_port(ips: List[str]) -> int:
    """A port free on every one of ``ips`` (other tests' sandboxes use the same addresses)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind((ips[0], 0))
            port = probe.getsockname()[1]
        if all(sandbox.can_bind(ip, port) for ip in ips):
            return port
    raise RuntimeError(f"no port free on all of {ips}")


def deploy_id(output: str) -> str:
    found = re.search(r"^deploy (\S+): ", output, re.MULTILINE)
    assert found, f"no deploy line in:\n{output}"
    return found.group(1)


def summary_rows(output: str) -> dict:
    """host -> {step: 'OK' | 'FAIL' | '-'} from the summary table."""
    lines = output[output.index("summary of deploy"):].splitlines()
    steps = lines[1].split()[1:]
    rows = {}
    for line in lines[3:]:
        words = line.split()
        if not words or not words[0].startswith("node"):
            break
        cells = [w for w in words[1:] if not w.endswith("s") or w == "-"]
        rows[words[0]] = dict(zip(steps, cells))
    return rows


def leftovers(deploy: str) -> List[str]:
    """This deploy's processes here or on any node: this machine sees every node's."""
    found = subprocess.run(["pgrep", "-af", f"fabexec-deploy/{deploy}/"], capture_output=True,
                           text=True)
    return [line for line in found.stdout.splitlines() if "pgrep" not in line]


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def state_dir() -> Iterator[Path]:
    """A sandbox folder for the deploys only; stopped before and after, whatever happened."""
    if os.geteuid() != 0 and not sandbox.SSHD.exists():
        pytest.skip(f"{sandbox.SSHD} is missing and only root may install it")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    folder = Path.home() / ".cache" / "fabexec" / f"sandbox-deploy-tests-{worker}"
    sandbox.down(folder)
    try:
        yield folder
    finally:
        sandbox.down(folder)


@pytest.fixture
def running(state_dir: Path) -> SandboxCluster:
    """The deploys' sandbox, started before the deploy (once: `sandbox.up` reuses it)."""
    return sandbox.up(NODES, state_dir)


def deploy_command(state_dir: Path, *options: str) -> dict:
    """``inv deploy`` on a free port, as `subprocess` keywords."""
    ips = [ip for ip, _ in zip(sandbox.loopback_ips(), range(NODES))]
    argv = [sys.executable, "-m", "invoke", "--search-root", str(ROOT),
            "--collection", "tasks_deploy", "deploy", "--nodes", str(NODES),
            "--port", str(free_port(ips)), *options]
    return {"args": argv, "env": {**os.environ, sandbox.STATE_DIR_VAR: str(state_dir)},
            "text": True}


def deploy(state_dir: Path, cwd: Path, *options: str) -> subprocess.CompletedProcess:
    """Run ``inv deploy`` to its end in ``cwd`` (where deploy-logs/ lands)."""
    return subprocess.run(**deploy_command(state_dir, *options), cwd=cwd, capture_output=True,
                          timeout=DEPLOY_TIMEOUT)


def assert_nothing_left(cluster: SandboxCluster, deploy: str) -> None:
    """No process and no folder of the deploy on any node (asked on each), nor here; and
    the sandbox, which the deploy did not start, still runs."""
    assert leftovers(deploy) == []
    look = (f"pgrep -af '[f]abexec-deploy/{deploy}/'; "
            f"if [ -e {REMOTE_ROOT / deploy} ]; then echo {REMOTE_ROOT / deploy} is left; fi")
    found = on_every_host(cluster, lambda host: openssh(cluster, host, look))
    assert {host: done.stdout + done.stderr for host, done in found.items()} == dict.fromkeys(
        cluster.hosts, "")
    assert set(cluster.status().values()) == {"running"}, "the deploy stopped a sandbox it found"


# --------------------------------------------------------------------------- inv deploy

LAUNCHERS = ["mpiexec", "mpiexec.openmpi"]


@pytest.mark.timeout(DEPLOY_TIMEOUT + 30)
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_deploy_runs_every_step_on_every_host_and_leaves_nothing(
        running: SandboxCluster, tmp_path: Path, launcher: str) -> None:
    if shutil.which(launcher) is None:
        pytest.skip(f"no {launcher} installed")
    done = deploy(running.state_dir, tmp_path, "--mpiexec", launcher)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "every step OK" in done.stdout
    rows = summary_rows(done.stdout)
    assert sorted(rows) == [f"node{k}" for k in range(1, NODES + 1)]
    steps = ["push", "start", "ready", "mpi", "stop", "logs", "clean"]
    assert all(row == dict.fromkeys(steps, "OK") for row in rows.values()), rows
    for k in range(1, NODES + 1):
        # Instance k serves ranks k-1 and k-1+NODES, which ran on other nodes (2 per node).
        assert re.search(rf"^mpi +node{k} +OK .* ranks {k - 1}, {k - 1 + NODES} ok",
                         done.stdout, re.MULTILINE), done.stdout
    for k in range(1, NODES + 1):
        log = (tmp_path / "deploy-logs" / f"node{k}" / "kvstore.log").read_text()
        assert re.search(rf"listening on 127\.0\.1\.{k}:\d+", log)
        assert "SIGTERM: shutting down" in log
        assert "stopped: 2 keys" in log, "each instance stored the keys of its two ranks"
    assert "sandbox: using the running one" in done.stdout
    assert_nothing_left(running, deploy_id(done.stdout))


@pytest.mark.timeout(DEPLOY_TIMEOUT + 30)
def test_a_host_whose_service_cannot_start_fails_the_deploy_by_name_and_tears_down(
        running: SandboxCluster, tmp_path: Path) -> None:
    done = deploy(running.state_dir, tmp_path, "--fail-host", "node2")
    assert done.returncode == 1, done.stdout + done.stderr
    # sshd holds that port: taken, or (port 22, when this sandbox got it) privileged.
    taken = "(Address already in use|Permission denied)"
    assert re.search(r"deploy failed at step 'ready' on node2: service exited: cannot serve "
                     rf"on 127\.0\.1\.2:\d+: {taken}", done.stderr), done.stderr
    rows = summary_rows(done.stdout)
    assert rows["node2"]["ready"] == "FAIL"
    assert "mpi" not in rows["node2"], "no MPI job runs after a failed step"
    assert [host for host, row in rows.items() if "FAIL" in row.values()] == ["node2"]
    for k in (1, 3, 4):
        assert re.search(rf"^stop +node{k} +OK .* stopped by SIGTERM", done.stdout, re.MULTILINE)
    node2_log = (tmp_path / "deploy-logs" / "node2" / "kvstore.log").read_text()
    assert re.search(taken, node2_log), node2_log
    assert_nothing_left(running, deploy_id(done.stdout))


@pytest.mark.timeout(DEPLOY_TIMEOUT + 30)
def test_ctrl_c_tears_down_what_was_started_and_exits_130(running: SandboxCluster,
                                                           tmp_path: Path) -> None:
    proc = subprocess.Popen(**deploy_command(running.state_dir), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        seen = []
        for line in proc.stdout:  # bounded: the deploy ends, and the test has a timeout
            seen.append(line)
            if line.startswith("start "):  # a service runs: interrupt the deploy now
                proc.send_signal(signal.SIGINT)
                break
        out, err = proc.communicate(timeout=DEPLOY_TIMEOUT)
    finally:
        proc.kill()
    output = "".join(seen) + out
    assert proc.returncode == 130, output + err
    assert "interrupted (Ctrl-C): torn down" in output
    assert re.search(r"^stop +node\d +OK ", output, re.MULTILINE), "started services were stopped"
    assert "deploy interrupted" in err
    assert_nothing_left(running, deploy_id(output))


@pytest.mark.timeout(DEPLOY_TIMEOUT + 30)
def test_without_a_running_sandbox_the_deploy_starts_one_and_stops_it(tmp_path: Path) -> None:
    state_dir = tmp_path / "own-sandbox"
    try:
        done = deploy(state_dir, tmp_path)
        output = done.stdout + done.stderr
        assert done.returncode == 0, output
        assert re.search(r"^sandbox: started 4 nodes in ", done.stdout, re.MULTILINE), output
        assert re.search(r"^sandbox: stopped$", done.stdout, re.MULTILINE), output
        assert leftovers(deploy_id(done.stdout)) == []
        states = SandboxCluster.load(state_dir).status()
        assert set(states.values()) == {"stopped"}, "the deploy started the sandbox: it stops it"
    finally:
        sandbox.down(state_dir)


@pytest.mark.timeout(DEPLOY_TIMEOUT + 30)
def test_an_unknown_fail_host_is_refused_before_anything_starts(
        state_dir: Path, tmp_path: Path) -> None:
    done = deploy(state_dir, tmp_path, "--fail-host", "node9")
    assert done.returncode == 1
    assert "fail_host='node9' is not one of the hosts" in done.stderr
    assert "push" not in done.stdout


# --------------------------------------------------------------------------- shared nodes

def both_users(cluster: sandbox.SandboxCluster, tmp_path: Path) -> Tuple[Target, Target]:
    """Two nodes of the session's sandbox, as its login user and as its second user."""
    first = Target.from_sandbox(cluster, 2)
    config = tmp_path / "ssh_config"
    config.write_text(cluster.ssh_config.read_text().replace(
        f"User {cluster.user}\n", f"User {cluster.password_user}\n"))
    return first, dataclasses.replace(first, ssh_config=config)


def owner_and_mode(cluster: sandbox.SandboxCluster, host: str, path: str) -> Tuple[str, str]:
    """``path``'s owner and mode (``755``) on ``host``, as OpenSSH finds them there
    (with sudo: a private folder is another user's)."""
    done = openssh(cluster, host, f"sudo -n stat -c '%U %a' -- {shlex.quote(path)}")
    assert done.returncode == 0, f"{host}: {done.stderr}"
    owner, mode = done.stdout.split()
    return owner, mode


def holds(cluster: sandbox.SandboxCluster, host: str, folder: str) -> List[str]:
    """What ``folder`` holds on ``host`` (``ls -A`` there, with sudo), sorted."""
    done = openssh(cluster, host, f"sudo -n ls -A -- {shlex.quote(folder)}")
    assert done.returncode == 0, f"{host}: {done.stderr}"
    return sorted(done.stdout.split())


def remove_everywhere(cluster: sandbox.SandboxCluster, path: str) -> None:
    """``path`` removed on every node, whoever made it there (the login user's sudo)."""
    on_every_host(cluster, lambda host: openssh(cluster, host,
                                                f"sudo -n rm -rf -- {shlex.quote(path)}"))


def test_two_users_push_to_the_same_nodes_one_after_the_other_and_at_once(
        cluster: sandbox.SandboxCluster, tmp_path: Path) -> None:
    """The root where deploys meet is shared as /tmp is; each deploy's folder is its
    user's alone. Checked on each node over OpenSSH: each has a /tmp of its own."""
    if cluster.password_user is None:
        pytest.skip("the sandbox has a second user only when started as root")
    targets = both_users(cluster, tmp_path)
    users = [cluster.user, cluster.password_user]
    roots = [f"/tmp/fabexec-deploy-{uuid.uuid4().hex}" for _ in range(2)]
    after, together = ([Deployment(target, remote_root=root, out=io.StringIO())
                        for target in targets] for root in roots)
    try:
        assert [deploy.push().failures() for deploy in after] == [{}, {}]
        with ThreadPoolExecutor(2) as pool:
            assert [step.failures() for step in pool.map(Deployment.push, together)] == [{}, {}]
        hosts = targets[0].hosts
        for host in hosts:
            for root in roots:
                assert owner_and_mode(cluster, host, root)[1] == "1777", host
            for deploy, user in zip(after + together, users * 2):
                assert owner_and_mode(cluster, host, deploy.base) == (user, "700"), host
                assert owner_and_mode(cluster, host, deploy.folder(host)) == (user, "700")
                # each host holds its own folder (and the job's), not the others'
                assert holds(cluster, host, deploy.base) == sorted([host, "job"])
    finally:
        for deploy in after + together:
            deploy.clean()
    try:
        for host in hosts:
            assert [holds(cluster, host, root) for root in roots] == [[], []], host
    finally:
        for root in roots:
            remove_everywhere(cluster, root)


def test_a_root_another_user_made_private_is_named_with_its_owner(
        cluster: sandbox.SandboxCluster, tmp_path: Path) -> None:
    """As an older deploy left /tmp/fabexec-deploy: 0755, its maker's."""
    if cluster.password_user is None:
        pytest.skip("the sandbox has a second user only when started as root")
    first, second = both_users(cluster, tmp_path)
    root = f"/tmp/fabexec-deploy-{uuid.uuid4().hex}"
    made = on_every_host(cluster, lambda host: openssh(cluster, host, f"mkdir -m 755 {root}"))
    try:
        assert all(done.returncode == 0 for done in made.values()), made
        step = Deployment(second, remote_root=root, out=io.StringIO()).push()
    finally:
        remove_everywhere(cluster, root)
    assert set(step.failures()) == {"node1", "node2"}
    for host in ("node1", "node2"):
        assert f"{root} belongs to {cluster.user}, mode 755, which {cluster.password_user} " \
               "cannot write: give --remote-dir" in step.failures()[host]


@pytest.mark.timeout(DEPLOY_TIMEOUT + 30)
def test_inv_deploy_as_a_second_user_on_nodes_without_sftp_passes_every_step(
        cluster: sandbox.SandboxCluster, tmp_path: Path) -> None:
    """Issue 14's test: the session's nodes reached through sshd's without SFTP, as the
    second user, with --hostfile --user --key, after the first user deployed there."""
    if cluster.password_user is None:
        pytest.skip("the sandbox has a second user only when started as root")
    root = f"/tmp/fabexec-deploy-{uuid.uuid4().hex}"
    first = Deployment(Target.from_sandbox(cluster, NODES), remote_root=root, out=io.StringIO())
    try:
        assert first.push().failures() == {}
    finally:
        first.clean()
    with ExitStack() as daemons:
        blocks = []
        for host in cluster.hosts:
            ip, port = daemons.enter_context(second_sshd(cluster, host, ""))
            blocks.append(f"Host {host}\n    HostName {ip}\n    Port {port}\n"
                          f"    UserKnownHostsFile {tmp_path / 'known_hosts'}\n"
                          "    StrictHostKeyChecking no\n")
        (tmp_path / "ssh_config").write_text("\n".join(blocks))
        ips = [cluster.addresses[host][0] for host in cluster.hosts]
        done = subprocess.run(
            [sys.executable, "-m", "invoke", "--search-root", str(ROOT), "--collection",
             "tasks_deploy", "deploy", "--hostfile", str(cluster.hostfile), "--user",
             cluster.password_user, "--key", str(cluster.key), "--ssh-config",
             str(tmp_path / "ssh_config"), "--remote-dir", root, "--port", str(free_port(ips))],
            cwd=tmp_path, capture_output=True, text=True, timeout=DEPLOY_TIMEOUT)
    try:
        assert done.returncode == 0, done.stdout + done.stderr
        steps = ["push", "start", "ready", "mpi", "stop", "logs", "clean"]
        assert summary_rows(done.stdout) == {host: dict.fromkeys(steps, "OK")
                                             for host in cluster.hosts}
        assert on_every_host(cluster, lambda host: holds(cluster, host, root)) == \
            dict.fromkeys(cluster.hosts, [])
    finally:
        remove_everywhere(cluster, root)


# --------------------------------------------------------------------------- the service

@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple]:
    """A kvstore server on a free port of 127.0.0.1: (address, process, log, pidfile)."""
    port = free_port(["127.0.0.1"])
    log, pidfile = tmp_path / "kv.log", tmp_path / "kv.pid"
    proc = subprocess.Popen([sys.executable, str(KVSTORE / "kvstore.py"), "serve", "--bind",
                             "127.0.0.1", "--port", str(port), "--log", str(log),
                             "--pidfile", str(pidfile)])
    try:
        for _ in range(200):  # the PID file appears once the port is bound
            if pidfile.exists() or proc.poll() is not None:
                break
            time.sleep(0.05)
        assert pidfile.exists(), f"server did not start: {log.read_text() if log.exists() else ''}"
        yield ("127.0.0.1", port), proc, log, pidfile
    finally:
        proc.kill()
        proc.wait(10)


def test_concurrent_clients_each_read_back_their_own_keys(server: tuple) -> None:
    clients = [Client(server[0]) for _ in range(16)]  # all connected at once

    def work(index: int) -> List[str]:
        answers = []
        for n in range(20):
            answers.append(clients[index].request(f"SET k{index}-{n} value {index} {n}"))
            answers.append(clients[index].request(f"GET k{index}-{n}"))
        return answers

    with ThreadPoolExecutor(len(clients)) as pool:
        answers = list(pool.map(work, range(len(clients))))
    for index, got in enumerate(answers):
        assert got == [answer for n in range(20) for answer in ("OK", f"VALUE value {index} {n}")]
    stats = clients[0].request("STATS")
    assert re.match(r"STATS keys=320 clients=16 connections=16 ", stats), stats
    for client in clients:
        client.close()


def test_protocol_errors_are_answered_and_the_connection_stays(server: tuple) -> None:
    client = Client(server[0])
    assert client.request("GET missing") == "NOT_FOUND"
    assert client.request("SET only-a-key").startswith("ERROR usage")
    assert client.request("FLY away").startswith("ERROR unknown request")
    assert client.request("PING") == "PONG"
    client.close()


def test_sigterm_stops_the_server_cleanly(server: tuple) -> None:
    _, proc, log, pidfile = server
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    assert not pidfile.exists()
    assert "SIGTERM: shutting down" in log.read_text()


def test_a_taken_port_fails_the_start_with_the_reason_in_the_log(server: tuple,
                                                                  tmp_path: Path) -> None:
    (ip, port), _, _, _ = server
    log = tmp_path / "second.log"
    second = subprocess.run([sys.executable, str(KVSTORE / "kvstore.py"), "serve", "--bind", ip,
                             "--port", str(port), "--log", str(log),
                             "--pidfile", str(tmp_path / "second.pid")],
                            capture_output=True, text=True, timeout=60)
    assert second.returncode == 1
    assert f"cannot serve on {ip}:{port}: Address already in use" in log.read_text()
    assert "Address already in use" in second.stderr


def test_a_rank_without_an_answer_says_so_and_exits_nonzero(tmp_path: Path) -> None:
    port = free_port(["127.0.0.1"])  # nobody listens there
    done = subprocess.run([sys.executable, str(KVSTORE / "rank_client.py"),
                           "--instances", f"127.0.0.1:{port},127.0.0.1:{port}"],
                          env={**os.environ, "OMPI_COMM_WORLD_RANK": "3"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert re.match(rf"rank 3 host \S+ -> instance 1 cannot talk to 127\.0\.0\.1:{port}",
                    done.stdout), done.stdout
