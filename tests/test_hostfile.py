"""Hostfile syntax, errors and operations, one behaviour per test."""

from __future__ import annotations

import os
import random
import re
import shutil
import socket
import subprocess
from typing import List

import pytest

from fabexec.errors import HostfileError, HostLookupError
from fabexec.hostfile import MAX_HOSTS, Hostfile, expand, fold

UNRESOLVABLE = "no-such-host.invalid"  # .invalid never resolves (RFC 2606)


def hosts_of(text: str) -> list:
    return Hostfile(text=text).hosts


def error_of(text: str) -> HostfileError:
    with pytest.raises(HostfileError) as caught:
        Hostfile(text=text)
    return caught.value


# ---- syntax ---------------------------------------------------------------


def test_one_host_per_line():
    assert hosts_of("a\nb\nc\n") == ["a", "b", "c"]


def test_blank_lines_are_ignored():
    assert hosts_of("\n\na\n   \n\tb\n\n") == ["a", "b"]


def test_full_line_comments_are_ignored():
    assert hosts_of("# the rack\na\n  # indented comment\nb") == ["a", "b"]


def test_trailing_comment_is_ignored():
    assert hosts_of("a # head node\nb#compute") == ["a", "b"]


def test_surrounding_whitespace_is_stripped():
    assert hosts_of("  a  \n\tb\t") == ["a", "b"]


def test_commas_separate_hosts_on_one_line():
    assert hosts_of("a,b, c") == ["a", "b", "c"]


def test_duplicate_hosts_are_kept_in_order():
    assert hosts_of("a\nb\na") == ["a", "b", "a"]


def test_range_expands_in_order():
    assert hosts_of("node-[1-3]") == ["node-1", "node-2", "node-3"]


def test_zero_padding_kept_when_both_ends_same_width():
    assert hosts_of("n[01-04]") == ["n01", "n02", "n03", "n04"]


def test_padding_dropped_when_ends_differ_in_width():
    assert hosts_of("n[8-10]") == ["n8", "n9", "n10"]


def test_single_padded_number_keeps_its_padding():
    assert hosts_of("n[007]") == ["n007"]


def test_numbers_and_ranges_mix_in_one_bracket():
    assert hosts_of("n[01-02,7,10-11]") == ["n01", "n02", "n7", "n10", "n11"]


def test_text_after_a_bracket_is_kept():
    assert hosts_of("node-[1-2]-ib") == ["node-1-ib", "node-2-ib"]


def test_several_brackets_expand_to_their_product_in_order():
    assert hosts_of("r[1-2]n[3-4]") == ["r1n3", "r1n4", "r2n3", "r2n4"]


def test_commas_inside_brackets_do_not_split_hosts():
    assert hosts_of("n[1,3],login") == ["n1", "n3", "login"]


def test_colon_slots_are_kept():
    assert Hostfile(text="a:4\nb").slots == {"a": 4, "b": None}


def test_slots_keyword_is_kept():
    assert Hostfile(text="a slots=8").slots == {"a": 8}


def test_slots_of_a_range_apply_to_every_host():
    assert Hostfile(text="n[1-2]:4").slots == {"n1": 4, "n2": 4}


def test_slots_of_each_comma_separated_host_are_its_own():
    assert Hostfile(text="a:2,b slots=3,c").slots == {"a": 2, "b": 3, "c": None}


def test_slots_do_not_appear_in_host_names():
    assert hosts_of("a:4\nb slots=2") == ["a", "b"]


def test_ipv4_address_is_a_valid_host():
    assert hosts_of("192.168.1.10:2") == ["192.168.1.10"]


def test_ipv6_literal_is_a_valid_host():
    assert Hostfile(text="::1 slots=2").slots == {"::1": 2}


def test_underscore_and_dot_are_valid_in_host_names():
    assert hosts_of("my_node.cluster.local") == ["my_node.cluster.local"]


def test_range_of_exactly_max_hosts_is_allowed():
    assert len(Hostfile(text=f"n[1-{MAX_HOSTS}]")) == MAX_HOSTS


def test_hundred_thousand_lines_are_all_read():
    text = "\n".join(f"node{i:06d}:2  # rack {i // 40}" for i in range(100_000))
    hostfile = Hostfile(text=text)
    assert (len(hostfile), hostfile[-1], hostfile.slots["node099999"]) == (
        100_000, "node099999", 2)


# ---- syntax errors ------------------------------------------------------


