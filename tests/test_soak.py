"""Thirty seconds of the chaos soak (bench/soak.py) on 16 nodes: nothing may be lost.

The soak runs in a process of its own, so that the descriptors and threads it counts
are its own, with its sandbox beside this session's (``$FABEXEC_TEST_SANDBOX_DIR-soak``).
``inv soak`` runs the long version on 64 nodes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fabexec import sandbox
from tests.fixtures_sandbox import sandbox_state_dir

ROOT = Path(__file__).resolve().parent.parent
SOAK = ROOT / "bench" / "soak.py"


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_thirty_seconds_of_chaos_lose_nothing(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the soak reads each node's own files and processes: root only")
    state = Path(f"{sandbox_state_dir()}-soak")
    counts = tmp_path / "soak.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    try:
        done = subprocess.run(
            [sys.executable, str(SOAK), "--minutes", "0.5", "--hosts", "16", "--seed", "14",
             "--state-dir", str(state), "--json", str(counts)],
            capture_output=True, text=True, env=env, timeout=400, check=False)
    finally:
        sandbox.down(state)
    assert done.returncode == 0, done.stdout + done.stderr
    ledger = json.loads(counts.read_text())
    assert ledger["lost"] == []
    # It soaked: calls of every kind ran, faults hit, hosts failed, files were checked.
    assert set(ledger["calls"]) == {"exec", "put", "get", "async+kill", "timeout"}, ledger
    assert ledger["faults"]["freeze"] > 0 and ledger["faults"]["crash"] > 0, ledger
    assert ledger["results"]["as expected"] > 0 and ledger["errors"], ledger
    assert ledger["files"]["byte-exact"] > 0, ledger
