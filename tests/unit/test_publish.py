"""The republisher's hand-encoded AMQP frames are the bytes pamqp marshals."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import commands as spec
from pamqp import frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from bridges.publish import Outgoing, check_channel, publish_frames

MAX_CONTENT = 131_072 - 8  # RabbitMQ's default frame_max less a body frame's overhead


def pamqp_frames(channel: int, message: Outgoing, max_content: int) -> bytes:
    properties = spec.Basic.Properties(
        delivery_mode=2,
        content_type="application/json",
        message_id=message.message_id,
        headers={"x-trace-id": message.trace_id},
    )
    body = message.body
    parts = [
        frame.marshal(
            spec.Basic.Publish(exchange="", routing_key=message.routing_key, mandatory=True),
            channel,
        ),
        frame.marshal(ContentHeader(0, len(body), properties), channel),
    ]
    chunks = (
        [body]
        if len(body) < max_content
        else [body[i : i + max_content] for i in range(0, len(body), max_content)]
    )
    parts += [frame.marshal(ContentBody(chunk), channel) for chunk in chunks]
    return b"".join(parts)


text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)
short = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=80
)


@settings(max_examples=300)
@given(
    channel=st.integers(min_value=1, max_value=2047),
    routing_key=short,
    message_id=short,
    trace_id=text,
    body=st.binary(min_size=1, max_size=300),
    max_content=st.sampled_from([16, 64, 1000, MAX_CONTENT]),
)
def test_frames_equal_pamqp(
    channel: int, routing_key: str, message_id: str, trace_id: str, body: bytes, max_content: int
) -> None:
    message = Outgoing(routing_key, body, message_id, trace_id)
    assert publish_frames(channel, message, max_content=max_content) == pamqp_frames(
        channel, message, max_content
    )


def test_a_body_larger_than_a_frame_is_split_as_pamqp_splits_it() -> None:
    message = Outgoing("pm.position_updated", b"x" * (3 * MAX_CONTENT + 5), "e-1", "t-1")
    raw = publish_frames(1, message, max_content=MAX_CONTENT)
    assert raw == pamqp_frames(1, message, MAX_CONTENT)
    assert raw.count(b"\xce") >= 6  # method, header and four body frames


def test_a_routing_key_or_message_id_longer_than_a_short_string_is_refused() -> None:
    with pytest.raises(ValueError, match="routing key"):
        publish_frames(1, Outgoing("q" * 256, b"{}", "e", "t"), max_content=MAX_CONTENT)
    with pytest.raises(ValueError, match="message id"):
        publish_frames(1, Outgoing("q", b"{}", "e" * 256, "t"), max_content=MAX_CONTENT)


def test_a_channel_without_confirms_or_bookkeeping_is_refused() -> None:
    class Bare:
        publisher_confirms = True

    with pytest.raises(RuntimeError, match="delivery_tag"):
        check_channel(Bare())
