"""A Kafka consumer loop for side effects outside the agents' hot path.

Reads batches, hands each batch to `handle` (publish to RabbitMQ, write Postgres),
and commits the offsets only after `handle` returned. When `handle` fails (the
dependency is down) nothing is committed: the consumer seeks back to the last
commit and retries after a backoff, so the backlog waits in Kafka.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from mode import Service

from pm_streams.backoff import Backoff
from pm_streams.deps import Deps
from pm_streams.domain import UNDECODABLE
from pm_streams.logs import get_logger

log = get_logger("pm_streams.consumer")

T = TypeVar("T")


async def decoded(
    records: Sequence[ConsumerRecord],
    decode: Callable[[ConsumerRecord], Iterable[T]],
    every: int = 32,
    *,
    on_error: Callable[[ConsumerRecord, Exception], None] | None = None,
) -> list[T]:
    """Everything `decode` makes of the records, in order, giving the event loop back
    every `every` records. A batch of a thousand changelog records takes tens of
    milliseconds to decode; the agents sharing the loop would otherwise wait it out.

    A record `decode` cannot read goes to `on_error` and is skipped (SPEC §9 rev 2: an
    undecodable or unknown-version record is quarantined, never a crash loop); without
    `on_error` the error propagates."""
    out: list[T] = []
    for i, record in enumerate(records):
        if i and i % every == 0:
            await asyncio.sleep(0)
        try:
            out.extend(decode(record))
        except UNDECODABLE as exc:
            if on_error is None:
                raise
            on_error(record, exc)
    return out


async def rewind(consumer: AIOKafkaConsumer) -> None:
    """Seek every assigned partition back to its committed offset, so a failed batch
    is read again. A partition this group never committed goes back to its beginning
    (the group's `auto_offset_reset`); aiokafka's `seek_to_committed` would leave it
    where it is, after the failed batch, and those records would never be handled."""
    for tp in consumer.assignment():
        committed = await consumer.committed(tp)
        if committed is None:
            await consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, committed)


class BatchConsumer(Service):
    name = "consumer"
    max_records = 1000
    poll_ms = 100
    linger_ms = 0
    """How long the broker may hold a fetch to gather more records (0: answer at once).
    A batch costs a transaction or a round of confirms whatever its size, so a consumer
    that is not on a latency path trades this much delay for far fewer batches."""

    def __init__(self, deps: Deps, topics: Sequence[str], group: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings, self.metrics, self.clock = deps
        self.topics = tuple(topics)
        self.group = group
        self.consumer: AIOKafkaConsumer | None = None
        self.last_handled_ms = 0

    async def handle(self, records: Sequence[ConsumerRecord]) -> None:
        raise NotImplementedError

    def quarantine(self, record: ConsumerRecord, exc: Exception) -> None:
        """Log and count a record this consumer cannot decode; it is skipped."""
        self.skipped(record, exc, "record_quarantined", "pm_quarantined_records_total")

    def skipped(self, record: ConsumerRecord, exc: Exception, event: str, metric: str) -> None:
        """One error line and one count for a record that is skipped, not retried."""
        self.metrics.inc(metric, consumer=self.name)
        log.error(
            event,
            consumer=self.name,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            error=repr(exc),
        )

    async def on_open(self) -> None:
        """Open connections to the side-effect target (called before consuming)."""

    async def on_close(self) -> None:
        """Close them."""

    async def on_start(self) -> None:
        self.add_future(self._supervise())

    async def on_stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
        await self.on_close()

    def _new_consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            *self.topics,
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.max_records,
            fetch_max_wait_ms=self.linger_ms or 500,
            fetch_min_bytes=512 * 1024 if self.linger_ms else 1,
            session_timeout_ms=int(self.settings.session_timeout * 1000),
            heartbeat_interval_ms=int(min(3.0, self.settings.session_timeout / 3) * 1000),
        )

    async def _supervise(self) -> None:
        backoff = Backoff()
        while not self.should_stop:
            try:
                if self.consumer is None:
                    consumer = self._new_consumer()
                    await consumer.start()
                    self.consumer = consumer
                await self.on_open()
                await self._drain(self.consumer)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.metrics.inc("pm_consumer_errors_total", consumer=self.name)
                delay = backoff.failed()
                log.warning(f"{self.name}_retry", error=repr(exc), retry_in=delay)
                await self.on_close()
                if self.consumer is not None:
                    try:
                        await rewind(self.consumer)
                    except Exception as seek_exc:
                        # Unrewound, the consumer must not go on past the failed batch.
                        log.warning(f"{self.name}_seek_failed", error=repr(seek_exc))
                        await self._drop_consumer()
                await asyncio.sleep(delay)
            else:
                backoff.reset()

    async def _drop_consumer(self) -> None:
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            try:
                await consumer.stop()
            except Exception as exc:
                log.debug(f"{self.name}_stop_failed", error=repr(exc))

    async def _drain(self, consumer: AIOKafkaConsumer) -> None:
        while not self.should_stop:
            batches = await consumer.getmany(timeout_ms=self.poll_ms, max_records=self.max_records)
            records = [r for part in batches.values() for r in part]
            if not records:
                continue
            records.sort(key=lambda r: (r.topic, r.partition, r.offset))
            await self.handle(records)
            await consumer.commit()
            newest = max(r.timestamp for r in records)
            self.last_handled_ms = newest
            self.metrics.set(
                "pm_consumer_lag_seconds", max(0.0, time.time() - newest / 1000), consumer=self.name
            )
            self.metrics.inc("pm_consumer_records_total", len(records), consumer=self.name)
