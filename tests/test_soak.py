"""Thirty seconds of the chaos soak (bench/soak.py) on 16 nodes: nothing may be lost;
and the chaos itself (`fabexec.sandbox.chaos`).

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

from fabexec import Exec, sandbox
from fabexec.sandbox.chaos import CRASH, FREEZE, THAW, Chaos
from tests.clusters import eventually, pssh_info
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


@pytest.mark.timeout(150)
def test_chaos_records_its_faults_and_thaws_what_it_froze(
        cluster: sandbox.SandboxCluster) -> None:
    """Frozen for longer than the test: only `Chaos.stop` thaws them."""
    chaos = Chaos(cluster, 90, every=(0.05, 0.1), freeze_for=(300, 300), crash_share=0.5,
                  max_frozen=2, seed=3)
    with chaos:
        assert eventually(lambda: chaos.counts()[FREEZE] == 2 and chaos.counts()[CRASH] > 0,
                          seconds=60)
    counts = chaos.counts()
    assert counts[FREEZE] == counts[THAW] == 2 and counts[CRASH] > 0
    assert set(cluster.status().values()) == {"running"}
    assert all(f.end >= f.start for f in chaos.faults)
    crash = next(f for f in chaos.faults if f.kind == CRASH)
    assert crash in chaos.hit(crash.host, crash.start, crash.end, CRASH)
    assert Exec("true", pssh_info(cluster)).exit_code == 0  # every node answers again
