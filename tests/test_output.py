"""Where a local command's output goes: terminal, memory and files, in every combination.

Files get the exact bytes; memory and terminal get text decoded across chunk
boundaries, with U+FFFD for invalid bytes.
"""

from __future__ import annotations

import itertools
import os
import shlex
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import List, Optional

import pytest
from invoke import StreamWatcher
from invoke.exceptions import ThreadException

from fabexec import Exec, LocalExecInfo, OutputWriteError, PathNotFoundError
from fabexec.tee import Outputs, Tee, Wiring
from tests.proctree import eventually, sleeping

MIB = 1024 * 1024
BOTH_STREAMS = "printf 'to-out\\n'; printf 'to-err\\n' >&2"


def run(cmd: str, **info: object) -> Exec:
    return Exec(cmd, LocalExecInfo(**info))


# ---- every combination -----------------------------------------------------

COMBINATIONS = list(itertools.product([False, True], repeat=4))


@pytest.mark.parametrize(
    "collect, pipe_out, pipe_err, hide", COMBINATIONS,
    ids=["-".join(name for name, on in zip(("collect", "pipe_out", "pipe_err", "hide"), combo)
                  if on) or "none" for combo in COMBINATIONS],
)
def test_each_stream_reaches_exactly_the_sinks_asked_for(
    collect: bool, pipe_out: bool, pipe_err: bool, hide: bool,
    tmp_path: Path, capfd: pytest.CaptureFixture[str],
) -> None:
    out_file, err_file = tmp_path / "out.log", tmp_path / "err.log"
    node = run(BOTH_STREAMS, collect_output=collect, hide_output=hide,
               pipe_stdout=out_file if pipe_out else None,
               pipe_stderr=err_file if pipe_err else None)
    printed = capfd.readouterr()
    assert printed.out == ("" if hide else "to-out\n")
    assert printed.err == ("" if hide else "to-err\n")
    assert node.stdout == {"localhost": "to-out\n" if collect else ""}
    assert node.stderr == {"localhost": "to-err\n" if collect else ""}
    assert (out_file.read_bytes() if out_file.exists() else None) == (
        b"to-out\n" if pipe_out else None)
    assert (err_file.read_bytes() if err_file.exists() else None) == (
        b"to-err\n" if pipe_err else None)


def test_by_default_output_is_printed_live_and_not_collected(
    capfd: pytest.CaptureFixture[str],
) -> None:
    node = Exec(BOTH_STREAMS)
    assert capfd.readouterr() == ("to-out\n", "to-err\n")
    assert node.stdout == {"localhost": ""}
    assert node.stderr == {"localhost": ""}


def test_pipe_files_are_truncated_when_the_command_starts(tmp_path: Path) -> None:
    out = tmp_path / "out.log"
    out.write_bytes(b"an older and much longer log\n" * 100)
    run("printf new", pipe_stdout=out, hide_output=True)
    assert out.read_bytes() == b"new"


def test_pipe_paths_may_be_given_as_str(tmp_path: Path) -> None:
    run(BOTH_STREAMS, pipe_stdout=str(tmp_path / "o"), pipe_stderr=str(tmp_path / "e"),
        hide_output=True)
    assert (tmp_path / "o").read_bytes() == b"to-out\n"
    assert (tmp_path / "e").read_bytes() == b"to-err\n"


def test_stdout_and_stderr_piped_to_one_file_keep_every_byte(tmp_path: Path) -> None:
    log = tmp_path / "both.log"
    run("echo out-line-1; echo err-line >&2; echo out-line-2", pipe_stdout=log,
        pipe_stderr=log, hide_output=True)
    assert sorted(log.read_bytes().splitlines()) == [b"err-line", b"out-line-1", b"out-line-2"]


# ---- bytes and text --------------------------------------------------------

def test_random_binary_bytes_reach_the_file_byte_for_byte(tmp_path: Path) -> None:
    source, out = tmp_path / "random.bin", tmp_path / "out.bin"
    source.write_bytes(os.urandom(8 * MIB))
    run(f"cat {source}", pipe_stdout=out, hide_output=True)
    assert out.read_bytes() == source.read_bytes()


