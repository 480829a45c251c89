"""A changelog record Kafka refuses stops the worker before the input offset of its
event is committed; after the fault is cleared the event is applied again."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from pm_streams.names import KafkaNames
from pm_streams.runtime.gaps import Watermarks
from pm_streams.settings import Settings
from tests.support.kafka import first_record
from tests.support.rabbit import fill
from tests.support.worker import Deployment, WorkerProcess, publish

pytestmark = pytest.mark.integration


def has_size(size: str) -> Any:
    return lambda status, body: status == 200 and body.get("size") == size


async def _topic_config(topic: str, **configs: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=Settings().kafka_bootstrap)
    await admin.start()
    try:
        resource = ConfigResource(ConfigResourceType.TOPIC, topic, configs=configs)
        await admin.alter_configs([resource])
    finally:
        await admin.close()


async def _committed(group: str, tp: TopicPartition) -> int | None:
    admin = AIOKafkaAdminClient(bootstrap_servers=Settings().kafka_bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    meta = offsets.get(tp)
    return None if meta is None else meta.offset


async def _offset_of(tp: TopicPartition, marker: bytes) -> int:
    """The offset of the first record of `tp` whose value contains `marker`."""
    record = await first_record(tp, lambda r: r.value is not None and marker in r.value)
    return int(record.offset)


async def _wait_committed(group: str, tp: TopicPartition) -> int:
    """The partition's committed offset once there is one (a commit interval)."""
    for _ in range(60):
        committed = await _committed(group, tp)
        if committed is not None:
            return committed
        await asyncio.sleep(0.5)
    raise AssertionError(f"nothing committed for {tp}")


async def test_a_refused_changelog_record_stops_the_worker_before_its_offset_is_committed(
    deployment: Deployment, workers: list[WorkerProcess]
) -> None:
    names = KafkaNames(deployment.app_id)
    partition = Watermarks(deployment.partitions).partition_of("BTCUSDT")
    tp = TopicPartition(names.input_topic, partition)
    worker = WorkerProcess(deployment).start()
    workers.append(worker)
    await worker.wait_ready()
    await publish(deployment.order_queue, [fill("s-1", "BUY", "1", "100")])
    await worker.wait_for("/api/v1/positions/BTCUSDT", has_size("1"))
    await _wait_committed(deployment.app_id, tp)  # commits work before the fault

    # Kafka now refuses every record of the positions changelog (too large).
    await _topic_config(names.positions_changelog, **{"max.message.bytes": "64"})
    await publish(deployment.order_queue, [fill("s-2", "BUY", "1", "100")])
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while worker.proc is not None and worker.proc.poll() is None:
        assert loop.time() < deadline, "the worker went on after a refused changelog record"
        await asyncio.sleep(0.2)
    assert worker.proc is not None and worker.proc.returncode != 0
    assert "kafka_send_failed" in worker.tail(400)
    after = await _committed(deployment.app_id, tp)
    assert after is not None and after <= await _offset_of(tp, b"s-2")  # not committed

    await _topic_config(names.positions_changelog, **{"max.message.bytes": "1048588"})
    worker = WorkerProcess(deployment, port=worker.port).start()
    workers.append(worker)
    await worker.wait_ready()
    body = await worker.wait_for("/api/v1/positions/BTCUSDT", has_size("2"), timeout=30)
    assert body["version"] == 2
