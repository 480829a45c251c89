"""The input side as other services see it: well-formed messages published to the
input queues (`pm-streams send`, `pm-streams demo`).

Messages are checked with the bridge's own parsers before they are published, so a
mistyped command fails here, naming the field, instead of landing in a dead-letter
queue. Queues are declared exactly as the bridge declares them (durable, single
active consumer); messages are persistent and every publish waits for its confirm.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import aio_pika
import orjson

from bridges.inbound import queue_arguments
from pm_streams.domain import decode_json, parse_order_executed, parse_position_update
from pm_streams.logs import new_trace_id
from pm_streams.settings import Settings

Message = dict[str, Any]


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fill_message(
    *,
    asset: str,
    side: str,
    qty: str,
    price: str,
    fee: str = "0",
    execution_id: str | None = None,
    mode: str = "one-way",
    position_idx: int | None = None,
    exec_type: str | None = None,
) -> Message:
    """An `order_executed` message (SPEC §3.2); a fresh execution id unless given."""
    trace_id = new_trace_id()
    body: Message = {
        "event_type": "order_executed",
        "order_id": f"cli-{trace_id[:12]}",
        "execution_id": execution_id or f"cli-{trace_id}",
        "asset": asset,
        "side": side.upper(),
        "execution_price": price,
        "execution_quantity": qty,
        "execution_fees": fee,
        "mode": mode,
        "executed_at": _now_iso(),
        "trace_id": trace_id,
    }
    if position_idx is not None:
        body["position_idx"] = position_idx
    if exec_type is not None:
        body["exec_type"] = exec_type
    return body


def position_message(
    *,
    asset: str,
    side: str,
    size: str,
    avg_price: str | None = None,
    mark_price: str | None = None,
    unrealised_pnl: str | None = None,
    seq: int | None = None,
) -> Message:
    """A `ws-gateway.position` message (SPEC §3.1), as the exchange gateway sends it."""
    now = datetime.now(UTC)
    data: Message = {
        "symbol": asset,
        "side": side,
        "size": size,
        "mode": "one-way",
        "positionIdx": 0,
        "updatedTime": str(int(now.timestamp() * 1000)),
    }
    if avg_price is not None:
        data["avgPrice"] = avg_price
    if mark_price is not None:
        data["markPrice"] = mark_price
    if unrealised_pnl is not None:
        data["unrealisedPnl"] = unrealised_pnl
    if seq is not None:
        data["seq"] = seq
    return {
        "event_type": "position",
        "channel": "position",
        "trace_id": new_trace_id(),
        "data": data,
    }


def check(kind: str, message: Mapping[str, Any]) -> None:
    """Raise `RejectedInput` (naming the field) if the bridge would reject `message`."""
    raw = decode_json(orjson.dumps(message))
    if kind == "position":
        parse_position_update(raw, new_trace_id=new_trace_id)
    else:
        parse_order_executed(raw, new_trace_id=new_trace_id)


class InputPublisher:
    """Publishes to the two input queues of one deployment (`async with`)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._declared: set[str] = set()

    def queue_for(self, kind: str) -> str:
        q = self.settings.queues
        return q.position_updates if kind == "position" else q.order_executed

    async def __aenter__(self) -> InputPublisher:
        self._connection = await aio_pika.connect_robust(self.settings.rabbitmq_url, timeout=10)
        self._channel = await self._connection.channel(publisher_confirms=True)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._connection is not None:
            await self._connection.close()

    async def publish(self, kind: str, message: Mapping[str, Any]) -> str:
        """Publish one message (confirmed by RabbitMQ); the queue it went to."""
        assert self._channel is not None, "use `async with InputPublisher(...)`"
        queue = self.queue_for(kind)
        if queue not in self._declared:
            await self._channel.declare_queue(queue, durable=True, arguments=queue_arguments())
            self._declared.add(queue)
        await self._channel.default_exchange.publish(
            aio_pika.Message(
                orjson.dumps(message),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=queue,
        )
        return queue
