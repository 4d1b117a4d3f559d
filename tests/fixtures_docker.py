"""pytest plugin: the docker-compose cluster of sshd nodes, seen as a `Cluster`.

Loaded through ``pytest_plugins`` in a conftest (not ``-p``: pytest-docker's own
fixtures, registered after a ``-p`` plugin, would win over these). It wires
pytest-docker to docker/docker-compose.yml and hands tests the same
`fabexec.sandbox.Cluster` the sandbox gives, so one SSH test can run on either.
docker/engine.sh starts an engine and builds the image; where no engine answers or
the image is missing, ``docker_cluster`` skips and says why, since a machine
without docker is not a failure of fabexec; in CI (``CI=true``), whose setup installs
the engine (README), it fails instead, so that the docker runs cannot vanish unseen.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Dict, List, NoReturn, Optional, Tuple

import pytest

from fabexec.sandbox import Cluster

DOCKER_DIR = Path(__file__).resolve().parent.parent / "docker"
COMPOSE_FILE = DOCKER_DIR / "docker-compose.yml"
CLIENT_KEY = DOCKER_DIR / ".build" / "id_ed25519"  # made by docker/engine.sh
NODE_IMAGE = "fabexec/node:bookworm"  # built by docker/engine.sh, run by the compose file
KEY_LABEL = "org.fabexec.authorized-key"  # the public key the image trusts
USER = "fabexec"
LOOPBACK = "127.0.0.1"  # the compose file publishes every node's sshd here only
SSHD_WAIT = 60.0  # seconds for every node's sshd to answer after `up`
REBUILD = "run docker/engine.sh to start an engine and build it"


def _docker(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=60, check=False
    )


def unavailable_reason() -> Optional[str]:
    """Why the docker cluster cannot run here, or None when it can."""
    host = os.environ.get("DOCKER_HOST", "")
    if host and not host.startswith("unix://"):
        return f"DOCKER_HOST={host}: published ports would not be on this machine's loopback"
    missing = [tool for tool in ("docker", "docker-compose") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not installed; {REBUILD}"
    info = _docker("info")
    if info.returncode != 0:
        last = (info.stderr.strip().splitlines() or ["no output"])[-1]
        return f"no docker engine answers ({last}); {REBUILD}"
    label = _docker("image", "inspect", "-f", f'{{{{index .Config.Labels "{KEY_LABEL}"}}}}',
                    NODE_IMAGE)
    if label.returncode != 0:
        return f"image {NODE_IMAGE} is absent; {REBUILD}"
    public = CLIENT_KEY.with_suffix(".pub")
    if not public.is_file() or label.stdout.strip() != public.read_text().strip():
        return f"image {NODE_IMAGE} does not trust {CLIENT_KEY}; {REBUILD}"
    return None


def absent(reason: str) -> NoReturn:
    """Skip the docker tests, saying why; fail them in CI, where the engine must be."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true, yet the docker cluster cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_compose_command() -> str:
    """Debian packages Compose v1 (`docker-compose`), not the v2 `docker compose` plugin."""
    return "docker-compose"


@pytest.fixture(scope="session")
def docker_compose_file() -> str:
    return str(COMPOSE_FILE)


@pytest.fixture(scope="session")
def docker_compose_project_name() -> str:
    """Fixed, so that `docker-compose -p fabexec-tests down` cleans up after a killed run."""
    return "fabexec-tests"


@pytest.fixture(scope="session")
def docker_setup() -> List[str]:
    """Fresh containers (new host keys, nothing left by an earlier run).

    Neither pytest-docker's ``--build`` (engine.sh builds, offline) nor ``--wait``
    (Compose v1 lacks it: `docker_cluster` waits for sshd itself).
    """
    return ["up -d --force-recreate"]


def _compose_services() -> List[str]:
    """The node names, from the compose file itself, in natural order (node2 before node10)."""
    out = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE_FILE), "config", "--services"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    return sorted(out.split(), key=lambda name: [int(part) if part.isdigit() else part
                                                 for part in re.split(r"(\d+)", name)])


def _scan_host_keys(alias: str, port: int) -> str:
    """The node's host keys as known_hosts lines, under its alias and ``[ip]:port``.

    Empty until sshd answers: docker-proxy accepts the TCP connection before that.
    """
    scan = subprocess.run(
        ["ssh-keyscan", "-T", "5", "-p", str(port), LOOPBACK],
        capture_output=True, text=True, timeout=30, check=False,
    )
    lines = [line.split(None, 1) for line in scan.stdout.splitlines()
             if line.strip() and not line.startswith("#")]
    return "".join(f"{alias},{name} {key}\n" for name, key in lines)


def _wait_for_host_keys(addresses: Dict[str, Tuple[str, int]]) -> str:
    """known_hosts text for every node, once every sshd answers (bounded by SSHD_WAIT)."""
    deadline = time.monotonic() + SSHD_WAIT
    found: Dict[str, str] = {}
    for _ in range(int(SSHD_WAIT * 4)):  # bounded in count as well as in time
        for alias, (_, port) in addresses.items():
            if alias not in found:
                found[alias] = _scan_host_keys(alias, port)
        found = {alias: lines for alias, lines in found.items() if lines}
        if len(found) == len(addresses) or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    silent = sorted(set(addresses) - set(found))
    if silent:
        raise RuntimeError(f"sshd did not answer within {SSHD_WAIT:.0f} s on {', '.join(silent)}")
    return "".join(found[alias] for alias in addresses)


def _ssh_config_text(addresses: Dict[str, Tuple[str, int]], key: Path, known_hosts: Path) -> str:
    """OpenSSH client settings that reach each node by its alias, strictly checked."""
    blocks = []
    for alias, (ip, port) in addresses.items():
        blocks.append(
            f"Host {alias}\n"
            f"    HostName {ip}\n"
            f"    Port {port}\n"
            f"    User {USER}\n"
            f'    IdentityFile "{key}"\n'
            "    IdentitiesOnly yes\n"
            f'    UserKnownHostsFile "{known_hosts}"\n'
            "    GlobalKnownHostsFile /dev/null\n"
            "    StrictHostKeyChecking yes\n"
        )
    return "\n".join(blocks)


@pytest.fixture(scope="session")
def docker_cluster(request: pytest.FixtureRequest,
                   tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    """The compose nodes, up and answering SSH; skips where docker cannot run."""
    reason = unavailable_reason()
    if reason:
        absent(reason)
    services = request.getfixturevalue("docker_services")  # `up` now, `down -v` at session end
    hosts = _compose_services()
    addresses = {alias: (LOOPBACK, services.port_for(alias, 22)) for alias in hosts}
    state = tmp_path_factory.mktemp("docker-cluster")
    key = state / "id_ed25519"
    shutil.copyfile(CLIENT_KEY, key)
    key.chmod(0o600)
    known_hosts = state / "known_hosts"
    known_hosts.write_text(_wait_for_host_keys(addresses))
    ssh_config = state / "ssh_config"
    ssh_config.write_text(_ssh_config_text(addresses, key, known_hosts))
    hostfile = state / "hostfile"
    hostfile.write_text("".join(f"{alias}\n" for alias in hosts))
    return Cluster(state_dir=state, hosts=hosts, addresses=addresses, user=USER, key=key,
                   hostfile=hostfile, ssh_config=ssh_config, known_hosts=known_hosts,
                   own_hostnames=True, own_folders=True, own_processes=True, sudo=True)
