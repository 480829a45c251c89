"""Rig for the sink tests: a real Kafka changelog topic and a per-test Postgres schema.

(No tests here; imported by test_sink*.py, test_snapshots*.py, test_validation*.py.)
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from pm_streams.clock import SystemClock
from pm_streams.deps import Deps
from pm_streams.domain import (
    Book,
    Correction,
    EngineConfig,
    Event,
    ExchangeUpdate,
    Fill,
    PriceUpdate,
    apply,
)
from pm_streams.metrics import Metrics
from pm_streams.settings import Settings
from pm_streams.stored import Stored, stored_to_bytes
from pm_streams.topics import ensure_topics
from tables.db import Database
from tables.sink import PostgresSink
from tests.support.cleanup import drop

ROOT = Path(__file__).resolve().parents[2]
CFG = EngineConfig(size_reconcile_grace=0.0)
T0 = datetime(2025, 1, 15, 10, 0, tzinfo=UTC)


def rig_settings(partitions: int = 4) -> Settings:
    run = uuid.uuid4().hex[:10]
    return Settings(app_id=f"pmsink-{run}", postgres_schema=f"s_{run}", partitions=partitions)


@dataclass
class Rig:
    settings: Settings
    db: Database | None = None
    producer: AIOKafkaProducer | None = None
    metrics: Metrics = field(default_factory=Metrics)
    sinks: list[PostgresSink] = field(default_factory=list)

    async def start(self) -> Rig:
        await ensure_topics(self.settings)
        self.db = Database(self.settings)
        await self.db.start()
        deadline = time.monotonic() + 30
        while self.db.pool is None:
            assert time.monotonic() < deadline, "postgres pool not ready in 30 s"
            await asyncio.sleep(0.1)
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap, acks="all", linger_ms=5
        )
        await self.producer.start()
        return self

    async def close(self) -> None:
        for sink in self.sinks:
            await sink.stop()
        if self.producer is not None:
            await self.producer.stop()
        if self.db is not None:
            await self.db.stop()
        await drop(app_ids=[self.settings.app_id], schemas=[self.settings.postgres_schema])

    @property
    def pool(self) -> asyncpg.Pool:
        assert self.db is not None and self.db.pool is not None
        return self.db.pool

    async def produce(self, books: list[Book]) -> None:
        assert self.producer is not None
        topic = self.settings.kafka.positions_changelog
        futures = [
            await self.producer.send(topic, key=b.asset.encode(), value=stored_to_bytes(Stored(b)))
            for b in books
        ]
        await asyncio.gather(*futures)

    async def sink(self, group: str | None = None) -> PostgresSink:
        assert self.db is not None
        sink = PostgresSink(Deps(self.settings, self.metrics, SystemClock()), self.db)
        if group is not None:
            sink.group = group
        await sink.start()
        self.sinks.append(sink)
        return sink

    async def stop_sink(self, sink: PostgresSink) -> None:
        await sink.stop()
        self.sinks.remove(sink)

    async def wait(self, check: Callable[[], Any], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = await check()
                if last is True:
                    return
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                last = repr(exc)
            await asyncio.sleep(0.2)
        raise AssertionError(f"condition not met in {timeout}s: {last}")

    async def versions(self) -> dict[tuple[str, str], int]:
        rows = await self.pool.fetch("SELECT asset, mode, version FROM positions")
        return {(r["asset"], r["mode"]): r["version"] for r in rows}

    async def dump(self) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        positions = await self.pool.fetch("SELECT * FROM positions ORDER BY asset, mode")
        fills = await self.pool.fetch(
            "SELECT * FROM position_fills ORDER BY asset, mode, position_version, fill_id"
        )
        skip = {"recorded_at", "time_held_minutes"}
        return (
            [tuple(v for k, v in r.items() if k not in skip) for r in positions],
            [tuple(v for k, v in r.items() if k not in skip) for r in fills],
        )


@asynccontextmanager
async def rig(partitions: int = 4) -> AsyncIterator[Rig]:
    r = Rig(rig_settings(partitions))
    try:
        yield await r.start()
    finally:
        await r.close()


# ----------------------------------------------------------------------------- random run


def _d(x: float, places: int) -> Decimal:
    return Decimal(str(round(x, places)))


def random_events(rng: random.Random, n: int, assets: list[str]) -> list[Event]:
    """A mix of fills, exchange pushes, prices, funding and corrections (one-way and hedge)."""
    events: list[Event] = []
    price = {a: rng.uniform(10, 1000) for a in assets}
    for i in range(n):
        asset = rng.choice(assets)
        price[asset] *= rng.uniform(0.98, 1.02)
        p = _d(price[asset], 4)
        mode = rng.choice(["one-way", "one-way", "one-way", "hedge-long", "hedge-short"])
        roll = rng.random()
        trace = f"t-{i}"
        if roll < 0.55:
            qty = _d(rng.uniform(0.001, 3), 3) * rng.choice([1, -1])
            if mode == "hedge-long" and rng.random() < 0.7:
                qty = abs(qty)
            if mode == "hedge-short" and rng.random() < 0.7:
                qty = -abs(qty)
            fid = f"f-{i}" if rng.random() > 0.05 or i == 0 else f"f-{i - 1}"  # some duplicates
            events.append(
                Fill(asset, mode, qty, p, _d(abs(float(qty * p)) * 0.0004, 6), fid,
                     f"o-{i}", T0 + timedelta(seconds=i), trace)
            )  # fmt: skip
        elif roll < 0.60:
            fee = _d(rng.uniform(-2, 2), 4)
            events.append(Fill(asset, mode, Decimal(0), p, fee, f"fund-{i}", None,
                               T0 + timedelta(seconds=i), trace, is_funding=True))  # fmt: skip
        elif roll < 0.78:
            size = None if rng.random() < 0.3 else _d(rng.uniform(0, 5), 3)
            flip = mode == "hedge-short" or (mode == "one-way" and rng.random() < 0.5)
            if size is not None and flip:
                size = -size
            avg = None if rng.random() < 0.3 else _d(price[asset] * rng.uniform(0.99, 1.01), 4)
            events.append(
                ExchangeUpdate(asset, mode, size, avg, None, _d(rng.uniform(-50, 50), 4), p,
                               None, None, trace)
            )  # fmt: skip
        elif roll < 0.93:
            events.append(PriceUpdate(asset, p, trace))
        else:
            size = _d(rng.uniform(0, 4), 3)
            if mode == "hedge-short":
                size = -size
            events.append(Correction(asset, mode, size, p, trace, "test"))
    return events


def run_books(events: list[Event]) -> tuple[list[Book], dict[str, Book]]:
    """Apply `events` through the engine: every written book (in order) and the final ones."""
    books: dict[str, Book] = {}
    written: list[Book] = []
    for n, event in enumerate(events):
        old = books.get(event.asset)
        new, _ = apply(old, event, T0 + timedelta(seconds=n), CFG, new_id=lambda: str(uuid.uuid4()))
        if new is old or not new.legs:
            continue
        books[event.asset] = new
        written.append(new)
    return written, books
