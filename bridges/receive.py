"""aiormq's frame reader with one read per frame header and one per payload, and
deliveries to a registered consumer handed over by the reader itself.

Every delivery the bridge consumes is three frames (method, content header, body).
aiormq's `FrameReceiver.get_frame` takes an `asyncio.Lock` per frame, reads each frame
in three `readexactly` calls into a `BytesIO`, and has pamqp parse the header again
along with the payload; the connection's reader then queues each frame to its
channel, whose own reader task takes them off again, parses the content header's
properties, and starts a task per delivery for the consumer callback. Together about
a fifth of the worker per fill in a profile of the pipeline bench.

`FrameReceiver` here reads the 7-byte header and then the payload with its end octet.
A `Basic.Deliver` whose consumer tag is registered (`register`) is assembled here from
its method, header and body frames (on its channel; frames of other channels may come
between them) and passed to the registered callback at once, as a `Delivery` whose
properties are parsed only when asked for; every other frame goes to aiormq as before,
parsed by pamqp, with its results and errors those of aiormq's own reader
(`tests/unit/test_receive.py`). While deliveries are taken here, a heartbeat frame is
handed to aiormq at least once a second, so that its stuck-connection check still sees
traffic. A connection has one reader task, so the lock guarded nothing.

Upstream: aiormq's `FrameReceiver` locks and copies per frame; its channels queue each
frame and start a task per delivery.
Delete when: aiormq reads a frame with two reads and no lock, and delivers without a
queue hop and a task per message.
"""

from __future__ import annotations

import asyncio
import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import aiormq.connection
import pamqp.frame
from aiormq.exceptions import AMQPConnectionError, InvalidFrameError, ProtocolSyntaxError
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.exceptions import PAMQPException
from pamqp.header import ContentHeader
from pamqp.heartbeat import Heartbeat

from pm_streams.logs import get_logger

log = get_logger("bridges.receive")

_HEADER = struct.Struct(">BHI")  # frame type, channel, payload size
_METHOD = 1
_CONTENT_HEADER = 2
_BODY = 3
_FRAME_END = 0xCE
_DELIVER = b"\x00\x3c\x00\x3c"  # Basic (60), Deliver (60)
_U64 = struct.Struct(">Q")
_BODY_SIZE = struct.Struct(">HHQ")  # class id, weight, body size
_KEEPALIVE = 1.0
"""Seconds between the heartbeats handed to aiormq while deliveries are taken here."""


class Delivery:
    """A `Basic.Deliver` with its content, as aiormq's `DeliveredMessage` offers it
    (`body`, `delivery_tag`, `channel`, `header`, `delivery`, ...); the content header
    is parsed on first use."""

    __slots__ = (
        "__dict__",
        "body",
        "channel",
        "consumer_tag",
        "delivery_tag",
        "exchange",
        "raw_header",
        "redelivered",
        "routing_key",
    )

    def __init__(
        self,
        consumer_tag: str,
        delivery_tag: int,
        redelivered: bool,
        exchange: str,
        routing_key: str,
        raw_header: bytes,
        body: bytes,
        channel: Any,
    ) -> None:
        self.consumer_tag = consumer_tag
        self.delivery_tag = delivery_tag
        self.redelivered = redelivered
        self.exchange = exchange
        self.routing_key = routing_key
        self.raw_header = raw_header
        self.body = body
        self.channel = channel

    @cached_property
    def header(self) -> ContentHeader:
        header = ContentHeader()
        header.unmarshal(self.raw_header)
        return header

    @cached_property
    def delivery(self) -> spec.Basic.Deliver:
        return spec.Basic.Deliver(
            self.consumer_tag, self.delivery_tag, self.redelivered, self.exchange, self.routing_key
        )


@dataclass(frozen=True, slots=True)
class _Consumer:
    channel: Any  # the aiormq channel the consumer was registered on
    callback: Callable[[Delivery], None]


_CONSUMERS: dict[str, _Consumer] = {}
"""Consumer tag → its consumer, for deliveries taken by the frame reader."""


def register(tag: str, channel: Any, callback: Callable[[Delivery], None]) -> None:
    """Hand deliveries to consumer `tag` on `channel` straight to `callback` (called in
    the connection's reader task; it must not block). Without `install`, aiormq
    delivers them to the callback given to `basic_consume` as usual."""
    _CONSUMERS[tag] = _Consumer(channel, callback)


def unregister(tag: str) -> None:
    _CONSUMERS.pop(tag, None)


async def consume(channel: Any, queue: str, callback: Callable[[Any], None]) -> str:
    """Consume `queue` on the aiormq `channel` (acks by the caller), each delivery
    passed to `callback` (a `Delivery` from the frame reader when it is installed,
    aiormq's `DeliveredMessage` otherwise); returns the consumer tag, to `unregister`
    when the channel is gone."""

    async def deliver(message: Any) -> None:
        callback(message)

    tag = f"pm-bridge.{channel.number}.{uuid.uuid4().hex}"
    register(tag, channel, callback)
    try:
        await channel.basic_consume(queue, deliver, no_ack=False, consumer_tag=tag)
    except BaseException:
        unregister(tag)
        raise
    return tag


class _Pending:
    """A delivery whose content frames are still to come."""

    __slots__ = ("body", "consumer", "fields", "raw_header", "received", "size")

    def __init__(self, consumer: _Consumer, fields: tuple[str, int, bool, str, str]) -> None:
        self.consumer = consumer
        self.fields = fields
        self.raw_header = b""
        self.size = -1  # until the content header is read
        self.body: list[bytes] = []
        self.received = 0  # bytes of body so far


