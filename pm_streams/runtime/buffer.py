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

A message for a Kafka topic (a table's changelog record, a `send_soon`) is appended
to aiokafka's open batch of its partition here (`runtime.append`), without Faust's
`Topic.publish_message` and its producer's `send` and their layers per record (the
producer lookup, the sensor and signal hooks with nothing connected, the transaction
branch, a coroutine and a future per record); what `append` leaves to aiokafka takes
its `send`. Messages queued together are taken in one go. A failed batch is a failed
send for `transport.Producer` as every send of the worker, and each message's future
and its callback (a table's persisted offset) are settled from the batch's result as
Faust's `_on_published` does. Other channels, and a transactional app, take Faust's
own path. A table write (`runtime.writes.TableWriter`) is appended at once when nothing
queued or being sent is ahead of it (`append_now`): no message, future or queue hop per
record, and the table's persisted offset is set once per stored batch.

The buffer's limit (`MAX_MESSAGES`) is above what agent batches queue at once: Faust's 100
is less than one batch's table writes on a wide book (a record per asset changed), so the
conductor logged "producer buffer full" and waited for a flush before delivering the
next fetched record about twenty times a second under load (and took its slow,
coroutine-per-record delivery path while the buffer was over the limit).

Upstream: faust-streaming's `ProducerBuffer.size` reads `app.conf.producer_threaded`
per call and `flush_atmost` runs `asyncio.wait_for` per message; each buffered message
goes through `Topic.publish_message` and `Producer.send`.
Delete when: faust's buffer does neither.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import RecordMetadata
from faust.exceptions import ProducerSendError
from faust.topics import Topic
from faust.transport.producer import ProducerBuffer
from faust.types import ProcessingGuarantee
from mode import Service

from pm_streams.logs import get_logger
from pm_streams.runtime.append import append

log = get_logger("pm_streams.runtime.buffer")

NO_PROGRESS = 0.1
"""Seconds `flush_atmost` waits for the next send before it returns, as Faust's does."""

MAX_MESSAGES = 10_000
"""Queued messages above which the conductor waits (`wait_until_ebb`) before it delivers
the next fetched record: ten agent batches' table writes (`batch_max` 1,000 events), some
15 MB of records. Faust's is 100."""


class Buffer(ProducerBuffer):
    max_messages = MAX_MESSAGES

    def __post_init__(self) -> None:
        super().__post_init__()
        self.sent = 0
        self._progress: asyncio.Future[None] | None = None
        self.direct = False  # `install`: whether Kafka topics' messages are sent here
        self._batched: dict[Any, _Appended] = {}
        """aiokafka batch -> the records appended to it here."""
        self._sending = False  # `_handle_pending` awaits a message's `send`

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

    async def wait_until_ebb(self) -> None:
        """Wait until at most `max_messages` are queued (Kafka is slower than the agents)."""
        over = self.size - self.max_messages
        if over > 0:
            log.warning("producer_buffer_full", queued=self.size, limit=self.max_messages)
            await self.flush_atmost(over)

    def _append(self, fut: Any) -> bool:
        """Append a buffered Kafka record to aiokafka's open batch of its partition
        (`runtime.append`); the batch's own future settles every record appended here
        (`_settle`). False when the record must take `_send_pending` (not a Kafka
        topic, or a case `append` leaves to aiokafka's `send`)."""
        if not self.direct:
            return False
        message = fut.message
        channel = message.channel
        if type(channel) is not Topic:
            return False
        topic = channel.get_topic_name()
        timestamp = message.timestamp
        headers = message.headers
        joined = self._join(
            topic,
            message.key,
            message.value,
            message.partition,
            int(timestamp * 1000.0) if timestamp else None,
            list(headers.items()) if isinstance(headers, Mapping) else headers,
        )
        if joined is None:
            return False
        entry, metadata = joined
        entry.futures.append((fut, metadata.offset, metadata.timestamp))
        return True

    def append_now(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        partition: int | None,
        stored: Callable[[TopicPartition, int], None] | None = None,
        timestamp_ms: int | None = None,
    ) -> bool:
        """Append a record to aiokafka's open batch of its partition (None: the
        partitioner's) now, without a message and its future, when no queued message or
        `send` in progress could go before it (the order of the records put is kept).
        When the batch is stored, `stored(tp, offset)` is called once with the offset of
        its last record appended for that callback; a failed batch stops the worker
        (`_settle`). False: queue the record (`put`) instead."""
        if not self.direct or self._sending or self.pending._queue:  # type: ignore[attr-defined]
            return False
        joined = self._join(topic, key, value, partition, timestamp_ms, None)
        if joined is None:
            return False
        entry, metadata = joined
        if stored is not None:
            entry.stored[stored] = metadata.offset
        return True

    def _join(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        timestamp_ms: int | None,
        headers: Any,
    ) -> tuple[_Appended, Any] | None:
        """Append to aiokafka's open batch (`runtime.append`): the batch's entry here
        (settled by `_settle` when the batch is done) and the record's metadata, or None
        when `append` leaves the record to `send`."""
        kafka: Any = self.app.producer._producer  # type: ignore[union-attr]  # None: not started
        appended = append(
            kafka, topic, key, value, partition=partition, timestamp_ms=timestamp_ms,
            headers=headers,
        )  # fmt: skip
        if appended is None:
            return None
        batch, metadata = appended
        entry = self._batched.get(batch)
        if entry is None:
            entry = self._batched[batch] = _Appended()
            batch.future.add_done_callback(partial(self._settle, batch, topic))
        entry.records += 1
        return entry, metadata

    def _settle(self, batch: Any, topic: str, done: asyncio.Future[Any]) -> None:
        """Settle the records appended to `batch` here from the batch's result; a failed
        batch is a failed send (`Producer.failed`: the worker stops)."""
        appended = self._batched.pop(batch, None) or _Appended()
        waiting = appended.futures
        exc = _failure(done)
        if exc is not None:
            self.app.producer.failed(topic, exc)  # type: ignore[union-attr]
            for fut, _, _ in waiting:
                fut.set_exception(copy.copy(exc))
            log.warning("send_failed", topic=topic, error=repr(exc), records=appended.records)
            return
        result = done.result()
        tp = batch.tp
        base, timestamp, log_start = result.offset, result.timestamp, result.log_start_offset
        for stored, offset in appended.stored.items():
            stored(tp, base + offset)
        kind = 0 if timestamp == -1 else 1
        for fut, offset, own_timestamp in waiting:
            fut.set_result(
                RecordMetadata(
                    topic,
                    tp.partition,
                    tp,
                    base + offset,
                    own_timestamp if timestamp == -1 else timestamp,
                    kind,
                    log_start,
                )
            )
            callback = fut.message.callback
            if callback:
                callback(fut)

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
        pending = self.pending
        take = self._append
        send_pending = self._send_pending
        while not self.should_stop:
            msg = await pending.get()
            while True:  # then what is queued already, without a wait per record
                if not take(msg):
                    self._sending = True
                    try:
                        await send_pending(msg)
                    finally:
                        self._sending = False
                self.sent += 1
                progress = self._progress
                if progress is not None and not progress.done():
                    progress.set_result(None)
                if pending.empty():
                    break
                msg = pending.get_nowait()


class _Appended:
    """The records appended to one aiokafka batch here: buffered messages (future,
    offset in the batch, own timestamp), and per `append_now` callback the offset in the
    batch of the last record appended for it."""

    __slots__ = ("futures", "records", "stored")

    def __init__(self) -> None:
        self.records = 0
        self.futures: list[tuple[Any, int, int]] = []
        self.stored: dict[Callable[[TopicPartition, int], None], int] = {}


def _failure(done: asyncio.Future[Any]) -> BaseException | None:
    if done.cancelled():
        return asyncio.CancelledError("send cancelled")
    return done.exception()


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