def test_unclosed_bracket_is_an_error():
    assert "'[' without a matching ']'" in str(error_of("n[1-3"))


def test_closing_bracket_without_opening_is_an_error():
    assert "']' without a matching '['" in str(error_of("n1-3]"))


def test_nested_brackets_are_an_error():
    assert "nested" in str(error_of("n[[1-2]]"))


def test_reversed_range_is_an_error():
    assert "'5-2' is reversed" in str(error_of("n[5-2]"))


def test_empty_brackets_are_an_error():
    assert "empty range" in str(error_of("n[]"))


def test_empty_item_in_brackets_is_an_error():
    assert "empty range item" in str(error_of("n[1,,3]"))


def test_open_ended_range_is_an_error():
    assert "'1-' is not numeric" in str(error_of("n[1-]"))


def test_non_numeric_range_is_an_error():
    assert "'a-c' is not numeric" in str(error_of("n[a-c]"))


def test_zero_slots_is_an_error():
    assert "not '0'" in str(error_of("n:0"))


def test_non_numeric_slots_is_an_error():
    assert "not 'x'" in str(error_of("n:x"))


def test_negative_slots_keyword_is_an_error():
    assert "not '-1'" in str(error_of("n slots=-1"))


def test_empty_slots_is_an_error():
    assert "not ''" in str(error_of("n:"))


def test_slots_given_twice_is_an_error():
    assert "slots given twice" in str(error_of("n:2 slots=2"))


def test_unknown_keyword_after_host_is_an_error():
    assert "unexpected 'max_slots=4'" in str(error_of("n slots=2 max_slots=4"))


def test_hosts_separated_by_spaces_are_an_error():
    assert "unexpected 'b'" in str(error_of("a b"))


def test_invalid_character_in_host_name_is_an_error():
    assert "invalid character '@'" in str(error_of("me@node1"))


def test_invalid_character_next_to_a_range_is_an_error():
    assert "invalid character '*'" in str(error_of("n[1-2]*"))


def test_host_name_starting_with_dash_is_an_error():
    assert "must start with" in str(error_of("-oProxyCommand"))


def test_stray_comma_is_an_error():
    assert "stray comma" in str(error_of("a,,b"))


def test_trailing_comma_is_an_error():
    assert "stray comma" in str(error_of("a,b,"))


def test_slots_without_host_name_are_an_error():
    assert "missing host name" in str(error_of(":4"))


def test_malformed_ipv6_address_is_an_error():
    assert "not a valid IPv6 address" in str(error_of("fe80::1::2"))


def test_range_beyond_max_hosts_is_an_error():
    assert f"more than {MAX_HOSTS} hosts" in str(error_of(f"n[1-{MAX_HOSTS + 1}]"))


def test_product_beyond_max_hosts_is_an_error():
    assert f"more than {MAX_HOSTS} hosts" in str(error_of("r[1-1000]n[1-1000]"))


def test_huge_range_fails_without_expanding_it():
    assert f"more than {MAX_HOSTS} hosts" in str(error_of("n[1-999999999999]"))


def test_error_carries_the_offending_text():
    assert error_of("good\nn[5-2]:4").text == "n[5-2]:4"


def test_error_line_counts_blank_and_comment_lines():
    assert error_of("# header\n\ngood\nbad$").line == 4


def test_error_names_the_file_and_line(tmp_path):
    path = tmp_path / "hosts"
    path.write_text("a\n# c\nn[2-1]\n")
    with pytest.raises(HostfileError) as caught:
        Hostfile(path=path)
    assert str(caught.value).startswith(f"{path}, line 3: 'n[2-1]': ")


def test_inline_text_error_has_no_path():
    assert error_of("bad$").path is None


