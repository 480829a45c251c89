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
`check_channel` when the channel opens; each message's entry in `confirmations` is a
`_Confirmation` that reports to one future per batch.
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
    # One future for the batch, in the channel's future store (a closing channel fails
    # it); each message's place in `confirmations` reports to it (`_Confirmation`).
    batch = _Batch(channel.create_future(), len(messages))
    places = [_Confirmation(batch, m) for m in messages]
    async with channel.lock:
        first = channel.delivery_tag + 1
        try:
            for offset, (message, place) in enumerate(zip(messages, places, strict=True)):
                channel.confirmations[first + offset] = place
                channel.message_id_delivery_tag[message.message_id] = first + offset
            channel.delivery_tag = first + len(messages) - 1
            await channel.write_queue.put(ChannelFrame(payload=payload, should_close=False))
        except BaseException:
            # The broker has seen none of them: give the sequence numbers back.
            channel.delivery_tag = first - 1
            for offset in range(len(places)):
                channel.confirmations.pop(first + offset, None)
            _forget(channel, messages, first, places, batch)
            raise
    try:
        await batch.future
    finally:
        _forget(channel, messages, first, places, batch)


class _Batch:
    """What a batch waits for: every message acked, or the first that is not."""

    __slots__ = ("future", "waiting")

    def __init__(self, future: asyncio.Future[Any], size: int) -> None:
        self.future = future
        self.waiting = size

    def acked(self) -> None:
        self.waiting -= 1
        if self.waiting == 0 and not self.future.done():
            self.future.set_result(None)

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


class _Confirmation:
    """One message's entry in the channel's `confirmations`: what aiormq's confirm and
    return handlers call on a confirmation future (`done`, `cancelled`, `set_result`,
    `set_exception`), reported to the batch instead of a future per message (a future,
    its two done callbacks and an await each cost about a tenth of the outputs process
    in a profile of the wide pipeline bench)."""

    __slots__ = ("batch", "message", "settled")

    def __init__(self, batch: _Batch, message: Outgoing) -> None:
        self.batch = batch
        self.message = message
        self.settled = False

    def done(self) -> bool:
        return self.settled

    def cancelled(self) -> bool:
        """aiormq asks only of an entry it finds settled: one its batch gave up on
        (`_forget`), whose late confirm it then ignores quietly."""
        return self.settled

    def set_result(self, confirmation: Any) -> None:
        """An Ack, a Nack, or the message itself when it was returned (unroutable)."""
        if self.settled:
            raise asyncio.InvalidStateError("confirmation already settled")
        self.settled = True
        if isinstance(confirmation, spec.Basic.Ack):
            self.batch.acked()
            return
        reason = getattr(getattr(confirmation, "delivery", None), "reply_text", None)
        self._refused(reason or repr(confirmation))

    def set_exception(self, exc: BaseException) -> None:
        if self.settled:
            raise asyncio.InvalidStateError("confirmation already settled")
        self.settled = True
        self._refused(repr(exc))

    def _refused(self, detail: str) -> None:
        message = self.message
        self.batch.fail(
            ConnectionError(
                f"rabbitmq did not confirm message {message.message_id} to "
                f"{message.routing_key!r}: {detail}"
            )
        )


def _forget(
    channel: Any,
    messages: Sequence[Outgoing],
    first: int,
    places: list[_Confirmation],
    batch: _Batch,
) -> None:
    """Settle the entries still waiting (aiormq ignores a late confirm of a settled
    one), fail the batch's future if nothing did (its exception is then retrieved
    here), and drop the message ids that still point at this batch's delivery tags."""
    for place in places:
        place.settled = True
    if not batch.future.done():
        batch.future.cancel()
    ids = channel.message_id_delivery_tag
    for offset, message in enumerate(messages):
        if ids.get(message.message_id) == first + offset:
            del ids[message.message_id]
