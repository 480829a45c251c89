"""Kafka → RabbitMQ: republish every change as durable, persistent messages.

Reads the positions changelog (each record is a state and the effects of the change
that produced it) and the outbox topic (portfolio and snapshot events). Publishes
with publisher confirms, then commits the Kafka offsets. RabbitMQ down → nothing is
committed, the backlog waits in Kafka and drains in per-partition (per-asset) order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import aio_pika
import orjson
from aiokafka import ConsumerRecord

from bridges.publish import Outgoing, check_channel, publish_batch
from pm_streams.consumer import BatchConsumer, decoded
from pm_streams.deps import Deps
from pm_streams.events import position_events
from pm_streams.exposure import Exposure
from pm_streams.logs import get_logger
from pm_streams.names import OUTPUT_EVENT_TYPES
from pm_streams.stored import SharedDecode

log = get_logger("bridges.outbound")


class Republisher(BatchConsumer):
    name = "republisher"
    linger_ms = 20  # one round of publisher confirms per 20 ms at most, not per change

    def __init__(
        self,
        deps: Deps,
        exposure: Exposure | None = None,
        decode: SharedDecode | None = None,
        **kwargs: Any,
    ) -> None:
        names = deps.settings.kafka
        topics = (names.positions_changelog, names.outbox_topic)
        super().__init__(deps, topics, names.republisher_group, **kwargs)
        self.exposure = exposure or Exposure()
        self.decode = decode or SharedDecode()
        self.connection: aio_pika.abc.AbstractConnection | None = None
        self.channel: aio_pika.abc.AbstractChannel | None = None

    async def on_open(self) -> None:
        if self.channel is not None and not self.channel.is_closed:
            return
        self.connection = await aio_pika.connect(self.settings.rabbitmq_url, timeout=10)
        self.channel = await self.connection.channel(publisher_confirms=True)
        for event_type in OUTPUT_EVENT_TYPES:
            await self.channel.declare_queue(self.settings.queues.output(event_type), durable=True)
        check_channel(await self.channel.get_underlay_channel())

    async def on_close(self) -> None:
        if self.connection is not None and not self.connection.is_closed:
            try:
                async with asyncio.timeout(5):  # a half-dead connection may never answer
                    await self.connection.close()
            except Exception as exc:
                log.debug("close_failed", error=repr(exc))
        self.connection = self.channel = None

    def events(self, record: ConsumerRecord) -> list[tuple[str, dict[str, Any]]]:
        if record.topic == self.settings.kafka.outbox_topic:
            body = orjson.loads(record.value)
            return [(str(body["event_type"]), body)]
        if record.value is None:
            return []
        now = self.clock.now()
        return [
            e
            for view in self.decode.books(record.partition, record.offset, record.value)
            for e in position_events(view, now, self.exposure.as_of(view))
        ]

    async def handle(self, records: Sequence[ConsumerRecord]) -> None:
        if self.channel is None or self.channel.is_closed:
            raise ConnectionError("rabbitmq channel closed")
        events = await decoded(records, self.events, on_error=self.quarantine)
        messages = []
        counts: dict[str, int] = {}
        for i, (event_type, body) in enumerate(events):
            if i and i % 256 == 0:
                await asyncio.sleep(0)  # the agents may share this loop
            messages.append(
                Outgoing(
                    routing_key=self.settings.queues.output(event_type),
                    body=orjson.dumps(body),
                    message_id=str(body.get("event_id", "")),
                    trace_id=str(body.get("trace_id", "")),
                )
            )
            counts[event_type] = counts.get(event_type, 0) + 1
        for event_type, n in counts.items():
            self.metrics.inc("pm_events_out_total", n, event_type=event_type)
        if messages:
            amqp = await self.channel.get_underlay_channel()
            async with asyncio.timeout(30):
                await publish_batch(amqp, messages)