def test_collecting_and_printing_do_not_change_the_bytes_in_the_file(
    tmp_path: Path, capfd: pytest.CaptureFixture[str],
) -> None:
    source, out = tmp_path / "random.bin", tmp_path / "out.bin"
    source.write_bytes(os.urandom(MIB))
    run(f"cat {source}", pipe_stdout=out, collect_output=True)
    capfd.readouterr()
    assert out.read_bytes() == source.read_bytes()


def test_a_long_run_of_three_byte_characters_is_collected_exactly(tmp_path: Path) -> None:
    text = "€" * 1_000_000  # 3 MB: no read size divides it, so reads end mid-character
    (tmp_path / "euros.txt").write_text(text, encoding="utf-8")
    node = run("cat euros.txt", cwd=tmp_path, collect_output=True, hide_output=True)
    assert node.stdout["localhost"] == text


def test_mixed_width_characters_are_printed_whole(
    tmp_path: Path, capfd: pytest.CaptureFixture[str],
) -> None:
    text = "aé€😀" * 100_000 + "\n"  # 1-, 2-, 3- and 4-byte characters
    (tmp_path / "mixed.txt").write_text(text, encoding="utf-8")
    run("cat mixed.txt", cwd=tmp_path)
    assert capfd.readouterr().out == text


@pytest.mark.parametrize("cut", range(1, 4))
def test_a_character_cut_between_two_chunks_is_decoded_whole(cut: int) -> None:
    tee = Tee("localhost", collect=True)
    data = "x€y".encode()
    tee.write(data[:cut])
    tee.write(data[cut:])
    tee.close()
    assert tee.text == "x€y"


def test_invalid_utf8_becomes_replacement_characters_in_memory() -> None:
    node = run(r"printf 'ok\377\376ok\342\202'", collect_output=True, hide_output=True)
    assert node.stdout["localhost"] == "ok\ufffd\ufffdok\ufffd"


def test_invalid_utf8_reaches_the_file_unchanged(tmp_path: Path) -> None:
    out = tmp_path / "out.bin"
    run(r"printf 'ok\377\376ok\342\202'", pipe_stdout=out, collect_output=True,
        hide_output=True)
    assert out.read_bytes() == b"ok\xff\xfeok\xe2\x82"


