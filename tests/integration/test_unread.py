"""Records Faust's fetch loop takes while flow is stopped are put back
(`runtime.transport.unread`), against a real Kafka: the next fetch returns them again,
from the first one; a partition no longer assigned is left alone."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from pm_streams.runtime.transport import unread
from pm_streams.settings import Settings

pytestmark = pytest.mark.integration


async def _drain(consumer: AIOKafkaConsumer, tp: TopicPartition, want: int) -> list[int]:
    offsets: list[int] = []
    for _ in range(40):
        batch = await consumer.getmany(tp, timeout_ms=250)
        offsets += [r.offset for r in batch.get(tp, [])]
        if len(offsets) >= want:
            break
    return offsets


async def test_records_taken_but_not_delivered_are_fetched_again() -> None:
    bootstrap = Settings().kafka_bootstrap
    topic = f"test-unread-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for i in range(6):
            await producer.send_and_wait(topic, f"v{i}".encode(), partition=0)
    finally:
        await producer.stop()
    tp, other = TopicPartition(topic, 0), TopicPartition(topic + "-gone", 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, 2)  # as a recovery seeks to the first record it needs
        taken = await consumer.getmany(tp, timeout_ms=5000)
        assert [r.offset for r in taken[tp]] == [2, 3, 4, 5]
        assert await consumer.position(tp) == 6  # aiokafka moved past them

        unread(consumer, {**taken, other: taken[tp]})

        assert await consumer.position(tp) == 2
        assert await _drain(consumer, tp, 4) == [2, 3, 4, 5]
    finally:
        await consumer.stop()