def _parse_deliver(payload: bytes) -> tuple[str, int, bool, str, str]:
    """Consumer tag, delivery tag, redelivered, exchange, routing key of a
    `Basic.Deliver` method payload (after its class and method ids)."""
    pos = 4
    n = payload[pos]
    consumer_tag = payload[pos + 1 : pos + 1 + n].decode("utf-8")
    pos += 1 + n
    (delivery_tag,) = _U64.unpack_from(payload, pos)
    redelivered = bool(payload[pos + 8] & 1)
    pos += 9
    n = payload[pos]
    exchange = payload[pos + 1 : pos + 1 + n].decode("utf-8")
    pos += 1 + n
    n = payload[pos]
    routing_key = payload[pos + 1 : pos + 1 + n].decode("utf-8")
    if pos + 1 + n != len(payload):
        raise ValueError("trailing bytes")
    return consumer_tag, delivery_tag, redelivered, exchange, routing_key


class FrameReceiver(aiormq.connection.FrameReceiver):
    def __init__(self, reader: asyncio.StreamReader) -> None:
        super().__init__(reader)
        self.pending: dict[int, _Pending] = {}
        self.handed_at = time.monotonic()

    async def get_frame(self) -> Any:
        while True:
            kind, channel, size, head, rest = await self._read()
            if rest[-1] == _FRAME_END:  # else pamqp raises, as for aiormq's reader
                if kind == _METHOD:
                    if channel in self.pending:
                        self._abandon(channel)
                    if rest.startswith(_DELIVER) and self._deliver(channel, rest[:-1]):
                        if self._keepalive_due():
                            return self._handed(8, 0, Heartbeat())
                        continue
                elif kind in (_CONTENT_HEADER, _BODY) and channel in self.pending:
                    self._content(kind, channel, rest[:-1])
                    if self._keepalive_due():
                        return self._handed(8, 0, Heartbeat())
                    continue
                if kind == _BODY:
                    return self._handed(size + 8, channel, ContentBody(rest[:-1]))
            try:
                return self._handed(*pamqp.frame.unmarshal(head + rest))
            except PAMQPException as e:
                raise InvalidFrameError(str(e)) from e

    def _keepalive_due(self) -> bool:
        """Whether aiormq should see a frame now, after frames taken here."""
        return time.monotonic() - self.handed_at >= _KEEPALIVE

    def _handed(self, weight: int, channel: int, frame: Any) -> tuple[int, int, Any]:
        self.handed_at = time.monotonic()
        return weight, channel, frame

    async def _read(self) -> tuple[int, int, int, bytes, bytes]:
        reader = self.reader
        if reader.at_eof():
            del self.reader
            raise StopAsyncIteration
        try:
            head = await reader.readexactly(7)
            if not self.started:
                if head.startswith(b"AMQP"):
                    raise ProtocolSyntaxError("Unexpected AMQP protocol header")
                self.started = True
            kind, channel, size = _HEADER.unpack(head)
            rest = await reader.readexactly(size + 1)
        except asyncio.IncompleteReadError as e:
            raise AMQPConnectionError(
                "Server connection unexpectedly closed. "
                f"Read {len(e.partial)} bytes but {e.expected} bytes expected"
            ) from e
        except ConnectionRefusedError as e:
            raise AMQPConnectionError(f"Server connection refused: {e!r}") from e
        except ConnectionResetError as e:
            raise AMQPConnectionError(f"Server connection reset: {e!r}") from e
        except ConnectionError as e:
            raise AMQPConnectionError(f"Server connection error: {e!r}") from e
        except OSError as e:
            raise AMQPConnectionError(f"Server communication error: {e!r}") from e
        return kind, channel, size, head, rest

    def _deliver(self, channel: int, payload: bytes) -> bool:
        """Take a `Basic.Deliver` for a registered consumer (True), or leave it to
        aiormq (False: not registered, or not what this parser reads)."""
        if not _CONSUMERS:
            return False
        try:
            fields = _parse_deliver(payload)
        except (IndexError, ValueError, struct.error):
            return False
        consumer = _CONSUMERS.get(fields[0])
        if consumer is None or consumer.channel.number != channel:
            return False
        self.pending[channel] = _Pending(consumer, fields)
        return True

    def _abandon(self, channel: int) -> None:
        """A method frame where the rest of a delivery's content was due (a protocol
        error, or the channel closing): the delivery is dropped unacked, so RabbitMQ
        redelivers it when the channel goes; aiormq's channel would fail likewise."""
        pending = self.pending.pop(channel)
        log.warning("delivery_content_cut", channel=channel, delivery_tag=pending.fields[1])

    def _content(self, kind: int, channel: int, payload: bytes) -> None:
        pending = self.pending[channel]
        if pending.size < 0:
            if kind != _CONTENT_HEADER:
                raise InvalidFrameError(f"a body frame before the content header on {channel}")
            pending.raw_header = payload
            pending.size = _BODY_SIZE.unpack_from(payload)[2]
        elif kind == _BODY:
            pending.body.append(payload)
            pending.received += len(payload)
        else:
            raise InvalidFrameError(f"a second content header on channel {channel}")
        if pending.received < pending.size:
            return
        body = pending.body
        del self.pending[channel]
        delivery = Delivery(
            *pending.fields,
            pending.raw_header,
            body[0] if len(body) == 1 else b"".join(body),
            pending.consumer.channel,
        )
        try:
            pending.consumer.callback(delivery)
        except Exception:
            log.exception("consumer_callback_failed", consumer_tag=delivery.consumer_tag)


def install() -> None:
    """Make every aiormq connection opened from now on read with `FrameReceiver`
    (aiormq builds its receiver from its module's name at connect)."""
    aiormq.connection.FrameReceiver = FrameReceiver  # type: ignore[misc]
