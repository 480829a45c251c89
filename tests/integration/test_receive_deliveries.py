"""Deliveries taken by the frame reader (`bridges.receive`) against a real RabbitMQ:
every message arrives whole, in order, with its properties, while a consumer that is
not registered, on the same connection, gets its messages from aiormq as before; the
acks of the taken deliveries settle the queue."""

from __future__ import annotations

import asyncio
import uuid

import aio_pika
import aiormq.connection
import pytest

from bridges import receive
from tests.support.rabbit import AMQP_URL

pytestmark = pytest.mark.integration


async def count(channel: aio_pika.abc.AbstractChannel, queue: str) -> int:
    declared = await channel.declare_queue(queue, durable=True, passive=True)
    return declared.declaration_result.message_count or 0


async def test_registered_and_plain_consumers_on_one_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(aiormq.connection, "FrameReceiver", receive.FrameReceiver)
    run = uuid.uuid4().hex[:8]
    fast_q, plain_q = f"test-receive-fast-{run}", f"test-receive-plain-{run}"
    bodies = [f'{{"i": {i}}}'.encode() for i in range(300)] + [b"x" * 400_000, b""]
    connection = await aio_pika.connect(AMQP_URL)
    try:
        publisher = await connection.channel(publisher_confirms=True)
        for name in (fast_q, plain_q):
            await publisher.declare_queue(name, durable=True)
        for i, body in enumerate(bodies):
            for name in (fast_q, plain_q):
                await publisher.default_exchange.publish(
                    aio_pika.Message(body, message_id=f"m-{i}", headers={"x-trace-id": f"t-{i}"}),
                    routing_key=name,
                )
        fast_ch = await (await connection.channel()).get_underlay_channel()
        plain_ch = await (await connection.channel()).get_underlay_channel()
        await fast_ch.basic_qos(prefetch_count=1000)
        await plain_ch.basic_qos(prefetch_count=1000)
        taken: list[receive.Delivery] = []
        plain: list[aiormq.abc.DeliveredMessage] = []
        done = asyncio.Event()

        def take(delivery: receive.Delivery) -> None:
            taken.append(delivery)
            if len(taken) == len(bodies) and len(plain) == len(bodies):
                done.set()

        async def slow(message: aiormq.abc.DeliveredMessage) -> None:
            plain.append(message)
            if len(taken) == len(bodies) and len(plain) == len(bodies):
                done.set()

        async def never(message: aiormq.abc.DeliveredMessage) -> None:
            raise AssertionError("a registered consumer's delivery went through aiormq")

        tag = f"pm-bridge.test.{run}"
        receive.register(tag, fast_ch, take)
        try:
            await fast_ch.basic_consume(fast_q, never, consumer_tag=tag)
            await plain_ch.basic_consume(plain_q, slow)
            await asyncio.wait_for(done.wait(), timeout=30)
        finally:
            receive.unregister(tag)
        assert [d.body for d in taken] == bodies
        assert [d.delivery_tag for d in taken] == list(range(1, len(bodies) + 1))
        assert [d.header.properties.message_id for d in taken] == [
            f"m-{i}" for i in range(len(bodies))
        ]
        assert taken[7].header.properties.headers == {"x-trace-id": "t-7"}
        assert {d.routing_key for d in taken} == {fast_q}
        assert not any(d.redelivered for d in taken)
        assert [m.body for m in plain] == bodies
        await fast_ch.basic_ack(taken[-1].delivery_tag, multiple=True)
        await plain_ch.basic_ack(plain[-1].delivery.delivery_tag, multiple=True)  # type: ignore[union-attr]
        await fast_ch.close()
        await plain_ch.close()
        check = await connection.channel()
        assert await count(check, fast_q) == 0
        assert await count(check, plain_q) == 0
    finally:
        async with connection.channel() as cleanup:
            for name in (fast_q, plain_q):
                await cleanup.queue_delete(name)
        await connection.close()
