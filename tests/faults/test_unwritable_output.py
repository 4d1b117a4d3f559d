"""Output that cannot be written: an error naming the file and the host.

``/dev/full`` answers every write with ENOSPC, as a full disk does. Each command prints,
then sleeps far longer than any test may take: it returns only if the write error ended
it, and ``pgrep`` proves that nothing of it is left. A device is never handed to a
local command, so that its errors stay fabexec's to meet; a regular file on a full
disk is (see fabexec/tee.py): the command meets ENOSPC itself, as under ``> file``,
and fabexec names the file once the command failed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fabexec import Exec, LocalExecInfo, OutputWriteError
from fabexec.sandbox import Cluster
from tests.clusters import only_on, pssh_info, ssh_info
from tests.proctree import sleeping

FULL = "/dev/full"


def assert_ended_by_write_error(node: Exec, host: str, path: str, tag: str) -> None:
    error = node.errors[host]
    assert isinstance(error, OutputWriteError)
    assert error.host == host and error.path == path
    assert path in str(error) and host in str(error)
    assert node.exit_codes[host] != 0
    assert sleeping(tag) == [], "the command outlived its output's write error"


def test_local_output_to_a_full_disk_ends_the_command(tag: str) -> None:
    node = Exec(f"echo hello; sleep {tag}", LocalExecInfo(pipe_stdout=FULL, hide_output=True))
    assert_ended_by_write_error(node, "localhost", FULL, tag)


def test_local_output_to_a_full_device_goes_through_fabexec_not_to_the_command(
    tmp_path: Path,
) -> None:
    """The very case in which a regular file is handed over: /dev/full is not."""
    err = tmp_path / "err.log"
    node = Exec("readlink /proc/$$/fd/1 >&2; echo hello",
                LocalExecInfo(pipe_stdout=FULL, pipe_stderr=err, hide_output=True))
    assert err.read_text().startswith("pipe:")
    assert isinstance(node.errors["localhost"], OutputWriteError)


#: Run by `on_a_full_disk` in a mount namespace of its own, where FOLDER is a 64 KiB tmpfs.
FULL_DISK_CALLER = """
import json, sys
from fabexec import Exec, LocalExecInfo
path, err = sys.argv[1:]
node = Exec("readlink /proc/$$/fd/1 >&2; echo hello; head -c 1M /dev/zero",
            LocalExecInfo(pipe_stdout=path, pipe_stderr=err, hide_output=True))
error = node.errors.get("localhost")
print(json.dumps({"exit_code": node.exit_code, "error": type(error).__name__,
                  "host": getattr(error, "host", None), "path": getattr(error, "path", None),
                  "message": str(error)}))
"""


def on_a_full_disk(folder: Path, script: str, *args: str) -> dict:
    """``script``'s JSON, run where ``folder`` is a fresh 64 KiB tmpfs (in a mount
    namespace of its own: the machine's mounts never change, and the tmpfs goes with it)."""
    folder.mkdir()
    unshare = ["unshare", "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        unshare.append("--map-root-user")
    if subprocess.run([*unshare, "true"], capture_output=True, timeout=30,
                      check=False).returncode != 0:
        pytest.skip("no mount namespace here (unshare --mount refused)")
    shell = 'mount -t tmpfs -o size=64k tmpfs "$0" && exec "$@"'
    done = subprocess.run(
        [*unshare, "sh", "-c", shell, str(folder), sys.executable, "-c", script, *args],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_local_output_handed_over_to_a_full_disk_names_file_and_host(tmp_path: Path) -> None:
    path, err = tmp_path / "small" / "out.log", tmp_path / "err.log"
    result = on_a_full_disk(tmp_path / "small", FULL_DISK_CALLER, str(path), str(err))
    assert err.read_text().startswith(f"{path}\n"), "the file was not handed over"
    assert "No space left on device" in err.read_text(), "the command did not meet ENOSPC"
    assert (result["error"], result["host"], result["path"]) == \
        ("OutputWriteError", "localhost", str(path))
    assert str(path) in result["message"] and "localhost" in result["message"]
    assert result["exit_code"] == 1  # head's own status, kept


def test_remote_output_to_a_full_disk_ends_the_command(cluster: Cluster, tag: str) -> None:
    host = cluster.hosts[0]
    node = Exec(f"echo hello; sleep {tag}", ssh_info(cluster, host, pipe_stdout=FULL))
    assert_ended_by_write_error(node, host, FULL, tag)


def test_one_hosts_full_disk_spares_the_other_hosts_files(cluster: Cluster, tag: str,
                                                          tmp_path: Path) -> None:
    """Only the failing host's command is ended: its collected output stops where the
    others' go on (only its command sleeps, far longer than the test may take)."""
    full_host, *others = cluster.hosts[:3]
    (tmp_path / f"{full_host}.out").symlink_to(FULL)
    node = Exec(f"echo first; if {only_on(cluster, full_host)}; then sleep {tag}; fi; echo last",
                pssh_info(cluster, hosts=[full_host, *others],
                          pipe_stdout=tmp_path / "{host}.out"))
    assert_ended_by_write_error(node, full_host, str(tmp_path / f"{full_host}.out"), tag)
    assert node.stdout[full_host] == "first\n", "the failing host's command was not ended"
    assert {h: (tmp_path / f"{h}.out").read_text() for h in others} == \
        {h: "first\nlast\n" for h in others}
    assert {h: node.exit_codes[h] for h in others} == {h: 0 for h in others}
    assert list(node.errors) == [full_host]
