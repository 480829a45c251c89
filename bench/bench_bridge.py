"""Bridge throughput against the real local RabbitMQ and Kafka: `python bench/bench_bridge.py [N]`.

Prints, measured in one run on the same machine:
  * raw ceiling: aio-pika consume + aiokafka produce (acks=all, idempotent) of the same
    bodies, no parsing, acked after Kafka with the same batched multiple acks;
  * inbound bridge: the real `InboundBridge` (validate, canonical event, produce, ack);
  * their ratio (target >= 0.8);
  * outbound: the real `Republisher` (changelog records -> position events -> RabbitMQ
    with publisher confirms, then commit), events/s (target >= 3,000/s).
Each phase starts with N messages waiting in its own queue / topic and ends when the
last one is acked / confirmed. Queues and topics are named per run and deleted after.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections import deque
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aio_pika
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bridges.forward import kafka_producer
from bridges.inbound import InboundBridge, queue_arguments
from bridges.outbound import Republisher
from pm_streams.clock import SystemClock
from pm_streams.deps import Deps
from pm_streams.domain import EngineConfig, apply, parse_order_executed
from pm_streams.metrics import Metrics
from pm_streams.names import QueueNames
from pm_streams.settings import Settings
from pm_streams.stored import Stored, stored_to_bytes
from tests.support.cleanup import drop

URL = "amqp://guest:guest@127.0.0.1/"
BOOTSTRAP = "127.0.0.1:9092"
ASSETS = [f"B{i}USDT" for i in range(16)]


def fills(n: int, tag: str) -> list[dict[str, Any]]:
    return [
        {
            "event_type": "order_executed",
            "order_id": f"o-{tag}-{i}",
            "execution_id": f"{tag}-{i}",
            "asset": ASSETS[i % len(ASSETS)],
            "side": "BUY" if i % 3 else "SELL",
            "execution_price": f"{50000 + i % 97}.5",
            "execution_quantity": "0.01",
            "execution_fees": "0.02",
            "mode": "one-way",
            "executed_at": "2025-01-15T10:10:00Z",
            "trace_id": f"trace-{tag}-{i}",
        }
        for i in range(n)
    ]


async def create_topics(*names: str, partitions: int = 8) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    finally:
        await admin.close()


async def fill_queue(queue: str, bodies: list[bytes]) -> None:
    connection = await aio_pika.connect(URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(queue, durable=True, arguments=queue_arguments())
        for start in range(0, len(bodies), 2000):
            await asyncio.gather(
                *(
                    channel.default_exchange.publish(
                        aio_pika.Message(b, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                        routing_key=queue,
                    )
                    for b in bodies[start : start + 2000]
                )
            )


async def raw_ceiling(queue: str, topic: str, n: int, prefetch: int) -> float:
    """Consume, produce the body as is (keyed by a byte slice), ack after Kafka."""
    settings = Settings()
    producer = kafka_producer(settings)
    await producer.start()
    connection = await aio_pika.connect(URL)
    done = asyncio.Event()
    acked = 0
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        q = await channel.declare_queue(queue, durable=True, arguments=queue_arguments())
        inbox: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()
        inflight: deque[tuple[Any, asyncio.Future[Any]]] = deque()
        wake = asyncio.Event()

        async def forward() -> None:
            while True:
                m = await inbox.get()
                inflight.append((m, await producer.send(topic, m.body, key=m.body[-24:])))
                wake.set()

        async def ack() -> None:
            nonlocal acked
            while True:
                if not inflight:
                    wake.clear()
                    await wake.wait()
                    continue
                await inflight[0][1]
                last, count = None, 0
                while inflight and inflight[0][1].done():
                    last, _ = inflight.popleft()
                    count += 1
                assert last is not None
                await last.ack(multiple=True)
                acked += count
                if acked >= n:
                    done.set()

        started = time.perf_counter()
        tasks = [asyncio.ensure_future(forward()), asyncio.ensure_future(ack())]
        await q.consume(inbox.put)
        await asyncio.wait_for(done.wait(), timeout=300)
        elapsed = time.perf_counter() - started
        for t in tasks:
            t.cancel()
        return n / elapsed
    finally:
        await connection.close()
        await producer.stop()


async def bridge_rate(settings: Settings, n: int) -> float:
    metrics = Metrics()
    bridge = InboundBridge(settings, metrics)
    await bridge.start()
    try:
        # Like the raw loop, timed from a connected session (not the producer start).
        while not bridge.connected:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        started = time.perf_counter()
        while metrics.total("pm_bridge_acked_total") < n:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        return n / (time.perf_counter() - started)
    finally:
        await bridge.stop()


async def outbound_rate(settings: Settings, n_changes: int) -> tuple[float, int]:
    """Changelog records of real books (one fill each) -> Republisher -> RabbitMQ."""
    changelog = settings.kafka.positions_changelog
    await create_topics(changelog, settings.kafka.outbox_topic)
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, linger_ms=5, acks="all")
    await producer.start()
    books: dict[str, Any] = {}
    cfg = EngineConfig()
    now = datetime.now(UTC)
    events = 0
    try:
        futures = []
        for raw in fills(n_changes, "out"):
            event = parse_order_executed(raw, new_trace_id=lambda: "t")
            book, effects = apply(books.get(event.asset), event, now, cfg, new_id=lambda: "p")
            books[event.asset] = book
            events += sum(1 for e in effects if type(e).__name__ == "Publish")
            futures.append(
                await producer.send(
                    changelog, stored_to_bytes(Stored(book)), key=event.asset.encode()
                )
            )
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    republisher = Republisher(Deps(settings, Metrics(), SystemClock()))
    started = time.perf_counter()
    await republisher.start()
    try:
        connection = await aio_pika.connect(URL)
        async with connection:
            channel = await connection.channel()
            while True:
                count = 0
                for name in settings.queues.outputs:
                    q = await channel.declare_queue(name, durable=True)
                    count += q.declaration_result.message_count or 0
                if count >= events:
                    break
                await asyncio.sleep(0.05)
        return events / (time.perf_counter() - started), events
    finally:
        await republisher.stop()


async def main(n: int) -> None:
    run = uuid.uuid4().hex[:8]
    raw_q, bridge_q, other_q = f"bench-{run}.raw", f"bench-{run}.in", f"bench-{run}.ws"
    settings = replace(
        Settings(),
        app_id=f"bench-{run}",
        queues=QueueNames(
            position_updates=other_q, order_executed=bridge_q, output_prefix=f"bench-{run}.out"
        ),
    )
    raw_topic = f"bench-{run}.raw-events"
    await create_topics(raw_topic, settings.kafka.input_topic)
    bodies = [orjson.dumps(f) for f in fills(n, run)]
    try:
        print(f"filling two queues with {n} fills each ...", flush=True)
        await fill_queue(raw_q, bodies)
        await fill_queue(bridge_q, bodies)
        raw = await raw_ceiling(raw_q, raw_topic, n, InboundBridge.prefetch)
        bridge = await bridge_rate(settings, n)
        print(f"raw ceiling (aio-pika + aiokafka, no logic): {raw:9,.0f} msg/s")
        print(f"inbound bridge (validate, forward, ack):     {bridge:9,.0f} msg/s")
        print(f"ratio bridge/raw:                            {bridge / raw:9.2f}  (target >= 0.8)")
        out, events = await outbound_rate(settings, n)
        print(
            f"outbound republisher with confirms:          {out:9,.0f} events/s "
            f"({events} events; target >= 3,000/s)"
        )
    finally:
        inputs = (raw_q, bridge_q, other_q)
        dlqs = map(QueueNames.dlq, (bridge_q, other_q))
        await drop(app_ids=[settings.app_id], queues=[*inputs, *dlqs, *settings.queues.outputs])


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000))