def test_output_without_a_final_newline_is_kept_as_it_is(
    tmp_path: Path, capfd: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out.log"
    node = run("printf 'no newline'", pipe_stdout=out, collect_output=True)
    assert node.stdout["localhost"] == "no newline"
    assert out.read_bytes() == b"no newline"
    assert capfd.readouterr().out == "no newline"


def test_a_ten_mib_single_line_is_collected_and_written_whole(tmp_path: Path) -> None:
    out = tmp_path / "line.log"
    node = run("head -c 10M /dev/zero | tr '\\0' a; echo", pipe_stdout=out,
               collect_output=True, hide_output=True)
    line = "a" * (10 * MIB) + "\n"
    assert node.stdout["localhost"] == line
    assert out.read_bytes() == line.encode()


def test_the_output_file_is_written_while_the_command_runs(tmp_path: Path, tag: str) -> None:
    out = tmp_path / "live.log"
    node = run(f"echo first line\nsleep {tag}", pipe_stdout=out, hide_output=True,
               exec_async=True)
    try:
        assert eventually(lambda: out.read_bytes() == b"first line\n", seconds=30)
        assert not node.done
    finally:
        node.kill()


def test_the_terminal_shows_output_while_the_command_runs(
    tag: str, capfd: pytest.CaptureFixture[str],
) -> None:
    node = run(f"echo first line\nsleep {tag}", exec_async=True)
    printed: List[str] = []

    def shown() -> str:
        printed.append(capfd.readouterr().out)
        return "".join(printed)

    try:
        assert eventually(lambda: shown() == "first line\n", seconds=30)
        assert not node.done
    finally:
        node.kill()


# ---- a file handed to the command -------------------------------------------
# The command's own view of its stdout (/proc/$$/fd/1) tells a handed-over file
# (the file itself) from a pipe read by fabexec ("pipe:[...]").

OWN_STDOUT = "readlink /proc/$$/fd/1 >&2"


def test_the_command_sees_its_handed_over_file_as_its_stdout(tmp_path: Path) -> None:
    out = tmp_path / "out.log"
    node = run(OWN_STDOUT, pipe_stdout=out, pipe_stderr=tmp_path / "err.log", hide_output=True)
    assert node.exit_code == 0
    assert (tmp_path / "err.log").read_text() == f"{out}\n"


@pytest.mark.parametrize("wanted", ["collect_output", "printed"])
def test_a_file_whose_bytes_are_also_wanted_goes_through_fabexec(
    wanted: str, tmp_path: Path, capfd: pytest.CaptureFixture[str],
) -> None:
    out, err = tmp_path / "out.log", tmp_path / "err.log"
    run(f"echo hello\n{OWN_STDOUT}", pipe_stdout=out, pipe_stderr=err,
        collect_output=wanted == "collect_output", hide_output=wanted != "printed")
    assert capfd.readouterr().out == ("hello\n" if wanted == "printed" else "")
    assert out.read_bytes() == b"hello\n"
    assert err.read_text().startswith("pipe:")


def test_stdout_and_stderr_to_one_file_share_one_open_file_description(
    tmp_path: Path,
) -> None:
    """As ``> log 2>&1``: what stdout wrote moved stderr's offset too (``> log 2> log``
    would leave it at 0, and stderr would overwrite stdout's bytes)."""
    log = tmp_path / "both.log"
    run("echo abc; echo def >&2; awk '/^pos/ {print $2}' /proc/$$/fdinfo/2",
        pipe_stdout=log, pipe_stderr=log, hide_output=True)
    assert log.read_bytes() == b"abc\ndef\n8\n"


def test_a_failing_command_with_a_handed_over_file_is_no_write_error(tmp_path: Path) -> None:
    """Only a full disk makes the failure of a command that wrote its file itself ours."""
    out = tmp_path / "out.log"
    node = run("echo partial; exit 3", pipe_stdout=out, hide_output=True)
    assert (node.exit_code, node.errors) == (3, {})
    assert out.read_bytes() == b"partial\n"


@pytest.mark.parametrize("hosts, collect, hide, path, wiring", [
    (["localhost"], False, True, None, Wiring.DISCARD),
    (["localhost"], False, True, "out.log", Wiring.HANDOVER),
    (["localhost"], True, True, "out.log", Wiring.PIPE),
    (["localhost"], False, False, "out.log", Wiring.PIPE),
    (["localhost"], True, True, None, Wiring.PIPE),
    (["localhost"], False, True, "/dev/full", Wiring.PIPE),
    (["node1", "node2"], False, True, "out.log", Wiring.PIPE),
    (["node1", "node2"], False, True, "{host}.log", Wiring.HANDOVER),
], ids=["nothing wanted", "lone file", "collected", "printed", "collected only", "device",
        "file shared by hosts", "a file per host"])
def test_each_stream_is_wired_as_little_as_its_sinks_allow(
    hosts: List[str], collect: bool, hide: bool, path: Optional[str], wiring: Wiring,
    tmp_path: Path,
) -> None:
    outputs = Outputs(hosts, collect=collect, hide=hide,
                      pipe_stdout=None if path is None else str(tmp_path / path),
                      pipe_stderr=None, stdout=sys.stdout, stderr=sys.stderr)
    try:
        assert [outputs.tees[h]["stdout"].wiring() for h in hosts] == [wiring] * len(hosts)
    finally:
        outputs.close()


# ---- files that cannot be used ---------------------------------------------

@pytest.mark.parametrize("field", ["pipe_stdout", "pipe_stderr"])
def test_an_output_file_in_a_missing_folder_raises_before_anything_runs(
    field: str, tmp_path: Path,
) -> None:
    missing = tmp_path / "no-such-folder" / "out.log"
    marker = tmp_path / "ran"
    with pytest.raises(PathNotFoundError) as caught:
        run(f"touch {marker}", **{field: missing})
    assert caught.value.field == field
    assert caught.value.path == str(missing)
    assert str(missing) in str(caught.value)
    assert not marker.exists()


def test_a_full_disk_records_an_output_write_error_and_ends_the_command(tag: str) -> None:
    node = run(f"echo something\nsleep {tag}", pipe_stdout="/dev/full", hide_output=True,
               timeout=60)
    error = node.errors["localhost"]
    assert isinstance(error, OutputWriteError)
    assert (error.host, error.path) == ("localhost", "/dev/full")
    assert node.exit_code not in (0, 124)  # ended by the write error, not by the timeout
    assert sleeping(tag) == []


def test_a_full_disk_on_stdout_keeps_collecting_stderr() -> None:
    node = run("echo to-err >&2\necho to-out", pipe_stdout="/dev/full",
               collect_output=True, hide_output=True)
    assert isinstance(node.errors["localhost"], OutputWriteError)
    assert node.stderr["localhost"] == "to-err\n"


def test_a_bad_output_path_leaves_the_other_output_file_untouched(tmp_path: Path) -> None:
    kept = tmp_path / "p.log"
    kept.write_text("old\n")
    with pytest.raises(PathNotFoundError, match="pipe_stderr"):
        Exec("echo new", LocalExecInfo(pipe_stdout=kept, pipe_stderr=tmp_path / "nope" / "e.log"))
    assert kept.read_text() == "old\n"


# ---- a terminal that fails ------------------------------------------------------

def run_program(program: str, pipe_to: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    """``program`` in a child interpreter (its stdout through ``pipe_to``); bounded.

    On a hang, its whole session is ended and the test fails.
    """
    line = shlex.join([sys.executable, "-c", textwrap.dedent(program)]) + pipe_to
    child = subprocess.Popen(["bash", "-c", line], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True,
                             cwd=Path(__file__).parent.parent, env={**os.environ, **env})
    try:
        out, err = child.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        pytest.fail("the program never returned")
    return subprocess.CompletedProcess(line, child.returncode, out, err)


def test_a_terminal_whose_reader_went_is_dropped_and_the_run_completes(tmp_path: Path) -> None:
    log = tmp_path / "seq.log"
    done = run_program(f"""
        import sys
        from fabexec import Exec, LocalExecInfo
        node = Exec("seq 300000", LocalExecInfo(exec_async=True, pipe_stdout={str(log)!r},
                                                collect_output=True))
        print("exit", node.wait(), len(node.stdout["localhost"].splitlines()), file=sys.stderr)
    """, " | head -1")
    assert done.stdout == "1\n"
    assert "exit 0 300000" in done.stderr
    assert len(log.read_text().splitlines()) == 300_000


def test_a_terminal_that_cannot_encode_a_character_shows_a_replacement() -> None:
    done = run_program("""
        import sys
        from fabexec import Exec, LocalExecInfo
        node = Exec("printf 'caf\\\\303\\\\251\\\\n'", LocalExecInfo(collect_output=True))
        print("exit", node.exit_code, ascii(node.stdout["localhost"]), file=sys.stderr)
    """, PYTHONIOENCODING="ascii")
    assert done.stdout == "caf?\n"
    assert "exit 0 'caf\\xe9\\n'" in done.stderr  # collected whole: café


class BrokenWatcher(StreamWatcher):
    """A watcher whose own code fails on the first output it sees."""

    def submit(self, stream: str) -> List[str]:
        raise RuntimeError("the watcher broke")


@pytest.mark.timeout(60)
def test_an_output_thread_that_fails_ends_the_command_with_its_error(tag: str) -> None:
    node = Exec(f"echo go\nsleep {tag}", LocalExecInfo(exec_async=True, hide_output=True,
                                                       watchers=[BrokenWatcher()]))
    with pytest.raises(ThreadException, match="the watcher broke"):
        node.wait()
    assert sleeping(tag) == []


@pytest.mark.timeout(60)
def test_a_fifo_without_a_reader_ends_with_a_write_error_within_the_timeout(
        tmp_path: Path) -> None:
    fifo = tmp_path / "nobody-reads"
    os.mkfifo(fifo)
    with pytest.raises(OutputWriteError) as caught:
        Exec("echo new", LocalExecInfo(pipe_stdout=fifo, timeout=2))
    assert caught.value.path == str(fifo)
    assert "FIFO" in str(caught.value)


@pytest.mark.timeout(60)
def test_a_fifo_whose_reader_comes_later_gets_the_output(tmp_path: Path) -> None:
    fifo = tmp_path / "read-later"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["bash", "-c", f"sleep 0.5; cat {shlex.quote(str(fifo))}"],
                              stdout=subprocess.PIPE, text=True)
    node = Exec("echo through the fifo", LocalExecInfo(pipe_stdout=fifo, timeout=30))
    assert node.exit_code == 0
    assert reader.communicate(timeout=30)[0] == "through the fifo\n"
