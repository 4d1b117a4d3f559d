"""`GatheringPipe`, the receive buffer of a copy's SFTP channel, keeps paramiko's
`BufferedPipe` promises: what was fed comes out in order, whole; a reader waits for
what it asked for, gets less only at the close or at its timeout, and never waits past
either. `BatchingPipe`, a gateway's stdout, is paramiko's pipe until told to batch,
then wakes its reader only for a batch, the close, or data on stderr. Driven by real
threads; the copies themselves are tested in test_transfer.py, the tree in test_tree.py."""

from __future__ import annotations

import threading

import pytest
from paramiko.buffered_pipe import PipeTimeout

from fabexec.channel_buffer import BatchingPipe, GatheringPipe, PokingPipe


def test_a_reader_gets_what_it_asked_for_across_packets_in_order() -> None:
    pipe = GatheringPipe()
    for packet in (b"abc", b"defg", b"h", b"ijklmnop"):
        pipe.feed(packet)
    assert len(pipe) == 16
    assert pipe.read(5) == b"abcde"
    assert pipe.read(2) == b"fg"
    assert pipe.read(9) == b"hijklmnop"
    assert not pipe.read_ready()


def test_a_waiting_reader_is_woken_once_its_whole_message_came() -> None:
    pipe = GatheringPipe()
    got = []
    reader = threading.Thread(target=lambda: got.append(pipe.read(10, timeout=30)))
    reader.start()
    pipe.feed(b"0123")
    reader.join(0.2)
    assert reader.is_alive() and not got  # 4 of 10 bytes: still waiting
    pipe.feed(b"456789xyz")
    reader.join(30)
    assert got == [b"0123456789"]
    assert pipe.read(3) == b"xyz"


def reading(pipe: GatheringPipe, got: list, nbytes: int = 1 << 18) -> threading.Thread:
    def read() -> None:
        try:
            got.append(pipe.read(nbytes))
        except PipeTimeout:
            got.append(PipeTimeout)
    reader = threading.Thread(target=read)
    reader.start()
    return reader


def batching(nbytes: int) -> BatchingPipe:
    pipe = BatchingPipe()
    pipe.batch(nbytes)
    return pipe


@pytest.mark.parametrize("make", [GatheringPipe, lambda: batching(100)],
                         ids=["gathering", "batching"])
def test_the_close_hands_out_what_is_left_then_nothing(make) -> None:
    pipe, got = make(), []
    reader = reading(pipe, got, 10)
    pipe.feed(b"abc")
    pipe.close()
    reader.join(30)
    assert got == [b"abc"]
    assert pipe.read(10) == b""


def test_a_timeout_gives_what_came_or_raises_when_nothing_did() -> None:
    pipe = GatheringPipe()
    with pytest.raises(PipeTimeout):
        pipe.read(4, timeout=0.05)
    pipe.feed(b"ab")
    assert pipe.read(4, timeout=0.05) == b"ab"


def test_the_event_tells_whether_data_is_there() -> None:
    pipe, event = GatheringPipe(), threading.Event()
    pipe.set_event(event)
    assert not event.is_set()
    pipe.feed(b"x")
    assert event.is_set()
    assert pipe.empty() == b"x"
    assert not event.is_set()
    pipe.close()
    assert event.is_set()


def test_a_gateway_pipe_wakes_its_reader_at_each_packet_until_told_to_batch() -> None:
    pipe, got = BatchingPipe(), []
    reader = reading(pipe, got)
    pipe.feed(b"probe\n")
    reader.join(30)
    assert got == [b"probe\n"]  # as paramiko's pipe: whatever came, at once


def test_a_batching_reader_sleeps_until_its_batch_came_then_gets_it_whole() -> None:
    pipe, got = batching(10), []
    pipe.feed(b"0123")  # before the read: a pipe that did not batch would hand this out
    reader = reading(pipe, got)
    reader.join(0.2)
    assert reader.is_alive() and not got
    pipe.feed(b"456789xyz")
    reader.join(30)
    assert got == [b"0123456789xyz"]


def test_stderr_wakes_a_batching_reader_so_that_it_reads_it() -> None:
    # Unread, stderr would hold the channel's window: the reader must come and drain it.
    pipe, got = BatchingPipe(), []
    stderr = PokingPipe(pipe)
    pipe.batch(100)
    reader = reading(pipe, got)
    stderr.feed(b"a warning\n")
    reader.join(30)
    assert got == [PipeTimeout] and stderr.read(100) == b"a warning\n"
    pipe.feed(b"abc")
    got.clear()
    reader = reading(pipe, got)
    stderr.feed(b"more\n")
    reader.join(30)
    assert got == [b"abc"]  # woken with what came, not a timeout


def test_stderr_does_not_cut_short_a_reader_that_is_not_batching() -> None:
    # The probe's read has a timeout of its own: stderr must not end it as one.
    pipe, got = BatchingPipe(), []
    stderr = PokingPipe(pipe)
    reader = reading(pipe, got)
    stderr.feed(b"a login script's words\n")
    reader.join(0.2)
    assert reader.is_alive() and not got
    pipe.feed(b"probe\n")
    reader.join(30)
    assert got == [b"probe\n"]
