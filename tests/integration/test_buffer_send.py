"""The producer buffer's own send path (`runtime.buffer.Buffer._send_pending`) against a
real Kafka: buffered records arrive in order with their keys, partitions and
timestamps; each message's future holds its offset and its callback runs, as Faust's
`Topic.publish_message` does it; a record Kafka refuses fails its future and is kept
as the producer's failure (what stops the worker)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from pm_streams.app import faust_app
from pm_streams.settings import Settings
from tests.support.kafka import first_record

pytestmark = pytest.mark.integration


async def test_buffered_sends_arrive_settle_and_a_refused_one_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = uuid.uuid4().hex[:8]
    name = f"test-buffer-{run}"
    admin = AIOKafkaAdminClient(bootstrap_servers=Settings().kafka_bootstrap)
    await admin.start()
    try:
        topic_config = {"max.message.bytes": "2000"}
        await admin.create_topics([NewTopic(name, 2, 1, topic_configs=topic_config)])
    finally:
        await admin.close()
    app = faust_app(Settings(app_id=f"pmtest-buffer-{run}"))
    crashed: list[BaseException] = []

    async def crash(exc: BaseException) -> None:
        crashed.append(exc)

    monkeypatch.setattr(app, "crash", crash)
    topic = app.topic(name, key_type=bytes, value_type=bytes, value_serializer="raw")
    producer: Any = app.producer
    await producer.start()
    try:
        called: list[Any] = []
        futs = [
            topic.send_soon(
                key=f"k{i}".encode(),
                value=f"v{i}".encode(),
                partition=i % 2,
                timestamp=1_700_000_000.5 + i,
                callback=called.append,
            )
            for i in range(10)
        ]
        await asyncio.wait_for(producer.flush(), 10)
        await asyncio.sleep(0.1)  # done callbacks
        assert [f.result().offset for f in futs] == [i // 2 for i in range(10)]
        assert sorted(map(id, called)) == sorted(map(id, futs))  # each once, any order
        assert producer.failure is None
        record = await first_record(TopicPartition(name, 1), lambda r: r.offset == 2)
        assert (record.key, record.value, record.timestamp) == (b"k5", b"v5", 1_700_000_005_500)

        too_big = topic.send_soon(key=b"big", value=b"x" * 5000, partition=0)
        await asyncio.wait_for(producer.flush(), 10)
        await asyncio.sleep(0.1)
        assert too_big.done() and too_big.exception() is not None
        assert producer.failure is too_big.exception()
        assert crashed == [producer.failure]
    finally:
        await producer.stop()
