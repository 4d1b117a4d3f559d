"""`GatheringPipe`, the receive buffer of a copy's SFTP channel, keeps paramiko's
`BufferedPipe` promises: what was fed comes out in order, whole; a reader waits for
what it asked for, gets less only at the close or at its timeout, and never waits past
either. Driven by real threads; the copies themselves are tested in test_transfer.py."""

from __future__ import annotations

import threading

import pytest
from paramiko.buffered_pipe import PipeTimeout

from fabexec.channel_buffer import GatheringPipe


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


def test_the_close_hands_out_what_is_left_then_nothing() -> None:
    pipe = GatheringPipe()
    got = []
    reader = threading.Thread(target=lambda: got.append(pipe.read(10, timeout=30)))
    reader.start()
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
