"""The protocol-only mode of a gateway (bench/tree.py): targets answered, none reached."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fabexec.frames import PROTOCOL, Parser, encode
from fabexec.gateway import ANSWER_ONLY

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(60)
def test_answer_only_job_answers_every_target_and_connects_to_none() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        targets = [f"t{i}" for i in range(3)]
        routes = "".join(f"Host {t}\n    HostName 127.0.0.1\n    Port {port}\n" for t in targets)
        job = encode({"kind": "job", "protocol": PROTOCOL, "cmd": "hostname",
                      "targets": targets, "settings": {"connect_timeout": 2},
                      "files": {"ssh_config": len(routes)}, ANSWER_ONLY: True},
                     routes.encode())
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        gateway = subprocess.run([sys.executable, "-m", "fabexec.gateway"], input=job,
                                 capture_output=True, env=env, timeout=50)
        frames = Parser().feed(gateway.stdout)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing ever knocked
    assert gateway.returncode == 0, gateway.stderr
    ends = [f.header for f in frames if f.kind == "end"]
    assert ends == [{"kind": "end", "h": i, "code": 0, "error": None} for i in range(3)]
    assert [f.kind for f in frames if f.kind != "end"] == ["done"]
