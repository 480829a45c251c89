"""SPEC §9 rev 2 against a real worker: an undecodable or unknown-version changelog
record (a rolling upgrade rolled back) is quarantined with a log line and a metric,
never a crash loop, and everything else flows."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tests.support.rabbit import fill, read_queue
from tests.support.worker import Deployment, WorkerProcess, publish

pytestmark = pytest.mark.integration

FUTURE = b'{"v": 99, "asset": "FUTUSDT", "note": "written by a newer version"}'


async def produce(topic: str, key: bytes, value: bytes, partition: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9092")
    await producer.start()
    try:
        await producer.send_and_wait(topic, key=key, value=value, partition=partition)
    finally:
        await producer.stop()


async def dead_letters(topic: str) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers="127.0.0.1:9092", auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        got = await consumer.getmany(timeout_ms=3000)
        return [r.value for part in got.values() for r in part]
    finally:
        await consumer.stop()


async def test_an_unreadable_book_dead_letters_its_events_and_the_rest_flows(
    deployment: Deployment, workers: list[WorkerProcess]
) -> None:
    worker = WorkerProcess(deployment).start()
    workers.append(worker)
    await worker.wait_healthy()
    await publish(deployment.order_queue, [fill("f-1", "BUY", "1", "10", asset="FUTUSDT")])
    await worker.wait_versions({"FUTUSDT": 1}, timeout=60)
    assert worker.stop() == 0

    # The asset's record as a newer version would write it, in its partition.
    status_partition = await _partition_of(deployment, "FUTUSDT")
    changelog = f"{deployment.app_id}-positions-changelog"
    await produce(changelog, b"FUTUSDT", FUTURE, status_partition)

    worker = WorkerProcess(deployment, port=worker.port).start()
    workers.append(worker)
    await worker.wait_healthy()
    await publish(
        deployment.order_queue,
        [
            fill("f-2", "BUY", "1", "10", asset="FUTUSDT"),
            fill("g-1", "BUY", "2", "20", asset="GOODUSDT"),
        ],
    )
    await worker.wait_versions({"GOODUSDT": 1}, timeout=15)
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        dead = await dead_letters(f"{deployment.app_id}.position-events.dlq")
        if any(b"f-2" in d for d in dead):
            break
        assert asyncio.get_running_loop().time() < deadline, dead
        await asyncio.sleep(0.5)
    worker.assert_running()  # no crash loop
    _, metrics = await worker.get("/metrics")
    assert "pm_engine_errors_total 0" not in metrics and "pm_engine_errors_total" in metrics
    status, body = await worker.get("/api/v1/positions/FUTUSDT")
    assert (status, body["error"]["code"]) == (503, "unreadable_record")
    status, body = await worker.get("/api/v1/positions")
    assert status == 200 and [p["asset"] for p in body["positions"]] == ["GOODUSDT"]
    # The republisher skipped the unreadable record (quarantined) and published the rest.
    assert 'pm_quarantined_records_total{consumer="republisher"} 1' in metrics
    assert 'pm_quarantined_records_total{consumer="sink"} 1' in metrics
    updated = await read_queue(f"{deployment.output_prefix}.position_updated")
    assert {m.body["asset"] for m in updated} >= {"GOODUSDT"}  # type: ignore[index]


async def _partition_of(deployment: Deployment, asset: str) -> int:
    from aiokafka.partitioner import DefaultPartitioner

    everything = list(range(deployment.partitions))
    return int(DefaultPartitioner()(asset.encode(), everything, everything))
