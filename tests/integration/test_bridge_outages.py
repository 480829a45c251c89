"""RabbitMQ restarted and Kafka stopped mid-stream, with a real worker: every input
applied exactly once, every output delivered, nothing dead-lettered.

These restart the shared local services: keep them short and in this one file."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.support.rabbit import fill_stream, matches, read_queue, recompute, services
from tests.support.worker import Deployment, WorkerProcess, publish

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


async def _publish_retrying(queue: str, messages: list[Any], timeout: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            await publish(queue, messages)
            return
        except Exception:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(1)


async def _assert_applied_once_and_delivered(
    worker: WorkerProcess, deployment: Deployment, fills: list[dict[str, Any]]
) -> None:
    expected = recompute(fills)
    for asset, book in expected.items():
        await worker.wait_for(
            f"/api/v1/positions/{asset}",
            lambda s, b, bk=book: s == 200 and matches(b, bk),
            timeout=120,
        )
    want = {(a, v) for a, b in expected.items() for v in range(1, b.legs[0].version + 1)}
    prefix = deployment.output_prefix
    got: list[Any] = []

    def complete(more: list[Any]) -> bool:
        got.extend(more)
        more.clear()
        return {(m.body["asset"], m.body["version"]) for m in got} >= want

    async def both() -> None:
        while True:
            more = await read_queue(f"{prefix}.position_updated")
            more += await read_queue(f"{prefix}.position_closed")
            if complete(more):
                return
            await asyncio.sleep(0.5)

    try:
        await asyncio.wait_for(both(), timeout=90)
    except TimeoutError:
        seen = {(m.body["asset"], m.body["version"]) for m in got}
        missing = sorted(want - seen)
        raise AssertionError(
            f"{len(missing)} outputs never arrived, first {missing[:10]}\n{worker.tail(120)}"
        ) from None
    # Redelivered outputs carry the same event id: distinct ids == applied versions.
    ids = {m.body["event_id"] for m in got}
    per_version = {(m.body["asset"], m.body["version"]) for m in got}
    assert per_version == want
    updated = [m for m in got if m.body["event_type"] == "position_updated"]
    assert len({m.body["event_id"] for m in updated}) <= len(want) <= len(ids)
    for queue in (deployment.order_queue, deployment.position_queue):
        assert await read_queue(queue + ".dlq") == []


async def test_rabbitmq_restart_mid_stream(
    deployment: Deployment, workers: list[WorkerProcess]
) -> None:
    worker = WorkerProcess(deployment).start()
    workers.append(worker)
    await worker.wait_healthy()
    fills = fill_stream(["RRAUSDT", "RRBUSDT"], 300, tag="r")
    half = len(fills) // 2
    await publish(deployment.order_queue, fills[:half])
    await worker.wait_for(
        "/api/v1/positions/RRAUSDT", lambda s, b: s == 200 and b["version"] >= 20, timeout=60
    )
    await asyncio.to_thread(services, "restart", "rabbitmq")
    await _publish_retrying(deployment.order_queue, fills[half:])
    await _assert_applied_once_and_delivered(worker, deployment, fills)
    await worker.wait_for("/health", lambda s, b: b.get("queue_connected") is True, timeout=60)


async def test_kafka_stopped_ten_seconds_mid_stream(
    deployment: Deployment, workers: list[WorkerProcess]
) -> None:
    worker = WorkerProcess(deployment).start()
    workers.append(worker)
    await worker.wait_healthy()
    fills = fill_stream(["KOAUSDT", "KOBUSDT"], 300, tag="ko")
    third = len(fills) // 3
    await publish(deployment.order_queue, fills[:third])
    await worker.wait_for(
        "/api/v1/positions/KOAUSDT", lambda s, b: s == 200 and b["version"] >= 20, timeout=60
    )
    await asyncio.to_thread(services, "stop", "kafka")
    try:
        # Arrives while Kafka is down: must wait in RabbitMQ, never be dead-lettered.
        await publish(deployment.order_queue, fills[third : 2 * third])
        await asyncio.sleep(10)
        for queue in (deployment.order_queue, deployment.position_queue):
            assert await read_queue(queue + ".dlq") == []
    finally:
        await asyncio.to_thread(services, "start", "kafka")
    await publish(deployment.order_queue, fills[2 * third :])
    await _assert_applied_once_and_delivered(worker, deployment, fills)
