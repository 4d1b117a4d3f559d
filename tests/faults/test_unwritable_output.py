"""Output that cannot be written: an error naming the file and the host, the command ended.

``/dev/full`` answers every write with ENOSPC, as a full disk does. Each command prints,
then sleeps far longer than any test may take: it returns only if the write error ended
it, and ``pgrep`` proves that nothing of it is left.
"""

from __future__ import annotations

from pathlib import Path

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
