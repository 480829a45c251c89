"""RabbitMQ → Kafka: validate at the edge, forward canonical events keyed by asset.

Guarantees (SPEC §3.3):
- a message is acked only after Kafka acknowledged the write (acks=all, idempotent
  producer; the event is appended to the producer's open batch of its partition and
  waits for that batch, `bridges.forward`). Acks go out in delivery order,
  batched: one `basic.ack(multiple=True)` covers every delivery up to the newest one
  whose write (and every earlier one's) is done. Each input queue has its own
  channel, so a multiple ack never covers a delivery of the other queue;
- a rejected message is published to `<queue>.dlq` (publisher confirm awaited before
  its ack) with its reason in headers: it never reaches Kafka;
- a Kafka failure is never a rejection: the session ends, the channels are closed,
  RabbitMQ requeues everything unacked in order, and the bridge reconnects after a
  backoff (the same for a lost RabbitMQ connection). While Kafka cannot be reached no
  message is consumed at all;
- per-asset order: each input queue is declared with `x-single-active-consumer`, so
  with several workers exactly one bridge consumes a queue at a time (RabbitMQ fails
  over to another one when its connection goes), and it forwards in delivery order.
  A redelivered message that was already forwarded is recognised downstream (fill
  identity, exchange `seq`/`updatedTime`), so it is never applied twice.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aio_pika
from aiokafka import AIOKafkaProducer
from aiormq.abc import DeliveredMessage
from mode import Service

from bridges import receive
from bridges.forward import Forward, KafkaUnavailable, is_kafka_error, kafka_producer
from pm_streams.backoff import Backoff
from pm_streams.domain import (
    Event,
    RejectedInput,
    decode_json,
    parse_order_executed,
    parse_position_update,
)
from pm_streams.handoff import Handoff
from pm_streams.logs import bound_trace, get_logger, new_trace_id
from pm_streams.metrics import Metrics
from pm_streams.settings import Settings

log = get_logger("bridges.inbound")

Parser = Callable[[bytes], Event]
Message = DeliveredMessage | receive.Delivery
"""A delivery as aiormq hands it over (or the frame reader, `bridges.receive`):
aio-pika's consumer wraps each one in an `IncomingMessage` and a second task, a tenth
of the bridge's cost per message."""


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


class QueueConflict(RuntimeError):
    """An input queue exists with other arguments than the bridge declares."""

    def __init__(self, queue: str, cause: Exception) -> None:
        super().__init__(
            f"queue {queue!r} exists without x-single-active-consumer (RabbitMQ: {cause}); "
            "the bridge needs it to keep per-asset order across workers. Way out: let the "
            f"queue drain, delete it (rabbitmqctl delete_queue {queue}) and restart a "
            "worker, or have its declaring service add the argument "
            '"x-single-active-consumer": true'
        )
        self.queue = queue


def queue_arguments() -> dict[str, Any]:
    return {"x-single-active-consumer": True}


class _InFlight:
    """Deliveries of one channel in delivery order, each with what its ack waits for."""

    __slots__ = ("items", "wakeup")

    def __init__(self) -> None:
        self.items: deque[tuple[Message, asyncio.Future[Any], str]] = deque()
        self.wakeup = asyncio.Event()

    def add(self, message: Message, fut: asyncio.Future[Any], what: str) -> None:
        self.items.append((message, fut, what))
        self.wakeup.set()


