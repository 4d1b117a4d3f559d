"""Project tasks: ``inv test``, ``inv lint``, ``inv bench``, ``inv cluster.*``, ``inv deploy``."""

import sys
from pathlib import Path

from invoke import Collection, task

ROOT = Path(__file__).parent


@task
def lint(c):
    """ruff over the package, tests, benchmarks and tasks."""
    c.run("ruff check fabexec tests bench examples tasks.py tasks_cluster.py", pty=False)


@task(help={"k": "only tests matching this expression", "x": "stop at the first failure"})
def test(c, k="", x=False):
    """The whole suite, on real sshd daemons and a real MPICH."""
    args = ["-q", "-ra"] + (["-k", k] if k else []) + (["-x"] if x else [])
    c.run(f"{sys.executable} -m pytest {' '.join(args)}", pty=False)


@task(help={"name": "one benchmark (a file of bench/ without .py); all when empty"})
def bench(c, name=""):
    """Run the benchmarks; each prints its figures and ratios against its baseline."""
    scripts = [ROOT / "bench" / f"{name}.py"] if name else sorted((ROOT / "bench").glob("*.py"))
    for script in scripts:
        print(f"\n== {script.stem}", flush=True)
        c.run(f"{sys.executable} {script}", pty=False)


ns = Collection(lint, test, bench)