def test_missing_file_error_names_the_path(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(HostfileError, match="hostfile not found") as caught:
        Hostfile(path=missing)
    assert caught.value.path == str(missing)


def test_folder_given_as_hostfile_is_an_error(tmp_path):
    with pytest.raises(HostfileError, match="cannot read hostfile"):
        Hostfile(path=tmp_path)


def test_binary_file_is_an_error(tmp_path):
    path = tmp_path / "hosts"
    path.write_bytes(b"node1\n\xff\xfe\n")
    with pytest.raises(HostfileError, match="not a UTF-8 text file"):
        Hostfile(path=path)


def test_error_in_all_hosts_names_the_entry():
    with pytest.raises(HostfileError) as caught:
        Hostfile(all_hosts=["ok", "n[3-1]"])
    assert (caught.value.text, caught.value.line) == ("n[3-1]", None)


def test_non_string_host_is_an_error():
    with pytest.raises(HostfileError, match="must be strings, not int"):
        Hostfile(all_hosts=["a", 7])


# ---- construction -------------------------------------------------------


def test_default_hostfile_is_localhost():
    assert Hostfile().hosts == ["localhost"]


def test_empty_text_gives_no_hosts():
    assert Hostfile(text="# nothing yet\n").hosts == []


def test_path_reads_a_file(tmp_path):
    path = tmp_path / "hosts"
    path.write_text("a\nb\n")
    assert Hostfile(path=str(path)).hosts == ["a", "b"]


def test_hostfile_keyword_is_the_older_name_for_path(tmp_path):
    path = tmp_path / "hosts"
    path.write_text("a\n")
    assert Hostfile(hostfile=path).path == str(path)


def test_hostfile_and_path_that_agree_are_accepted(tmp_path):
    path = tmp_path / "hosts"
    path.write_text("a\n")
    assert Hostfile(hostfile=path, path=str(path)).hosts == ["a"]


def test_hostfile_and_path_that_differ_are_an_error(tmp_path):
    with pytest.raises(HostfileError, match="disagree"):
        Hostfile(hostfile=tmp_path / "one", path=tmp_path / "two")


def test_path_starting_with_tilde_is_read_from_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "hosts").write_text("a\n")
    assert Hostfile(path="~/hosts").path == str(tmp_path / "hosts")


def test_two_sources_are_an_error():
    with pytest.raises(HostfileError, match="give only one of"):
        Hostfile(text="a", all_hosts=["b"])


def test_path_is_none_without_a_file():
    assert Hostfile(all_hosts=["a"]).path is None


def test_all_hosts_entries_may_hold_ranges():
    assert Hostfile(all_hosts=["node-[1-2]", "login"]).hosts == ["node-1", "node-2", "login"]


def test_all_hosts_may_be_one_comma_separated_expression():
    hosts = Hostfile(all_hosts="node[01-02,4],other").hosts
    assert hosts == ["node01", "node02", "node4", "other"]


def test_positional_arguments_follow_jarvis_util():
    assert Hostfile(None, ["a", "b"]).hosts == ["a", "b"]


def test_hosts_and_all_hosts_are_the_same_for_a_full_hostfile():
    hostfile = Hostfile(text="a\nb")
    assert hostfile.hosts == hostfile.all_hosts == ["a", "b"]


# ---- IP addresses -------------------------------------------------------


def test_unresolvable_host_builds_fine():
    assert Hostfile(all_hosts=[UNRESOLVABLE]).hosts == [UNRESOLVABLE]


def test_unresolvable_host_fails_when_its_ip_is_asked_for():
    hostfile = Hostfile(all_hosts=["localhost", UNRESOLVABLE])
    with pytest.raises(HostLookupError) as caught:
        hostfile.hosts_ip  # noqa: B018 - the lookup is the behaviour under test
    assert caught.value.text == UNRESOLVABLE and UNRESOLVABLE in str(caught.value)


def test_lookup_error_is_a_hostfile_error():
    with pytest.raises(HostfileError):
        Hostfile(all_hosts=[UNRESOLVABLE]).all_hosts_ip  # noqa: B018


def test_localhost_resolves_to_loopback():
    assert Hostfile().hosts_ip == ["127.0.0.1"]


def test_ipv6_literal_is_its_own_ip():
    assert Hostfile(all_hosts=["::1"]).hosts_ip == ["::1"]


def test_without_find_ips_the_ips_are_the_names():
    assert Hostfile(all_hosts=[UNRESOLVABLE], find_ips=False).hosts_ip == [UNRESOLVABLE]


def test_given_ips_are_used_without_lookup():
    hostfile = Hostfile(all_hosts=[UNRESOLVABLE], all_hosts_ip=["10.1.2.3"])
    assert hostfile.all_hosts_ip == ["10.1.2.3"]


def test_given_ips_must_match_the_number_of_hosts():
    with pytest.raises(HostfileError, match="1 entries for 2 hosts"):
        Hostfile(all_hosts=["a", "b"], all_hosts_ip=["10.1.2.3"])


def test_subset_looks_up_only_its_own_hosts():
    assert Hostfile(all_hosts=["localhost", UNRESOLVABLE]).subset(1).hosts_ip == ["127.0.0.1"]