class InboundBridge(Service):
    """Consumes the input queues and forwards to the asset-keyed Kafka topic."""

    #: Unacked deliveries per input queue (and channel). Bounds the redelivery after
    #: a crash: a redelivered fill is at most this many fills behind its first copy,
    #: so it is still in the book's fill-id set (default capacity 256).
    prefetch = 256
    #: Longest wait for one Kafka write before the session is restarted.
    ack_timeout = 90.0
    #: A session that lasted this long resets the reconnect backoff.
    healthy_session = 5.0

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        handoff: Handoff[Event] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.metrics = metrics
        self.handoff = handoff
        """Where each forwarded event is left for this worker's positions agent."""
        self.topic = settings.kafka.input_topic
        self.connection: aio_pika.abc.AbstractConnection | None = None
        self.producer: AIOKafkaProducer | None = None
        self.sessions = 0

    @property
    def connected(self) -> bool:
        return self.connection is not None and not self.connection.is_closed

    async def on_start(self) -> None:
        self.add_future(self._supervise())

    async def on_stop(self) -> None:
        await self._close_connection()
        await self._close_producer()

    # ------------------------------------------------------------------ supervision

    async def _supervise(self) -> None:
        backoff = Backoff(healthy=self.healthy_session)
        while not self.should_stop:
            backoff.started()
            try:
                await self._bridge_session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.should_stop:
                    return
                if isinstance(exc, QueueConflict):  # an operator's decision, not a blip
                    self.metrics.inc("pm_bridge_restarts_total", cause="queue_conflict")
                    log.error("queue_conflict", queue=exc.queue, error=str(exc))
                    await self._close_connection()
                    await asyncio.sleep(30)
                    continue
                kafka = isinstance(exc, KafkaUnavailable) or is_kafka_error(exc)
                delay = backoff.failed()
                self.metrics.inc("pm_bridge_restarts_total", cause="kafka" if kafka else "rabbitmq")
                log.warning(
                    "bridge_restart",
                    cause="kafka" if kafka else "rabbitmq",
                    error=repr(exc),
                    retry_in=delay,
                )
                await self._close_connection()
                if kafka:
                    await self._close_producer()
                await asyncio.sleep(delay)

    async def _close_connection(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None and not connection.is_closed:
            try:
                await asyncio.wait_for(connection.close(), timeout=5)
            except Exception as exc:
                log.debug("rabbitmq_close_failed", error=repr(exc))

    async def _close_producer(self) -> None:
        producer, self.producer = self.producer, None
        if producer is not None:
            try:
                await asyncio.wait_for(producer.stop(), timeout=5)
            except Exception as exc:
                log.debug("kafka_producer_close_failed", error=repr(exc))

    async def _bridge_session(self) -> None:
        """One session: connect both sides, consume until something breaks."""
        if self.producer is None:
            producer = kafka_producer(self.settings)
            try:
                await producer.start()
            except Exception:
                await asyncio.wait_for(producer.stop(), timeout=5)
                raise
            self.producer = producer
        connection = await aio_pika.connect(self.settings.rabbitmq_url, timeout=10)
        self.connection = connection
        self.sessions += 1
        log.info("bridge_connected", session=self.sessions)
        tasks: list[asyncio.Future[Any]] = [asyncio.ensure_future(connection.closed())]
        try:
            for source in sources(self.settings):
                tasks.extend(await self._open(connection, source))
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
            raise ConnectionError("rabbitmq connection closed")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # Closing the connection hands every unacked message back to RabbitMQ.
            await self._close_connection()

    # ------------------------------------------------------------------ one queue

    async def _open(
        self, connection: aio_pika.abc.AbstractConnection, source: Source
    ) -> list[asyncio.Future[Any]]:
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=self.prefetch)
        try:
            queue = await channel.declare_queue(
                source.queue, durable=True, arguments=queue_arguments()
            )
        except aio_pika.exceptions.ChannelPreconditionFailed as exc:
            raise QueueConflict(source.queue, exc) from None
        dlq_name = self.settings.queues.dlq(source.queue)
        await channel.declare_queue(dlq_name, durable=True)
        inbox: asyncio.Queue[Message] = asyncio.Queue()
        inflight = _InFlight()
        forwarder = asyncio.ensure_future(
            self._forward_loop(channel, inbox, inflight, source, dlq_name)
        )
        acker = asyncio.ensure_future(self._ack_loop(inflight, source))

        amqp = await channel.get_underlay_channel()
        tag = await receive.consume(amqp, queue.name, inbox.put_nowait)
        closed = asyncio.ensure_future(channel.closed())
        closed.add_done_callback(lambda _: receive.unregister(tag))
        return [forwarder, acker, closed]

    async def _forward_loop(
        self,
        channel: aio_pika.abc.AbstractChannel,
        inbox: asyncio.Queue[Message],
        inflight: _InFlight,
        source: Source,
        dlq_name: str,
    ) -> None:
        parse = parser_for(source.kind)
        producer = self.producer
        assert producer is not None
        forward = Forward(producer, self.topic, self.handoff)
        forwarded = 0
        while True:
            message = await inbox.get()
            try:
                event = parse(message.body)
            except RejectedInput as exc:
                fut = asyncio.ensure_future(
                    self._dead_letter(channel, message, source, dlq_name, exc)
                )
                inflight.add(message, fut, "dlq")
            else:
                sent = await forward(event)
                inflight.add(message, sent, "kafka")
                forwarded += 1
            # Counted once per burst; whichever kind of message ends it.
            if forwarded and inbox.empty():
                self.metrics.inc(
                    "pm_events_in_total", forwarded, source=source.kind, result="forwarded"
                )
                forwarded = 0

    async def _ack_loop(self, inflight: _InFlight, source: Source) -> None:
        """Ack in delivery order, as far as every write is done, with one multiple ack."""
        items = inflight.items
        while True:
            if not items:
                inflight.wakeup.clear()
                await inflight.wakeup.wait()
                continue
            _, fut, what = items[0]
            if not fut.done():
                try:
                    await asyncio.wait_for(asyncio.shield(fut), timeout=self.ack_timeout)
                except TimeoutError:
                    late = f"no {what} acknowledgement in {self.ack_timeout}s"
                    raise KafkaUnavailable(late) from None
                except Exception as write_exc:
                    log.debug("write_failed", error=repr(write_exc))  # raised below
            last: Message | None = None
            count = 0
            while items and items[0][1].done():
                message, fut, what = items.popleft()
                failure = fut.exception()
                if failure is not None:
                    if what == "kafka":
                        raise KafkaUnavailable(f"write failed: {failure!r}") from failure
                    raise failure
                last = message
                count += 1
            if last is not None:
                # Every earlier delivery on this channel is acked or covered here.
                assert last.delivery_tag is not None  # a delivery, not a get or return
                await last.channel.basic_ack(last.delivery_tag, multiple=True)
                self.metrics.inc("pm_bridge_acked_total", count, source=source.kind)

    async def _dead_letter(
        self,
        channel: aio_pika.abc.AbstractChannel,
        message: Message,
        source: Source,
        dlq_name: str,
        exc: RejectedInput,
    ) -> None:
        trace = _trace_of(message) or new_trace_id()
        with bound_trace(trace):
            log.warning(
                "input_rejected",
                queue=source.queue,
                field=exc.field,
                reason=exc.reason,
                dlq=dlq_name,
                size=len(message.body),
            )
        self.metrics.inc("pm_events_in_total", source=source.kind, result="rejected")
        self.metrics.inc("pm_rejects_total", source=source.kind, field=exc.field)
        properties = message.header.properties
        headers = dict(properties.headers or {})
        headers.update(
            {
                "x-reject-reason": str(exc),
                "x-reject-field": exc.field,
                "x-source-queue": source.queue,
                "x-trace-id": trace,
            }
        )
        await channel.default_exchange.publish(
            aio_pika.Message(
                body=message.body,
                headers=headers,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                content_type=properties.content_type,
                message_id=properties.message_id,
            ),
            routing_key=dlq_name,
            timeout=30,
        )


def _trace_of(message: Message) -> str | None:
    try:
        raw = decode_json(message.body)
    except RejectedInput:
        return None
    trace = raw.get("trace_id")
    return trace if isinstance(trace, str) else None
