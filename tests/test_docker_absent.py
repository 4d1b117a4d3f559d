"""Where no docker cluster can run, its tests skip with the reason, except in CI, where
they fail: CI's setup installs the engine, so its absence there is a broken test bed.

Each test runs one docker test in a child pytest, with ``DOCKER_HOST`` naming an engine
that cannot be used here (see `tests.fixtures_docker.unavailable_reason`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NO_ENGINE = "tcp://127.0.0.1:1"


def one_docker_test(ci: bool) -> subprocess.CompletedProcess:
    environ = {key: value for key, value in os.environ.items() if key != "CI"}
    environ.update(DOCKER_HOST=NO_ENGINE, PYTHONPATH=str(ROOT), **({"CI": "true"} if ci else {}))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-m", "docker",
         "tests/test_docker_cluster.py::test_login_user_is_not_root_and_has_passwordless_sudo"],
        cwd=ROOT, env=environ, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("ci", [False, True], ids=["outside-ci", "ci"])
def test_a_missing_docker_cluster_skips_with_its_reason_outside_ci_and_fails_in_ci(
        ci: bool) -> None:
    done = one_docker_test(ci)
    outcome = "1 error" if ci else "1 skipped"  # a fixture that fails errs its test
    assert outcome in done.stdout, done.stdout + done.stderr
    assert done.returncode == (1 if ci else 0)
    assert f"DOCKER_HOST={NO_ENGINE}" in done.stdout, done.stdout