def test_subset_of_given_ips_keeps_the_first_ips():
    hostfile = Hostfile(all_hosts=["a", "b"], all_hosts_ip=["10.0.0.1", "10.0.0.2"])
    assert hostfile.subset(1).hosts_ip == ["10.0.0.1"]


def test_ip_str_joins_the_ips():
    assert Hostfile(all_hosts=["localhost", "::1"]).ip_str(" ") == "127.0.0.1 ::1"


# ---- subset, copy, list -------------------------------------------------


def test_subset_keeps_the_first_hosts():
    assert Hostfile(text="a\nb\nc").subset(2).hosts == ["a", "b"]


def test_subset_remembers_all_hosts():
    assert Hostfile(text="a\nb\nc").subset(2).all_hosts == ["a", "b", "c"]


def test_subset_is_a_subset():
    assert Hostfile(text="a\nb").subset(1).is_subset()


def test_full_hostfile_is_not_a_subset():
    assert not Hostfile(text="a\nb").is_subset()


def test_subset_keeps_slots_of_its_hosts():
    assert Hostfile(text="a:2\nb:3").subset(1).slots == {"a": 2}


def test_subset_keeps_the_path(tmp_path):
    path = tmp_path / "hosts"
    path.write_text("a\nb\n")
    assert Hostfile(path=path).subset(1).path == str(path)


def test_subset_of_zero_hosts_is_an_error():
    with pytest.raises(HostfileError, match=r"subset\(0\): the count must be at least 1"):
        Hostfile(text="a\nb").subset(0)


def test_subset_larger_than_the_hostfile_holds_every_host():
    subset = Hostfile(text="a\nb").subset(3)  # as a slice, and jarvis-util, do
    assert subset.hosts == ["a", "b"] and not subset.is_subset()


def test_subset_of_a_non_number_is_an_error():
    with pytest.raises(HostfileError, match="takes a number of hosts"):
        Hostfile(text="a\nb").subset("1")


def test_copy_is_equal():
    hostfile = Hostfile(text="a:2\nb")
    assert hostfile.copy() == hostfile


def test_copy_is_independent():
    hostfile = Hostfile(text="a\nb")
    hostfile.copy().hosts.append("c")
    assert hostfile.hosts == ["a", "b"]


def test_copy_of_a_subset_is_a_subset():
    assert Hostfile(text="a\nb").subset(1).copy().is_subset()


def test_list_gives_one_hostfile_per_host():
    assert [h.hosts for h in Hostfile(text="a\nb").list()] == [["a"], ["b"]]


def test_list_keeps_each_hosts_slots():
    assert [h.slots for h in Hostfile(text="a:2\nb").list()] == [{"a": 2}, {"b": None}]


def test_list_hostfiles_are_full_hostfiles():
    assert not any(h.is_subset() for h in Hostfile(text="a\nb").subset(1).list())


def test_enumerate_pairs_index_and_single_host_hostfile():
    assert [(i, h.hosts) for i, h in Hostfile(text="a\nb").enumerate()] == [
        (0, ["a"]), (1, ["b"])]


# ---- save and load -----------------------------------------------------


def test_save_writes_one_host_per_line(tmp_path):
    Hostfile(all_hosts="n[1-3]").save(tmp_path / "hosts")
    assert (tmp_path / "hosts").read_text() == "n1\nn2\nn3\n"


def test_save_writes_slots_as_colon_suffix(tmp_path):
    Hostfile(text="a slots=4\nb").save(tmp_path / "hosts")
    assert (tmp_path / "hosts").read_text() == "a:4\nb\n"


def test_save_then_load_gives_the_same_hostfile(tmp_path):
    saved = Hostfile(text="# cluster\nr[1-2]n[01-02]:4, login slots=1\n::1\n")
    assert Hostfile(path=saved.save(tmp_path / "hosts").path) == saved


def test_save_returns_the_hostfile_with_its_new_path(tmp_path):
    hostfile = Hostfile(text="a")
    assert hostfile.save(tmp_path / "h").path == str(tmp_path / "h")


def test_save_returns_the_same_object(tmp_path):
    hostfile = Hostfile(text="a")
    assert hostfile.save(tmp_path / "h") is hostfile


def test_saved_subset_holds_only_its_hosts(tmp_path):
    Hostfile(text="a\nb\nc").subset(2).save(tmp_path / "hosts")
    assert Hostfile(path=tmp_path / "hosts").hosts == ["a", "b"]


