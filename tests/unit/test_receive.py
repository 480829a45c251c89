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

from bridges import receive
from bridges.receive import Delivery, FrameReceiver, register, unregister

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


# --------------------------------------------------------------------------- deliveries

TAG = "pm-bridge.3.feed"


class Channel:
    """Stands for the aiormq channel a consumer was registered on (its number)."""

    def __init__(self, number: int) -> None:
        self.number = number


def delivery_frames(
    channel: int, tag: str, n: int, redelivered: bool, routing_key: str, body: bytes,
    properties: spec.Basic.Properties, frame_max: int,
) -> list[bytes]:  # fmt: skip
    parts = [
        frame.marshal(spec.Basic.Deliver(tag, n, redelivered, "amq.direct", routing_key), channel),
        frame.marshal(ContentHeader(0, len(body), properties), channel),
    ]
    for start in range(0, len(body), frame_max):
        parts.append(frame.marshal(ContentBody(body[start : start + frame_max]), channel))
    return parts


async def read_with_consumers(data: bytes, consumers: dict[str, Channel]) -> tuple[list, list]:  # type: ignore[type-arg]
    """(frames aiormq would get, deliveries taken by the registered consumers)."""
    taken: list[Delivery] = []
    for tag, channel in consumers.items():
        register(tag, channel, taken.append)
    try:
        return await read_all(FrameReceiver, data), taken
    finally:
        for tag in consumers:
            unregister(tag)


headers_st = st.dictionaries(st.sampled_from(["x-trace-id", "k"]), st.text(max_size=10))
properties_st = st.builds(
    spec.Basic.Properties,
    content_type=st.sampled_from([None, "application/json"]),
    delivery_mode=st.sampled_from([None, 1, 2]),
    message_id=st.one_of(st.none(), st.text(max_size=20)),
    headers=st.one_of(st.none(), headers_st),
)


@settings(max_examples=200, deadline=None)
@given(
    messages=st.lists(
        st.tuples(
            st.sampled_from([3, 5]),  # 3: the registered consumer's channel
            st.booleans(),
            st.text(max_size=30),
            st.binary(max_size=3000),
            properties_st,
        ),
        min_size=1,
        max_size=8,
    ),
    frame_max=st.sampled_from([7, 100, 4096]),
    interleave=st.booleans(),
)
def test_deliveries_to_a_registered_consumer_are_taken_whole_and_the_rest_as_aiormqs(
    messages: list[tuple[int, bool, str, bytes, spec.Basic.Properties]],
    frame_max: int,
    interleave: bool,
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(receive, "_KEEPALIVE", 1e9)
        check_deliveries(messages, frame_max, interleave)


def check_deliveries(
    messages: list[tuple[int, bool, str, bytes, spec.Basic.Properties]],
    frame_max: int,
    interleave: bool,
) -> None:
    streams: dict[int, list[bytes]] = {3: [], 5: []}
    expected = []
    for n, (ch, redelivered, key, body, props) in enumerate(messages, start=1):
        tag = TAG if ch == 3 else "ctag5.other"
        streams[ch].extend(delivery_frames(ch, tag, n, redelivered, key, body, props, frame_max))
        if ch == 3:
            header = frame.marshal(ContentHeader(0, len(body), props), 3)
            expected.append((n, redelivered, key, body, header))
    # Frames of another channel may come between a delivery's frames (AMQP 4.2.6).
    if interleave:
        a, b = streams[3], streams[5]
        mixed = [f for pair in zip(a, b, strict=False) for f in pair]
        mixed += a[len(b) :] + b[len(a) :]
    else:
        mixed = streams[3] + streams[5]
    mixed.append(frame.marshal(spec.Basic.Ack(1, multiple=True), 3))
    data = b"".join(mixed)
    frames, taken = asyncio.run(read_with_consumers(data, {TAG: Channel(3)}))
    got = [
        (d.delivery_tag, d.redelivered, d.routing_key, d.body, frame.marshal(d.header, 3))
        for d in taken
    ]
    assert got == expected
    assert all(d.consumer_tag == TAG and d.exchange == "amq.direct" for d in taken)
    sent = [spec.Basic.Deliver(TAG, n, r, "amq.direct", k) for n, r, k, _, _ in expected]
    assert [frame.marshal(d.delivery, 3) for d in taken] == [frame.marshal(m, 3) for m in sent]
    # Everything else reaches aiormq as its own reader reads it, in order.
    others = b"".join(streams[5]) + frame.marshal(spec.Basic.Ack(1, multiple=True), 3)
    assert frames == asyncio.run(read_all(ORIGINAL, others))


def test_an_unregistered_tag_or_another_channel_is_left_to_aiormq() -> None:
    props = spec.Basic.Properties(message_id="m")
    data = b"".join(
        delivery_frames(3, "ctag3.unknown", 1, False, "q", b"body", props, 4096)
        + delivery_frames(4, TAG, 2, False, "q", b"body", props, 4096)  # tag of channel 3
    )
    frames, taken = asyncio.run(read_with_consumers(data, {TAG: Channel(3)}))
    assert taken == []
    assert frames == asyncio.run(read_all(ORIGINAL, data))


def test_while_deliveries_are_taken_aiormq_still_sees_a_frame_a_keepalive_apart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(receive, "_KEEPALIVE", 0.0)  # a heartbeat after every frame taken
    props = spec.Basic.Properties()
    data = b"".join(delivery_frames(3, TAG, 1, False, "q", b"abc", props, 4096))
    frames, taken = asyncio.run(read_with_consumers(data, {TAG: Channel(3)}))
    assert [d.body for d in taken] == [b"abc"]
    assert [(channel, kind) for _, channel, kind, _ in frames] == [(0, "Heartbeat")] * 3


def test_a_delivery_cut_by_a_method_frame_is_dropped_and_the_frame_passed_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(receive, "_KEEPALIVE", 1e9)
    props = spec.Basic.Properties()
    whole = delivery_frames(3, TAG, 2, False, "q", b"second", props, 4096)
    cut = delivery_frames(3, TAG, 1, False, "q", b"first", props, 4096)[:2]  # no body
    closing = spec.Channel.Close(reply_code=320, reply_text="x", class_id=0, method_id=0)
    close = frame.marshal(closing, 3)
    data = b"".join([*cut, close, *whole])
    frames, taken = asyncio.run(read_with_consumers(data, {TAG: Channel(3)}))
    assert [d.body for d in taken] == [b"second"]
    assert [kind for _, _, kind, _ in frames] == ["Close"]


def test_an_empty_body_is_delivered_at_its_content_header() -> None:
    props = spec.Basic.Properties(message_id="empty")
    data = b"".join(delivery_frames(3, TAG, 7, True, "q", b"", props, 4096))
    _, taken = asyncio.run(read_with_consumers(data, {TAG: Channel(3)}))
    assert [(d.delivery_tag, d.body, d.header.properties.message_id) for d in taken] == [
        (7, b"", "empty")
    ]
