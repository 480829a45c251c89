"""The inbound bridge's Kafka side: its producer, and one validated event onto the
asset-keyed input topic.

An event is appended to the producer's open batch of its partition
(`pm_streams.runtime.append`; the partition of an asset is remembered) and its
delivery is acked when that batch is stored; what `append` leaves to aiokafka takes
`send`. The event object is left for this worker's positions agent under the bytes
it was sent as (`pm_streams.handoff`)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaProducer

from pm_streams.domain import Event, event_to_bytes
from pm_streams.handoff import Handoff
from pm_streams.runtime.append import PRODUCER_MAX_BATCH, KeyPartitions, append
from pm_streams.settings import Settings


def kafka_producer(settings: Settings) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=2,
        max_batch_size=PRODUCER_MAX_BATCH,
        # A batch not delivered within this time fails its futures; the session then
        # restarts and RabbitMQ redelivers. Long enough to ride out a broker restart.
        request_timeout_ms=40_000,
        retry_backoff_ms=200,
    )


class KafkaUnavailable(ConnectionError):
    """A write to Kafka failed or did not complete in time (never a rejection)."""


def is_kafka_error(exc: BaseException) -> bool:
    return type(exc).__module__.startswith("aiokafka")


class Forward:
    """`await forward(event)`: the future that is done when `event` is stored."""

    def __init__(
        self, producer: AIOKafkaProducer, topic: str, handoff: Handoff[Event] | None
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.handoff = handoff
        self.partition_of = KeyPartitions(producer, topic)

    async def __call__(self, event: Event) -> asyncio.Future[Any]:
        key, value = event.asset.encode(), event_to_bytes(event)
        if self.handoff is not None:
            self.handoff.put(value, event)
        appended = append(self.producer, self.topic, key, value, partition=self.partition_of(key))
        if appended is not None:
            batch_stored: asyncio.Future[Any] = appended[0].future
            return batch_stored
        try:
            sent: asyncio.Future[Any] = await self.producer.send(self.topic, key=key, value=value)
        except Exception as exc:
            raise KafkaUnavailable(f"send failed: {exc!r}") from exc
        return sent