def test_saved_subset_is_no_longer_a_subset(tmp_path):
    assert not Hostfile(text="a\nb").subset(1).save(tmp_path / "h").is_subset()


def test_save_into_missing_folder_is_an_error_naming_the_path(tmp_path):
    target = tmp_path / "missing" / "hosts"
    with pytest.raises(HostfileError, match="does not exist; create it first") as caught:
        Hostfile().save(target)
    assert caught.value.path == str(target)


def test_save_creates_no_folder(tmp_path):
    with pytest.raises(HostfileError):
        Hostfile().save(tmp_path / "missing" / "hosts")
    assert not (tmp_path / "missing").exists()


@pytest.mark.skipif(shutil.which("mpiexec") is None, reason="MPICH's mpiexec is not installed")
def test_saved_slots_are_read_by_mpich(tmp_path):
    path = Hostfile(all_hosts=["localhost:2"]).save(tmp_path / "hosts").path
    run = subprocess.run(
        ["mpiexec", "-f", path, "-n", "2", "echo", "rank"],
        capture_output=True, text=True, timeout=60,
    )
    assert (run.returncode, run.stdout.split()) == (0, ["rank", "rank"]), run.stderr


# ---- equality and Python protocols -------------------------------------


def test_equal_when_same_hosts_in_same_order():
    assert Hostfile(text="a\nb") == Hostfile(all_hosts=["a", "b"])


def test_not_equal_when_order_differs():
    assert Hostfile(text="a\nb") != Hostfile(text="b\na")


def test_not_equal_when_slots_differ():
    assert Hostfile(text="a:2") != Hostfile(text="a:4")


def test_subset_equals_hostfile_of_its_hosts():
    assert Hostfile(text="a\nb").subset(1) == Hostfile(text="a")


def test_compares_equal_to_a_list_of_names():
    assert Hostfile(text="a\nb") == ["a", "b"]


def test_not_equal_to_a_list_of_other_names():
    assert Hostfile(text="a\nb") != ["a"]


def test_len_counts_hosts():
    assert len(Hostfile(all_hosts="n[1-5]")) == 5


def test_index_gives_a_host_name():
    assert Hostfile(text="a\nb")[1] == "b"


def test_iteration_gives_host_names():
    assert list(Hostfile(text="a\nb")) == ["a", "b"]


def test_host_str_joins_with_separator():
    assert Hostfile(text="a\nb").host_str(" ") == "a b"


def test_str_is_the_comma_separated_hosts():
    assert str(Hostfile(text="a\nb")) == "a,b"


def test_repr_shows_count_subset_and_path(tmp_path):
    path = tmp_path / "hosts"
    path.write_text("a\nb\n")
    assert repr(Hostfile(path=path).subset(1)) == (
        f"<Hostfile 1 host(s): a, subset of 2, path={str(path)!r}>")


def test_repr_abbreviates_long_lists():
    assert repr(Hostfile(all_hosts="n[1-100]")) == "<Hostfile 100 host(s): n1, n2, n3, ..., n100>"


# ---- is_local -------------------------------------------------------------


def test_default_hostfile_is_local():
    assert Hostfile().is_local()


def test_loopback_addresses_are_local():
    assert Hostfile(all_hosts=["127.0.0.1", "::1", "LOCALHOST"]).is_local()


def test_this_machines_hostname_is_local():
    assert Hostfile(all_hosts=[socket.gethostname()]).is_local()


def test_other_loopback_addresses_are_not_local():
    # The sandbox's sshd daemons listen on 127.0.x.y: they must be reached by SSH.
    assert not Hostfile(all_hosts=["127.0.0.2"]).is_local()


def test_one_remote_host_makes_the_hostfile_not_local():
    assert not Hostfile(all_hosts=["localhost", "node1"]).is_local()


# ---- expand ----------------------------------------------------------------


def test_expand_gives_the_names_of_an_expression():
    assert expand("node[01-02],login") == ["node01", "node02", "login"]


def test_expand_drops_slot_counts():
    assert expand("n[1-2]:4") == ["n1", "n2"]


def test_expand_raises_on_a_syntax_error():
    with pytest.raises(HostfileError, match="reversed"):
        expand("n[3-1]")



# ---- fold -------------------------------------------------------------------


def test_fold_of_a_padded_range_up_to_its_widest_number_is_one_range():
    assert fold(expand("node[00001-10000]")) == "node[00001-10000]"


