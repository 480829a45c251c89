"""`bridges.receive.FrameReceiver` reads what aiormq's own reader reads, frame for frame,
from the same bytes (method, content header, body and heartbeat frames on any channel),
and fails as it does on a cut stream or a bad frame end."""

from __future__ import annotations

import asyncio
from typing import Any

import aiormq.connection
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import commands as spec
from pamqp import frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader
from pamqp.heartbeat import Heartbeat

from bridges.receive import FrameReceiver

ORIGINAL = FrameReceiver.__bases__[0]  # aiormq's own, even after `install()`


def stream(data: bytes, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


async def read_all(receiver_class: Any, data: bytes) -> list[Any]:
    receiver = receiver_class(stream(data))
    out = []
    async for weight, channel, f in receiver:
        out.append((weight, channel, type(f).__name__, frame.marshal(f, channel)))
    return out


def deliveries(channel: int, tag: int, body: bytes, trace: str) -> bytes:
    properties = spec.Basic.Properties(
        delivery_mode=2, content_type="application/json", message_id=f"m-{tag}",
        headers={"x-trace-id": trace},
    )  # fmt: skip
    parts = [
        frame.marshal(spec.Basic.Deliver("ctag1.x", tag, False, "", "orders"), channel),
        frame.marshal(ContentHeader(0, len(body), properties), channel),
    ]
    if body:
        parts.append(frame.marshal(ContentBody(body), channel))
    parts.append(frame.marshal(Heartbeat(), 0))
    parts.append(frame.marshal(spec.Basic.Ack(tag, multiple=True), channel))
    return b"".join(parts)


@settings(max_examples=200, deadline=None)
@given(
    messages=st.lists(
        st.tuples(
            st.integers(min_value=1, max_value=2047),
            st.binary(max_size=2000),
            st.text(max_size=30),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_the_same_frames_as_aiormqs_reader(messages: list[tuple[int, bytes, str]]) -> None:
    data = b"".join(
        deliveries(ch, i + 1, body, trace) for i, (ch, body, trace) in enumerate(messages)
    )
    ours = asyncio.run(read_all(FrameReceiver, data))
    theirs = asyncio.run(read_all(ORIGINAL, data))
    assert ours == theirs
    assert len(ours) == sum(4 + bool(body) for _, body, _ in messages)


def test_a_cut_stream_and_a_bad_frame_end_fail_as_aiormqs_reader_does() -> None:
    data = deliveries(1, 1, b'{"a": 1}', "t")
    for cls in (FrameReceiver, ORIGINAL):
        with pytest.raises(aiormq.exceptions.AMQPConnectionError, match="unexpectedly closed"):
            asyncio.run(read_all(cls, data[:-5]))
    bad = bytearray(frame.marshal(ContentBody(b"xyz"), 1))
    bad[-1] = 0
    for cls in (FrameReceiver, ORIGINAL):
        with pytest.raises(aiormq.exceptions.InvalidFrameError):
            asyncio.run(read_all(cls, bytes(bad)))


def test_a_protocol_header_first_is_refused() -> None:
    for cls in (FrameReceiver, ORIGINAL):
        with pytest.raises(aiormq.exceptions.ProtocolSyntaxError):
            asyncio.run(read_all(cls, b"AMQP\x00\x00\x09\x01"))
