"""Bus batches (tickhub._ext.batch and its twin): round trip, de-duplication, damaged input."""

from __future__ import annotations

import asyncio
from types import ModuleType
from typing import Any

import pytest

from tickhub._ext import batch as batch_c
from tickhub._ext import batch_py, fanout as fanout_c, fanout_py

IMPLS = [pytest.param((batch_c, fanout_c), id="c-batch"), pytest.param((batch_py, fanout_py), id="py-batch")]


def trade(t: int) -> bytes:
    return b'{"e":"trade","E":1,"s":"BTCUSDT","t":%d,"p":"1.0"}' % t


class Recorder:
    """A fan-out stand-in that records what is published (the real Topic is still used)."""

    def __init__(self, fanout_mod: ModuleType) -> None:
        self.fanout = fanout_mod.Fanout(asyncio.new_event_loop())
        self.topic = fanout_mod.Topic(b"btcusdt@trade")


@pytest.mark.parametrize("impl", IMPLS)
def test_round_trip_dedup_and_counts(impl: tuple[ModuleType, ModuleType]) -> None:
    batch, fanout_mod = impl
    rec = Recorder(fanout_mod)
    owner = batch.Channel(rec.fanout, rec.topic)
    assert owner.add(trade(1)) is True
    assert owner.add(trade(2)) is False
    assert owner.add(trade(2)) is False  # duplicate: dropped, not batched
    assert owner.duplicates == 1 and owner.pending == 2
    msg = owner.take(batch.header(b"hub-a", 7, 1))
    assert owner.pending == 0
    assert rec.topic.messages_in == 2  # the owner published locally at once

    who, token, seq, count, offset = batch.parse_header(msg)
    assert (who, token, seq, count) == (b"hub-a", 7, 1, 2)
    rec2 = Recorder(fanout_mod)
    receiver = batch.Channel(rec2.fanout, rec2.topic)
    assert receiver.deliver(msg, offset, count) == 2
    assert receiver.deliver(msg, offset, count) == 0  # a second owner repeating the same events
    assert receiver.duplicates == 2 and receiver.last_id == 2
    assert rec2.topic.messages_in == 2


@pytest.mark.parametrize("impl", IMPLS)
def test_damaged_messages_deliver_nothing(impl: tuple[ModuleType, ModuleType]) -> None:
    batch, fanout_mod = impl
    rec = Recorder(fanout_mod)
    ch = batch.Channel(rec.fanout, None)
    ch.add(trade(1))
    ch.add(trade(2))
    msg = ch.take(batch.header(b"x", 1, 1))
    _, _, _, count, offset = batch.parse_header(msg)
    receiver = batch.Channel(rec.fanout, rec.topic)
    for bad in (msg[:-1], msg + b"z", msg[: offset + 2]):
        assert receiver.deliver(bad, offset, count) == -1
    assert receiver.deliver(msg, offset, count + 1) == -1
    assert receiver.malformed == 4 and rec.topic.messages_in == 0
    for bad in (b"", b"TB", b"XX1\x00" + bytes(20), msg[:10]):
        with pytest.raises(ValueError):
            batch.parse_header(bad)


def test_twins_write_identical_bytes() -> None:
    out = []
    for batch, fanout_mod in ((batch_c, fanout_c), (batch_py, fanout_py)):
        rec = Recorder(fanout_mod)
        ch: Any = batch.Channel(rec.fanout)
        for payload in (trade(5), b'{"no":"id"}', b'{"no":"id"}', trade(9)):
            ch.add(payload)
        out.append(ch.take(batch.header(b"owner-1", 2**40, 3)))
    assert out[0] == out[1]