def test_fold_of_names_numbered_twice_is_their_product():
    assert fold(expand("rack[01-02]n[01-04]")) == "rack[01-02]n[01-04]"


def test_fold_of_a_product_with_a_hole_names_the_rest():
    hosts = [h for h in expand("rack[1-3]n[1-4]") if h != "rack3n4"]
    assert fold(hosts) == "rack[1-2]n[1-4],rack3n[1-3]"


def test_fold_lets_unpadded_numbers_continue_a_padded_run():
    assert fold(["node08", "node09", "node10", "node11", "node9"]) == "node[08-11,9]"


def test_fold_keeps_the_order_of_first_appearance_and_drops_repeats():
    assert fold(["login", "node2", "node1", "login", "gpu1", "node2"]) == "login,node[1-2],gpu1"


def test_fold_leaves_an_ipv6_literal_whole():
    assert fold(["fe80::1", "fe80::2"]) == "fe80::1,fe80::2"


def random_hosts(rng: random.Random) -> List[str]:
    """A few groups of names: padded or not, numbered once or twice, plain, repeated."""

    def numbers(width: int) -> List[int]:  # near a change of digit count, where padding bites
        top = 10 ** width if width else 300
        centre = rng.choice([0, top // 10, top // 2, top - 5]) if width else rng.randrange(top)
        low = max(0, centre - rng.randrange(15))
        return [n for n in range(low, low + rng.randrange(1, 30)) if rng.random() < 0.7]

    def spell(n: int, width: int) -> str:
        return str(n).zfill(width)

    hosts: List[str] = []
    for _ in range(rng.randint(1, 4)):
        kind = rng.choice(["one", "one", "two", "plain", "suffix"])
        if kind == "plain":
            hosts.append(rng.choice(["login", "head", "gpu-a"]))
        elif kind in ("one", "suffix"):
            width, tail = rng.choice([0, 0, 2, 3, 5]), ".ib" if kind == "suffix" else ""
            hosts += [f"node{spell(n, width)}{tail}" for n in numbers(width)]
        else:
            outer, inner = rng.choice([0, 2]), rng.choice([0, 2, 3])
            hosts += [f"rack{spell(r, outer)}n{spell(n, inner)}"
                      for r in numbers(outer)[:4] for n in numbers(inner) if rng.random() < 0.9]
    rng.shuffle(hosts)
    return hosts + hosts[:rng.randrange(3)]


def test_fold_is_as_short_as_clustershells_nodeset_and_names_the_same_hosts():
    """ClusterShell's NodeSet is the oracle: the same set of names, in no more characters."""
    nodeset = pytest.importorskip("ClusterShell.NodeSet", reason="pip install ClusterShell")
    checked = 0
    for seed in range(1500):
        hosts = random_hosts(random.Random(seed))
        if not hosts:
            continue
        ours, theirs = fold(hosts), str(nodeset.NodeSet.fromlist(hosts))
        assert sorted(expand(ours)) == sorted(set(hosts)), (seed, ours)
        assert len(ours) <= len(theirs), (seed, ours, theirs)
        checked += 1
    assert checked > 1000


#: A bracket with plain text after it and no bracket further on: Slurm's hostlists
#: (22.05) refuse it (``node[1-2].ib``, ``rack[1,3]n07``), fabexec and ClusterShell do not.
SLURM_REFUSES = re.compile(r"\][^\[\],]+(,|$)")


def test_fold_names_the_same_hosts_for_slurms_scontrol(tmp_path):
    """``scontrol show hostnames`` is the second oracle, on what Slurm's grammar takes."""
    if shutil.which("scontrol") is None:
        pytest.skip("scontrol is not installed (inv setup installs slurm-client)")
    conf = tmp_path / "slurm.conf"  # scontrol reads one before anything, even offline
    conf.write_text("ClusterName=fabexec\nSlurmctldHost=localhost\n")
    env = {**os.environ, "SLURM_CONF": str(conf)}
    checked = 0
    for seed in range(300):
        hosts = random_hosts(random.Random(seed))
        folded = fold(hosts) if hosts else ""
        if not hosts or SLURM_REFUSES.search(folded):
            continue
        shown = subprocess.run(["scontrol", "show", "hostnames", folded], env=env,
                               capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0, (seed, folded, shown.stderr)
        assert sorted(shown.stdout.split()) == sorted(set(hosts)), (seed, folded)
        checked += 1
    assert checked > 100
