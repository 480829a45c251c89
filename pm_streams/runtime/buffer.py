"""Faust's producer buffer without per-message settings lookups and waits.

Every table write and `send_soon` goes through the producer buffer, and the conductor
asks it for its size before delivering each fetched record (`wait_until_ebb`), as
does `transport.Consumer`. Faust's `ProducerBuffer.size` reads two settings through
Faust's settings registry on every call, and `flush_atmost` (every commit flushes the
buffer first) waits for each message with its own `asyncio.wait_for`, a task per
message: together 4 to 8 % of the worker per fill in a profile of the pipeline bench.

`Buffer` keeps Faust's contract (messages are published in the order put, one at a
time by `_handle_pending`; `flush_atmost(n)` returns after at most about `n` messages
were sent, when the buffer is empty, or after 0.1 s without progress) with the size
read off the queue and one plain future per flush wait; Faust's `message_sent` event,
which only its own `flush_atmost` waited on, is no longer set. The threaded producer
(`producer_threaded`) is not supported.

A message for a Kafka topic (a table's changelog record, a `send_soon`) is handed to
the aiokafka producer here, as Faust's `Topic.publish_message` and its producer's
`send` would, without their layers per record (the producer lookup, the sensor and
signal hooks with nothing connected, the transaction branch): the send is checked by
`transport.Producer` as every send of the worker, and the message's future and its
callback (a table's persisted offset) are settled as Faust's `_on_published` does.
Other channels, and a transactional app, take Faust's own path.

Upstream: faust-streaming's `ProducerBuffer.size` reads `app.conf.producer_threaded`
per call and `flush_atmost` runs `asyncio.wait_for` per message; each buffered message
goes through `Topic.publish_message` and `Producer.send`.
Delete when: faust's buffer does neither.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from functools import partial
from typing import Any

from aiokafka.errors import KafkaError
from faust.exceptions import ProducerSendError
from faust.topics import Topic
from faust.transport.producer import ProducerBuffer
from faust.types import ProcessingGuarantee
from mode import Service

from pm_streams.logs import get_logger

log = get_logger("pm_streams.runtime.buffer")

NO_PROGRESS = 0.1
"""Seconds `flush_atmost` waits for the next send before it returns, as Faust's does."""


class Buffer(ProducerBuffer):
    def __post_init__(self) -> None:
        super().__post_init__()
        self.sent = 0
        self._progress: asyncio.Future[None] | None = None
        self.direct = False  # `install`: whether Kafka topics' messages are sent here

    def put(self, fut: Any) -> None:
        self.pending.put_nowait(fut)

    @property
    def size(self) -> int:
        return len(self.pending._queue)  # type: ignore[attr-defined]

    async def flush_atmost(self, max_messages: int | None) -> int:
        first = self.sent
        while self.size and (max_messages is None or self.sent - first < max_messages):
            if self.state != "running":
                raise RuntimeError("Cannot flush: Producer not Running")
            progress = self._progress
            if progress is None or progress.done():
                progress = self._progress = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(NO_PROGRESS):
                    await asyncio.shield(progress)
            except TimeoutError:
                break
        return self.sent - first

    async def _send_pending(self, fut: Any) -> None:
        message = fut.message
        channel = message.channel
        if not self.direct or type(channel) is not Topic:
            await channel.publish_message(fut, wait=False)
            return
        producer: Any = self.app.producer  # type: ignore[union-attr]
        topic = channel.get_topic_name()
        headers = message.headers
        timestamp = message.timestamp
        try:
            sent = await producer._ensure_producer().send(
                topic,
                message.value,
                key=message.key,
                partition=message.partition,
                timestamp_ms=int(timestamp * 1000.0) if timestamp else timestamp,
                headers=list(headers.items()) if isinstance(headers, Mapping) else headers,
            )
        except KafkaError as exc:
            raise ProducerSendError(f"Error while sending: {exc!r}") from exc
        sent.add_done_callback(partial(producer.check_sent, topic))
        sent.add_done_callback(partial(_published, fut))

    # mode starts a service's tasks by name; an override must be a task as well.
    @Service.task
    async def _handle_pending(self) -> None:
        get_pending = self.pending.get
        send_pending = self._send_pending
        while not self.should_stop:
            msg = await get_pending()
            await send_pending(msg)
            self.sent += 1
            progress = self._progress
            if progress is not None and not progress.done():
                progress.set_result(None)


def _published(fut: Any, sent: asyncio.Future[Any]) -> None:
    """Settle a buffered message from its send, as Faust's `Topic._on_published`."""
    try:
        result = sent.result()
    except Exception as exc:
        fut.set_exception(exc)
        log.warning("send_failed", topic=fut.message.channel.get_topic_name(), error=repr(exc))
    else:
        fut.set_result(result)
        if fut.message.callback:
            fut.message.callback(fut)


def install(producer: Any) -> None:
    """Give a Faust producer (not yet started) this buffer instead of its own."""
    if producer.app.conf.producer_threaded:
        raise RuntimeError("the threaded producer keeps Faust's own buffer")
    buffer = Buffer(loop=producer.loop, beacon=producer.beacon)
    buffer.app = producer.app
    # Settings are read once: through Faust's registry they cost a lookup per message.
    buffer.direct = producer.app.conf.processing_guarantee == ProcessingGuarantee.AT_LEAST_ONCE
    producer.buffer = buffer
