"""BatchConsumer against a real Kafka topic: a failed batch is handled again, never skipped."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord

from pm_streams.clock import SystemClock
from pm_streams.consumer import BatchConsumer
from pm_streams.deps import Deps
from pm_streams.metrics import Metrics
from pm_streams.settings import Settings
from pm_streams.topics import ensure_topics
from tests.support.cleanup import drop

pytestmark = pytest.mark.integration


class Flaky(BatchConsumer):
    """Fails its first `failures` batches (the dependency is down), then records offsets."""

    name = "flaky"

    def __init__(self, settings: Settings, topic: str, failures: int, want: int) -> None:
        deps = Deps(settings, Metrics(), SystemClock())
        super().__init__(deps, (topic,), f"{settings.app_id}-flaky")
        self.failures = failures
        self.handled: list[tuple[int, int]] = []
        self.want = want
        self.done = asyncio.Event()

    async def handle(self, records: Sequence[ConsumerRecord]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("dependency down")
        self.handled.extend((r.partition, r.offset) for r in records)
        if len(set(self.handled)) >= self.want:
            self.done.set()


@pytest.mark.parametrize("failures", [1, 3])
async def test_a_failed_first_batch_is_handled_again(failures: int) -> None:
    """A fresh group has no committed offset: the retry must start from the beginning
    (aiokafka's seek_to_committed leaves such partitions where they are)."""
    settings = Settings(app_id=f"pmcons-{uuid.uuid4().hex[:10]}", partitions=4)
    await ensure_topics(settings)
    topic = settings.kafka.input_topic
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        sent = [
            await (await producer.send(topic, key=f"k{i % 8}".encode(), value=b"x"))
            for i in range(200)
        ]
    finally:
        await producer.stop()
    want = {(m.partition, m.offset) for m in sent}
    consumer = Flaky(settings, topic, failures, len(want))
    await consumer.start()
    try:
        await asyncio.wait_for(consumer.done.wait(), timeout=60)
    finally:
        await consumer.stop()
        await drop(app_ids=[settings.app_id])
    assert sorted(consumer.handled) == sorted(want)  # each once: no batch skipped or doubled
