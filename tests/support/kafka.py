"""Kafka-side helpers for tests and benches: find a record in a partition."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from pm_streams.settings import Settings


async def first_record(tp: TopicPartition, match: Callable[[Any], bool], polls: int = 20) -> Any:
    """The first record of `tp` (from offset 0) for which `match(record)` holds."""
    consumer = AIOKafkaConsumer(bootstrap_servers=Settings().kafka_bootstrap, group_id=None)
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, 0)
        for _ in range(polls):
            for record in (await consumer.getmany(tp, timeout_ms=500)).get(tp, []):
                if match(record):
                    return record
    finally:
        await consumer.stop()
    raise AssertionError(f"no matching record in {tp}")
