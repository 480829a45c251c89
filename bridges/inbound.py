"""RabbitMQ → Kafka: validate at the edge, forward canonical events keyed by asset.

Guarantees (SPEC §3.3):
- a message is acked only after Kafka acknowledged the write (acks=all);
- a rejected message is published to `<queue>.dlq` (publisher confirm awaited) with
  its reason in headers, then acked: it never reaches Kafka;
- a Kafka failure is not a rejection: the channel is closed, so RabbitMQ requeues
  everything unacked in order, and consumption resumes after a backoff;
- per-asset order: each input queue is declared with `x-single-active-consumer`,
  so with several workers exactly one bridge consumes a queue at a time, and it
  forwards in delivery order through an idempotent producer (no reordering on retry).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aio_pika
from aiokafka import AIOKafkaProducer
from mode import Service

from pm_streams.domain import (
    Event,
    RejectedInput,
    decode_json,
    event_to_bytes,
    parse_order_executed,
    parse_position_update,
)
from pm_streams.logs import bound_trace, get_logger, new_trace_id
from pm_streams.metrics import Metrics
from pm_streams.settings import Settings

log = get_logger("bridges.inbound")

Parser = Callable[[bytes], Event]


def parser_for(kind: str) -> Parser:
    parse = parse_position_update if kind == "position" else parse_order_executed

    def parse_body(body: bytes) -> Event:
        return parse(decode_json(body), new_trace_id=new_trace_id)

    return parse_body


@dataclass(frozen=True, slots=True)
class Source:
    queue: str
    kind: str  # "position" | "order_executed"


def sources(settings: Settings) -> tuple[Source, ...]:
    q = settings.queues
    return (Source(q.position_updates, "position"), Source(q.order_executed, "order_executed"))


def queue_arguments() -> dict[str, Any]:
    return {"x-single-active-consumer": True}


def kafka_producer(settings: Settings) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=2,
        request_timeout_ms=30_000,
    )


class InboundBridge(Service):
    """Consumes the input queues and forwards to the asset-keyed Kafka topic."""

    prefetch = 512

    def __init__(self, settings: Settings, metrics: Metrics, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.metrics = metrics
        self.topic = settings.kafka.input_topic
        self.connection: aio_pika.abc.AbstractRobustConnection | None = None
        self.producer: AIOKafkaProducer | None = None

    @property
    def connected(self) -> bool:
        return self.connection is not None and not self.connection.is_closed

    async def on_start(self) -> None:
        self.add_future(self._supervise())

    async def on_stop(self) -> None:
        if self.connection is not None:
            await self.connection.close()
        if self.producer is not None:
            await self.producer.stop()

    async def _supervise(self) -> None:
        delay = 0.5
        while not self.should_stop:
            try:
                await self._bridge_session()
                delay = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("bridge_restart", error=repr(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _bridge_session(self) -> None:
        """One session: connect both sides, consume until something breaks."""
        if self.producer is None:
            producer = kafka_producer(self.settings)
            await producer.start()
            self.producer = producer
        if self.connection is None or self.connection.is_closed:
            self.connection = await aio_pika.connect_robust(self.settings.rabbitmq_url, timeout=10)
        channel = await self.connection.channel(publisher_confirms=True)
        try:
            await channel.set_qos(prefetch_count=self.prefetch)
            tasks = [
                asyncio.ensure_future(self._consume(channel, source))
                for source in sources(self.settings)
            ]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
                for task in done:
                    task.result()
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            # Closing the channel hands every unacked message back to RabbitMQ.
            if not channel.is_closed:
                await channel.close()

    async def _consume(self, channel: aio_pika.abc.AbstractChannel, source: Source) -> None:
        queue = await channel.declare_queue(source.queue, durable=True, arguments=queue_arguments())
        dlq_name = self.settings.queues.dlq(source.queue)
        await channel.declare_queue(dlq_name, durable=True)
        parse = parser_for(source.kind)
        inbox: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()
        await queue.consume(inbox.put, no_ack=False)
        pending: asyncio.Queue[tuple[asyncio.Future[Any], Any] | None] = asyncio.Queue(
            maxsize=self.prefetch * 2
        )
        acker = asyncio.ensure_future(self._ack_in_order(pending, source))
        try:
            while True:
                if acker.done():
                    acker.result()
                message = await inbox.get()
                fut = await self._forward(channel, message, parse, source, dlq_name)
                await pending.put((fut, message))
        finally:
            acker.cancel()
            await asyncio.gather(acker, return_exceptions=True)

    async def _forward(
        self,
        channel: aio_pika.abc.AbstractChannel,
        message: aio_pika.abc.AbstractIncomingMessage,
        parse: Parser,
        source: Source,
        dlq_name: str,
    ) -> asyncio.Future[Any]:
        """Start the Kafka write (or the dead-lettering); return what to await before ack."""
        try:
            event = parse(message.body)
        except RejectedInput as exc:
            await self._dead_letter(channel, message, source, dlq_name, exc)
            done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        assert self.producer is not None
        self.metrics.inc("pm_events_in_total", source=source.kind, result="forwarded")
        fut: asyncio.Future[Any] = await self.producer.send(
            self.topic, key=event.asset.encode(), value=event_to_bytes(event)
        )
        return fut

    async def _dead_letter(
        self,
        channel: aio_pika.abc.AbstractChannel,
        message: aio_pika.abc.AbstractIncomingMessage,
        source: Source,
        dlq_name: str,
        exc: RejectedInput,
    ) -> None:
        trace = _trace_of(message) or new_trace_id()
        with bound_trace(trace):
            log.warning("input_rejected", queue=source.queue, field=exc.field, reason=exc.reason)
        self.metrics.inc("pm_events_in_total", source=source.kind, result="rejected")
        self.metrics.inc("pm_rejects_total", source=source.kind, field=exc.field)
        await channel.default_exchange.publish(
            aio_pika.Message(
                body=message.body,
                headers={
                    "x-reject-reason": str(exc),
                    "x-reject-field": exc.field,
                    "x-source-queue": source.queue,
                    "x-trace-id": trace,
                },
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                content_type=message.content_type,
            ),
            routing_key=dlq_name,
        )

    async def _ack_in_order(
        self,
        pending: asyncio.Queue[tuple[asyncio.Future[Any], Any] | None],
        source: Source,
    ) -> None:
        while True:
            item = await pending.get()
            if item is None:
                return
            fut, message = item
            await asyncio.wait_for(asyncio.shield(fut), timeout=60)
            await message.ack()


def _trace_of(message: aio_pika.abc.AbstractIncomingMessage) -> str | None:
    try:
        raw = decode_json(message.body)
    except RejectedInput:
        return None
    trace = raw.get("trace_id")
    return trace if isinstance(trace, str) else None
