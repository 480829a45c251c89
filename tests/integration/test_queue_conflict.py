"""An input queue declared elsewhere without `x-single-active-consumer`: the bridge
cannot declare it; the worker says which queue and the way out, and keeps running
(no restart loop of the whole process, no silent outage)."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest

from tests.support.worker import Deployment, WorkerProcess

pytestmark = pytest.mark.integration


async def test_a_queue_declared_without_single_active_consumer_is_named_with_the_way_out(
    deployment: Deployment, workers: list[WorkerProcess]
) -> None:
    connection = await aio_pika.connect("amqp://guest:guest@127.0.0.1/")
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(deployment.order_queue, durable=True)  # no arguments

    worker = WorkerProcess(deployment).start()
    workers.append(worker)
    await worker.wait_for("/livez", lambda st, b: st == 200)
    deadline = asyncio.get_running_loop().time() + 30
    while "queue_conflict" not in worker.tail(400):
        assert asyncio.get_running_loop().time() < deadline, worker.tail()
        await asyncio.sleep(0.5)
    line = next(x for x in worker.tail(400).splitlines() if '"queue_conflict"' in x)
    assert deployment.order_queue in line
    assert "rabbitmqctl delete_queue" in line and "x-single-active-consumer" in line
    _, metrics = await worker.get("/metrics")
    assert 'pm_bridge_restarts_total{cause="queue_conflict"}' in metrics
    worker.assert_running()
