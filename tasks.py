"""Project tasks: ``inv test``, ``inv lint``, ``inv bench``, ``inv cluster.*``, ``inv deploy``."""

import configparser
import os
import re
import shlex
import shutil
import sys
from pathlib import Path
from typing import List

from invoke import Collection, Exit, task

from tasks_cluster import cluster
from tasks_deploy import deploy

ROOT = Path(__file__).parent


#: Debian packages the tests drive for real: sshd and sudo for the sandbox,
#: Open MPI beside the MPICH wheel. (docker/engine.sh installs the engine.)
TEST_PACKAGES = {"sshd": "openssh-server", "sudo": "sudo", "mpiexec.openmpi": "openmpi-bin",
                 "dshbak": "pdsh", "clubak": "clustershell",  # readers of --label colon
                 "scontrol": "slurm-client",  # an oracle of Hostfile folding
                 "/usr/bin/python3": "python3"}  # the tree tests' gateways: Python, no fabexec


@task
def setup(c):
    """Install what the tests need (as root on Debian) and start a docker engine."""
    missing = [pkg for tool, pkg in TEST_PACKAGES.items()
               if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists()]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        c.run("apt-get update -qq", env=env)
        c.run(f"apt-get install -y -qq --no-install-recommends {' '.join(missing)}", env=env)
    elif missing:
        print(f"missing {', '.join(missing)}: install them (apt-get install) or their tests skip")
    c.run(f"bash {ROOT / 'docker' / 'engine.sh'}")


@task
def lint(c):
    """ruff over the package, tests, benchmarks and tasks."""
    c.run("ruff check fabexec tests bench examples tasks.py tasks_cluster.py tasks_deploy.py",
          pty=False)


#: A virtualenv holding the oldest fabric, invoke and paramiko setup.cfg allows.
OLDEST_VENV = ROOT / ".venv-oldest"

#: What runs on the oldest versions, within about two minutes: the seams
#: themselves (with a keepalive answered) and the tests of every module that uses
#: one (fabexec/seams.py); test_transfer's frozen host is the keepalives' end to end.
OLDEST_TESTS = [
    "tests/test_seams.py", "tests/test_ssh.py", "tests/test_pssh.py", "tests/test_ssh_faults.py",
    "tests/test_hostkeys.py", "tests/test_hostkeys_index.py", "tests/test_sshconfig.py",
    "tests/test_ciphers.py", "tests/test_identities.py", "tests/test_connection_cache.py",
    "tests/test_config.py", "tests/test_local.py", "tests/test_kill.py", "tests/test_transfer.py",
]

#: Test extras that tests of OLDEST_TESTS do not need.
NOT_FOR_OLDEST = {"ruff", "mpich"}


def _setup_cfg() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return config


def oldest_requirements() -> List[str]:
    """``name==X`` for each ``name>=X`` of install_requires, then the test extras."""
    config = _setup_cfg()
    floors = [f"{name}=={version}" for name, version in re.findall(
        r"^([\w.-]+)>=([\w.]+)", config["options"]["install_requires"], re.M)]
    extras = [r for r in config["options.extras_require"]["test"].split()
              if re.split(r"[<>=!]", r)[0] not in NOT_FOR_OLDEST]
    return floors + extras


@task(help={"x": "stop at the first failure"})
def oldest(c, x=False):
    """The seams' tests on the oldest fabric, invoke and paramiko that setup.cfg allows.

    The virtualenv (.venv-oldest) is made again only when those versions change.
    """
    python = OLDEST_VENV / "bin" / "python"
    wanted = "\n".join(oldest_requirements())
    stamp = OLDEST_VENV / "requirements.txt"
    if not (python.exists() and stamp.exists() and stamp.read_text() == wanted):
        shutil.rmtree(OLDEST_VENV, ignore_errors=True)
        c.run(f"{sys.executable} -m venv {OLDEST_VENV}")
        c.run(f"{python} -m pip install -q {' '.join(map(shlex.quote, wanted.split()))}")
        c.run(f"{python} -m pip install -q --no-deps -e {ROOT}")
        stamp.write_text(wanted)
    print(f"oldest versions: {', '.join(r for r in wanted.split() if '==' in r)}", flush=True)
    args = ["-q", "-ra", "-m", "'not docker'"] + (["-x"] if x else []) + OLDEST_TESTS
    with c.cd(str(ROOT)):
        c.run(f"{python} -m pytest {' '.join(args)}", pty=False)


@task(pre=[setup, lint], default=True,
      help={"k": "only tests matching this expression (then the oldest versions do not run)",
            "x": "stop at the first failure",
            "oldest-versions": "also run the seams' tests on the oldest versions (default)"})
def test(c, k="", x=False, oldest_versions=True):
    """The whole suite, on real sshd daemons and a real MPICH; then the oldest versions."""
    args = ["-q", "-ra"] + (["-k", k] if k else []) + (["-x"] if x else [])
    c.run(f"{sys.executable} -m pytest {' '.join(args)}", pty=False)
    if oldest_versions and not k:
        oldest(c, x=x)


#: Scripts of bench/ that `inv bench` leaves to a task of their own.
NOT_BENCHMARKS = {"soak"}


@task(help={"name": "one benchmark (a file of bench/ without .py); all when empty"})
def bench(c, name=""):
    """Run the benchmarks; each prints its figures and ratios against its baseline."""
    scripts = [ROOT / "bench" / f"{name}.py"] if name else sorted(
        path for path in (ROOT / "bench").glob("*.py") if path.stem not in NOT_BENCHMARKS)
    failed = []
    for script in scripts:
        print(f"\n== {script.stem}", flush=True)
        if c.run(f"{sys.executable} {script}", pty=False, warn=True).failed:
            failed.append(script.stem)
    if failed:
        raise Exit(f"benchmarks that could not finish: {', '.join(failed)}", code=1)


@task(help={"minutes": "how long nodes freeze and crash while calls run",
            "hosts": "sandbox nodes", "seed": "repeat a soak's random choices"})
def soak(c, minutes=3.0, hosts=64, seed=None):
    """Chaos soak (root): commands and copies while nodes freeze and crash; fails on any loss."""
    line = [sys.executable, str(ROOT / "bench" / "soak.py"), "--minutes", str(minutes),
            "--hosts", str(hosts), *(["--seed", str(seed)] if seed is not None else [])]
    if c.run(shlex.join(line), pty=False, warn=True).failed:
        raise Exit("the soak lost something (see LOST above)", code=1)


ns = Collection(setup, lint, bench, soak)
ns.add_collection(Collection("test", test, oldest))
ns.add_collection(cluster)
ns.add_task(deploy)
