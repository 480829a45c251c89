"""Publish a batch of persistent messages with publisher confirms in one socket write.

The republisher sends every change as its own message. Through aiormq's
`Channel.basic_publish` each one costs a coroutine (a task under `gather`), the channel
lock, two futures, pamqp's generic frame marshalling and a write of its own: about half
of the outputs process in a profile of the pipeline bench. `publish_batch` takes the
channel lock once per batch, encodes the three frames of each message with `struct`
(the fields the republisher sends are fixed: no exchange, content type, delivery mode,
message id, one trace header), hands the whole batch to the connection's writer as one
frame, and waits on the channel's own confirmation futures, so acks, nacks, returns
and a closing channel resolve them exactly as they resolve `basic_publish`'s.

Upstream: aiormq has no batch publish; this uses its channel's confirmation
bookkeeping (`delivery_tag`, `confirmations`, `message_id_delivery_tag`, `lock`,
`write_queue`, `create_future`) as `Channel.basic_publish` does, checked by
`check_channel` when the channel opens.
Delete when: aiormq publishes a batch with confirms and one write.
"""

from __future__ import annotations

import asyncio
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiormq.abc import ChannelFrame
from pamqp import commands as spec

PERSISTENT = 2  # AMQP delivery mode: written to disk by a durable queue
CONTENT_TYPE = b"application/json"
TRACE_HEADER = b"x-trace-id"

_FRAME_END = b"\xce"
_FRAME_HEADER = struct.Struct(">BHI")  # frame type, channel, payload size
_METHOD, _CONTENT_HEADER, _BODY = 1, 2, 3
_BASIC_PUBLISH = struct.pack(">HHH", 60, 40, 0)  # class basic, method publish, ticket 0
_CONTENT_PREFIX = struct.Struct(">HHQH")  # class, weight, body size, property flags
# content-type (bit 15), headers (13), delivery-mode (12), message-id (7)
_PROPERTY_FLAGS = 0x8000 | 0x2000 | 0x1000 | 0x0080

CHANNEL_ATTRIBUTES = (
    "delivery_tag",
    "confirmations",
    "message_id_delivery_tag",
    "lock",
    "write_queue",
    "create_future",
    "max_content_size",
    "number",
)


@dataclass(frozen=True, slots=True)
class Outgoing:
    routing_key: str
    body: bytes
    message_id: str
    trace_id: str


def check_channel(channel: Any) -> None:
    """Fail at startup, not at the first publish, on an aiormq without the channel
    bookkeeping `publish_batch` uses."""
    missing = [name for name in CHANNEL_ATTRIBUTES if not hasattr(channel, name)]
    if missing or not getattr(channel, "publisher_confirms", False):
        raise RuntimeError(
            f"this aiormq channel cannot publish batches (missing {missing}, "
            f"publisher confirms {getattr(channel, 'publisher_confirms', None)})"
        )


def _shortstr(value: bytes, field: str) -> bytes:
    if len(value) > 255:
        raise ValueError(f"{field} is longer than 255 bytes")
    return bytes((len(value),)) + value


_CONTENT_TYPE_FIELD = _shortstr(CONTENT_TYPE, "content type")
_TRACE_HEADER_KEY = _shortstr(TRACE_HEADER, "header") + b"S"  # a long-string value follows
_DELIVERY_MODE_FIELD = bytes((PERSISTENT,))
_DEFAULT_EXCHANGE = b"\x00"  # an empty short string


def _frame(kind: int, channel: int, payload: bytes) -> bytes:
    return _FRAME_HEADER.pack(kind, channel, len(payload)) + payload + _FRAME_END


def publish_frames(
    channel: int,
    message: Outgoing,
    *,
    max_content: int,
    mandatory: bool = True,
) -> bytes:
    """The Basic.Publish, content header and body frames of one message, as pamqp
    marshals them (`tests/unit/test_publish.py` holds the two equal)."""
    method = b"".join(
        (
            _BASIC_PUBLISH,
            _DEFAULT_EXCHANGE,
            _shortstr(message.routing_key.encode(), "routing key"),
            b"\x01" if mandatory else b"\x00",  # mandatory bit; immediate never
        )
    )
    trace = message.trace_id.encode()
    headers = b"".join((_TRACE_HEADER_KEY, struct.pack(">I", len(trace)), trace))
    body = message.body
    header = b"".join(
        (
            _CONTENT_PREFIX.pack(60, 0, len(body), _PROPERTY_FLAGS),
            _CONTENT_TYPE_FIELD,
            struct.pack(">I", len(headers)),
            headers,
            _DELIVERY_MODE_FIELD,
            _shortstr(message.message_id.encode(), "message id"),
        )
    )
    parts = [_frame(_METHOD, channel, method), _frame(_CONTENT_HEADER, channel, header)]
    if len(body) < max_content:
        parts.append(_frame(_BODY, channel, body))
    else:
        for start in range(0, len(body), max_content):
            parts.append(_frame(_BODY, channel, body[start : start + max_content]))
    return b"".join(parts)


async def publish_batch(channel: Any, messages: Sequence[Outgoing]) -> None:
    """Publish `messages` in order on an aiormq channel in confirm mode and wait until
    the broker confirmed every one; raise when any is nacked or returned (mandatory:
    an unroutable message comes back instead of an Ack) or the channel closes."""
    if not messages:
        return
    messages = [
        m if m.message_id else Outgoing(m.routing_key, m.body, uuid.uuid4().hex, m.trace_id)
        for m in messages
    ]
    number, max_content = channel.number, channel.max_content_size
    payload = b"".join(publish_frames(number, m, max_content=max_content) for m in messages)
    confirmations: list[asyncio.Future[Any]] = []
    async with channel.lock:
        first = channel.delivery_tag + 1
        try:
            for offset, message in enumerate(messages):
                future = channel.create_future()
                confirmations.append(future)
                channel.confirmations[first + offset] = future
                channel.message_id_delivery_tag[message.message_id] = first + offset
            channel.delivery_tag = first + len(messages) - 1
            await channel.write_queue.put(ChannelFrame(payload=payload, should_close=False))
        except BaseException:
            # The broker has seen none of them: give the sequence numbers back.
            channel.delivery_tag = first - 1
            for offset in range(len(confirmations)):
                channel.confirmations.pop(first + offset, None)
            _forget(channel, messages, first, confirmations)
            raise
    try:
        for message, future in zip(messages, confirmations, strict=True):
            confirmation = await future
            if not isinstance(confirmation, spec.Basic.Ack):
                reason = getattr(getattr(confirmation, "delivery", None), "reply_text", None)
                raise ConnectionError(
                    f"rabbitmq did not confirm message {message.message_id} to "
                    f"{message.routing_key!r}: {reason or confirmation!r}"
                )
    finally:
        _forget(channel, messages, first, confirmations)


def _forget(
    channel: Any, messages: Sequence[Outgoing], first: int, futures: list[asyncio.Future[Any]]
) -> None:
    """Cancel the futures still waiting (aiormq ignores a late confirm of a cancelled
    one) and drop the message ids that still point at this batch's delivery tags."""
    ids = channel.message_id_delivery_tag
    for offset, (message, future) in enumerate(zip(messages, futures, strict=False)):
        if not future.done():
            future.cancel()
        if ids.get(message.message_id) == first + offset:
            del ids[message.message_id]
