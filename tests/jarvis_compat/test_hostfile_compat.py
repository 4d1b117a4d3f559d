"""jarvis-util's Hostfile habits: absolute paths, a clamped subset, assignable hosts.

Also what jarvis-util's own ``test_hostfile.py`` exercises (ranges, subsets,
reading and saving), checked with tests of our own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fabexec import Exec, Hostfile, HostfileError, MpiExecInfo
from fabexec.mpi import placement
from fabexec.mpi_flavors import Flavor
from fabexec.sandbox import SandboxCluster


def test_the_path_is_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "hosts").write_text("a\nb\n")
    monkeypatch.chdir(tmp_path)
    assert Hostfile(hostfile="hosts").path == str(tmp_path / "hosts")
    assert Hostfile(text="c").save("saved").path == str(tmp_path / "saved")


def test_a_subset_past_the_end_holds_every_host() -> None:
    assert Hostfile(text="a\nb").subset(5).hosts == ["a", "b"]


def test_hosts_can_be_assigned() -> None:
    hostfile = Hostfile(text="a:2\nb\nc", find_ips=False)
    hostfile.hosts = ["c", "a"]
    assert (hostfile.hosts, hostfile.all_hosts, hostfile.is_subset()) == (["c", "a"],
                                                                          ["a", "b", "c"], True)
    assert hostfile.slots == {"c": None, "a": 2} and hostfile.hosts_ip == ["c", "a"]


def test_assigned_hosts_keep_given_ips() -> None:
    hostfile = Hostfile(all_hosts=["a", "b"], all_hosts_ip=["10.0.0.1", "10.0.0.2"])
    hostfile.hosts = ["b"]
    assert hostfile.hosts_ip == ["10.0.0.2"]


def test_several_sources_at_once_are_refused() -> None:
    with pytest.raises(HostfileError, match="only one of"):
        Hostfile(text="a", all_hosts=["b"])


def test_ranges_subsets_and_saving(tmp_path: Path) -> None:
    hostfile = Hostfile(text="# rack\nn-[08-10]-ib\nlogin", find_ips=False)
    assert hostfile.hosts == ["n-08-ib", "n-09-ib", "n-10-ib", "login"]
    assert Hostfile(text="x[1-2]y[1-2]", find_ips=False).hosts == ["x1y1", "x1y2", "x2y1", "x2y2"]
    assert Hostfile(text="7", find_ips=False).hosts == ["7"]
    sub = hostfile.subset(2)
    assert sub.is_subset() and sub.hosts == ["n-08-ib", "n-09-ib"]
    saved = sub.save(tmp_path / "out")
    assert Hostfile(hostfile=tmp_path / "out", find_ips=False) == saved
    assert not saved.is_subset()


@pytest.mark.parametrize("flavor", list(Flavor))
def test_every_flavor_gets_an_absolute_hostfile(flavor: Flavor, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "hosts").write_text("node1\nnode2\n")
    monkeypatch.chdir(tmp_path)
    hostfile = Hostfile(hostfile="hosts")
    hostfile.path = "hosts"  # even one set by hand, as jarvis-util code may do
    assert placement(hostfile, flavor) == {"hostfile": str(tmp_path / "hosts")}


def test_a_relative_hostfile_with_a_cwd_runs(nodes: SandboxCluster, launcher: str,
                                             tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "hosts").write_text("node1\nnode2\n")
    monkeypatch.chdir(tmp_path)
    # Another folder, one the nodes' user may enter (Hydra gives it to the ranks).
    info = MpiExecInfo(nprocs=2, ppn=1, hostfile="hosts", cwd="/",
                       mpiexec=launcher, ssh_config=nodes.ssh_config, collect_output=True,
                       hide_output=True, timeout=60)
    node = Exec("hostname", info)
    assert node.exit_code == 0, node.stderr
    assert sorted(node.stdout["localhost"].split()) == ["node1", "node2"]
