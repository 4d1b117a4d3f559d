"""Project tasks: ``inv test``, ``inv lint``, ``inv bench``, ``inv cluster.*``, ``inv deploy``."""

import os
import shutil
import sys
from pathlib import Path

from invoke import Collection, Exit, task

from tasks_cluster import cluster
from tasks_deploy import deploy

ROOT = Path(__file__).parent


#: Debian packages the tests drive for real: sshd and sudo for the sandbox,
#: Open MPI beside the MPICH wheel. (docker/engine.sh installs the engine.)
TEST_PACKAGES = {"sshd": "openssh-server", "sudo": "sudo", "mpiexec.openmpi": "openmpi-bin",
                 "dshbak": "pdsh", "clubak": "clustershell",  # readers of --label colon
                 "scontrol": "slurm-client"}  # an oracle of Hostfile folding


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


@task(pre=[setup, lint],
      help={"k": "only tests matching this expression", "x": "stop at the first failure"})
def test(c, k="", x=False):
    """The whole suite, on real sshd daemons and a real MPICH."""
    args = ["-q", "-ra"] + (["-k", k] if k else []) + (["-x"] if x else [])
    c.run(f"{sys.executable} -m pytest {' '.join(args)}", pty=False)


@task(help={"name": "one benchmark (a file of bench/ without .py); all when empty"})
def bench(c, name=""):
    """Run the benchmarks; each prints its figures and ratios against its baseline."""
    scripts = [ROOT / "bench" / f"{name}.py"] if name else sorted((ROOT / "bench").glob("*.py"))
    failed = []
    for script in scripts:
        print(f"\n== {script.stem}", flush=True)
        if c.run(f"{sys.executable} {script}", pty=False, warn=True).failed:
            failed.append(script.stem)
    if failed:
        raise Exit(f"benchmarks that could not finish: {', '.join(failed)}", code=1)


ns = Collection(setup, lint, test, bench)
ns.add_collection(cluster)
ns.add_task(deploy)
