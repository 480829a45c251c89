"""RabbitMQ-side helpers for the bridge tests: input builders, queue reads, a recomputation."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
import orjson

from pm_streams.domain import Book, EngineConfig, apply, decimal_text, parse_order_executed
from tests.support.worker import ROOT

AMQP_URL = "amqp://guest:guest@127.0.0.1/"
NOW = datetime(2025, 1, 15, 10, 0, tzinfo=UTC)


def fill(
    execution_id: str,
    side: str,
    qty: str,
    price: str,
    *,
    asset: str = "BTCUSDT",
    fee: str = "0",
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_type": "order_executed",
        "order_id": f"o-{execution_id}",
        "execution_id": execution_id,
        "asset": asset,
        "side": side,
        "execution_price": price,
        "execution_quantity": qty,
        "execution_fees": fee,
        "mode": "one-way",
        "executed_at": "2025-01-15T10:10:00Z",
        "trace_id": f"trace-{execution_id}",
    }
    body.update(extra)
    return body


def fill_stream(assets: Sequence[str], per_asset: int, tag: str = "f") -> list[dict[str, Any]]:
    """Interleaved fills whose final state depends on their order (flips, reductions)."""
    out = []
    for i in range(per_asset):
        for a, asset in enumerate(assets):
            # BUY 3, SELL 2, BUY 1, SELL 4, ...: the position goes long, short, long again.
            side = "BUY" if (i // 2 + i) % 2 == 0 else "SELL"
            qty = str(1 + (i * 7 + a) % 4)
            price = f"{100 + (i * 13 + a * 5) % 17}.{i % 10}"
            out.append(fill(f"{tag}-{asset}-{i}", side, qty, price, asset=asset, fee="0.01"))
    return out


def recompute(messages: Iterable[dict[str, Any]]) -> dict[str, Book]:
    """The books a correct system ends with: each distinct fill applied once, in order."""
    books: dict[str, Book] = {}
    cfg = EngineConfig()
    for raw in messages:
        event = parse_order_executed(raw, new_trace_id=lambda: "trace")
        book, _ = apply(books.get(event.asset), event, NOW, cfg, new_id=lambda: "id")
        books[event.asset] = book
    return books


def matches(api: dict[str, Any], book: Book, mode: str = "one-way") -> bool:
    leg = book.leg(mode)
    if leg is None:
        return False
    # The API shows each stored value by the output rule (SPEC §4 rev 2), exactly.
    return (
        api["size"] == decimal_text(leg.size)
        and api["average_entry_price"] == decimal_text(leg.average_entry_price)
        and api["realized_pnl"] == decimal_text(leg.realized_pnl)
        and api["total_fees"] == decimal_text(leg.total_fees)
        and api["version"] == leg.version
    )


@dataclass
class Received:
    body: dict[str, Any] | bytes
    headers: dict[str, Any]
    redelivered: bool
    persistent: bool = False
    raw: bytes = b""


async def read_queue(queue: str, *, ack: bool = True) -> list[Received]:
    """Everything currently ready in an existing queue (removed unless ack=False)."""
    connection = await aio_pika.connect(AMQP_URL)
    out: list[Received] = []
    async with connection:
        channel = await connection.channel()
        q = await channel.declare_queue(queue, passive=True)
        while True:
            message = await q.get(fail=False, no_ack=False)
            if message is None:
                break
            try:
                body: dict[str, Any] | bytes = orjson.loads(message.body)
            except orjson.JSONDecodeError:
                body = message.body
            persistent = message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
            headers = dict(message.headers or {})
            out.append(Received(body, headers, bool(message.redelivered), persistent, message.body))
            if ack:
                await message.ack()
        # unacked messages go back to the queue when the channel closes
    return out


async def collect(queue: str, predicate: Any, timeout: float = 60.0) -> list[Received]:
    """Read (and remove) messages until predicate(all so far) holds."""
    got: list[Received] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(aio_pika.exceptions.AMQPError, ConnectionError, OSError):
            got.extend(await read_queue(queue))  # (fails while RabbitMQ restarts)
        if predicate(got):
            return got
        await asyncio.sleep(0.3)
    raise AssertionError(f"{queue}: condition not met in {timeout}s with {len(got)} messages")


async def message_count(queue: str) -> int:
    """Ready messages in a queue (not counting unacked deliveries)."""
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        q = await channel.declare_queue(queue, durable=True, passive=True)
        return int(q.declaration_result.message_count or 0)


def services(*args: str, timeout: float = 240) -> None:
    """`scripts/services ARGS` (stop/start/restart a backing service); fails the test on error."""
    done = subprocess.run(
        [str(ROOT / "scripts" / "services"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"services {args}: {done.stdout}\n{done.stderr}"
