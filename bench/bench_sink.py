"""Postgres sink and snapshot benchmarks against the real Kafka and Postgres.

    .venv/bin/python bench/bench_sink.py [--changes N] [--rate R] [--seconds S]

Prints:
  1. sink throughput: changes/s and Postgres rows/s (position upserts + ledger rows)
     of the real sink draining a backlog from a Kafka changelog topic, next to the raw
     ceilings on this machine for the very same rows (one executemany transaction of
     the sink's SQL, and `copy_records_to_table`), and the ratio;
  2. sink lag at a steady R changes/s (default 3,000) for S seconds: per record,
     from its Kafka timestamp (produce time) to the end of the database commit of
     its batch; p50 / p99 / max. Target p99 <= 1 s;
  3. snapshot page query (`GET /snapshots`, the service's own SQL) with a year of
     hourly snapshots for 20 assets (175,200 rows): median and p99 at several
     offsets. Target <= 50 ms.
Each part uses its own throw-away app id (topics) and Postgres schema.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson
from aiokafka import AIOKafkaProducer, ConsumerRecord

from pm_streams.clock import SystemClock
from pm_streams.deps import Deps
from pm_streams.domain import (
    Book,
    EngineConfig,
    Fill,
    PriceUpdate,
    apply,
    features,
    position_to_dict,
)
from pm_streams.metrics import Metrics
from pm_streams.settings import Settings
from pm_streams.stored import Stored, stored_to_bytes
from pm_streams.topics import ensure_topics
from tables.db import Database, text_numerics
from tables.ledger import INSERT_LEDGER, LEDGER_COLUMNS, ledger_rows
from tables.sink import POSITION_COLUMNS, UPSERT_POSITION, PostgresSink, coalesce, position_row
from tables.snapshots import Snapshots
from tests.support.cleanup import drop

CFG = EngineConfig()
T0 = datetime(2025, 1, 1, tzinfo=UTC)


def settings() -> Settings:
    run = uuid.uuid4().hex[:8]
    return Settings(app_id=f"pmbench-{run}", postgres_schema=f"b_{run}", partitions=8)


def changes(n: int, assets: int = 200, seed: int = 3) -> list[Book]:
    """`n` written books: 80% fills (one ledger row each), 20% price updates."""
    rng = random.Random(seed)
    names = [f"A{i:03d}USDT" for i in range(assets)]
    books: dict[str, Book] = {}
    out: list[Book] = []
    i = 0
    while len(out) < n:
        i += 1
        asset = rng.choice(names)
        price = Decimal(rng.randint(9000, 11000)) / 100
        event: Fill | PriceUpdate
        if rng.random() < 0.8:
            qty = Decimal(rng.randint(1, 2000)) / 1000 * rng.choice([1, -1])
            event = Fill(asset, "one-way", qty, price, Decimal("0.01"), f"f{i}", f"o{i}",
                         T0 + timedelta(seconds=i), f"t{i}")  # fmt: skip
        else:
            event = PriceUpdate(asset, price, f"t{i}")
        old = books.get(asset)
        new, _ = apply(old, event, T0 + timedelta(seconds=i), CFG, new_id=lambda: str(uuid.uuid4()))
        if new is old or not new.legs:
            continue
        books[asset] = new
        out.append(new)
    return out


class Rig:
    def __init__(self) -> None:
        self.settings = settings()
        self.db = Database(self.settings)
        self.producer: AIOKafkaProducer | None = None

    async def __aenter__(self) -> Rig:
        await ensure_topics(self.settings)
        await self.db.start()
        while self.db.pool is None:  # noqa: ASYNC110 - polling a dependency
            await asyncio.sleep(0.05)
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap, acks="all", linger_ms=2
        )
        await self.producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.producer is not None and self.db.pool is not None
        await self.producer.stop()
        await self.db.stop()
        await drop(app_ids=[self.settings.app_id], schemas=[self.settings.postgres_schema])

    async def produce(self, books: Sequence[Book]) -> None:
        assert self.producer is not None
        topic = self.settings.kafka.positions_changelog
        futs = [
            await self.producer.send(topic, key=b.asset.encode(), value=stored_to_bytes(Stored(b)))
            for b in books
        ]
        await asyncio.gather(*futs)


class TimedSink(PostgresSink):
    """The real sink, recording per-record lag (commit end - Kafka timestamp)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lags: list[float] = []
        self.done = 0
        self.batches = 0

    async def handle(self, records: Sequence[ConsumerRecord]) -> None:
        await super().handle(records)
        now = time.time()
        self.lags.extend(now - r.timestamp / 1000 for r in records)
        self.done += len(records)
        self.batches += 1


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def binary_numerics(
    conn: Any, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]
) -> list[tuple[Any, ...]]:
    """`rows` with the values of `table`'s numeric columns as Decimals."""
    numeric = {
        r["column_name"]
        for r in await conn.fetch(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = $1 "
            "AND data_type = 'numeric'",
            table,
        )
    }
    wanted = [i for i, c in enumerate(columns) if c in numeric]
    out = []
    for row in rows:
        values = list(row)
        for i in wanted:
            if values[i] is not None:
                values[i] = Decimal(values[i])
        out.append(tuple(values))
    return out


async def bench_throughput(n: int) -> None:
    books = changes(n)
    async with Rig() as rig:
        await rig.produce(books)
        metrics = Metrics()
        sink = TimedSink(Deps(rig.settings, metrics, SystemClock()), rig.db)
        started, cpu = time.perf_counter(), time.process_time()
        await sink.start()
        while sink.done < n:  # noqa: ASYNC110 - polling the measured service
            await asyncio.sleep(0.01)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        await sink.stop()
        written = metrics.total("pm_sink_rows_total")
        print(
            f"sink: {n} changes in {elapsed:.2f}s = {n / elapsed:,.0f} changes/s, "
            f"{written:,} rows = {written / elapsed:,.0f} rows/s ({sink.batches} batches), "
            f"CPU {1e6 * cpu / n:.0f} us per change"
        )

    # The same rows, straight into Postgres (no Kafka, no decoding).
    now = SystemClock().now()
    pos_rows = [position_row(p, now, Decimal(0)) for p, _ in coalesce(books)]
    led_rows = [row for b in books for row in ledger_rows(b)]
    rows = len(pos_rows) + len(led_rows)
    async with Rig() as rig:
        pool = rig.db.pool
        assert pool is not None
        async with pool.acquire() as conn:
            started = time.perf_counter()
            async with conn.transaction():
                await conn.executemany(UPSERT_POSITION, pos_rows)
                await conn.executemany(INSERT_LEDGER, led_rows)
            em = time.perf_counter() - started
            await conn.execute("TRUNCATE positions, position_fills")
            # COPY is binary in asyncpg: numerics as Decimals, with asyncpg's own codec.
            await conn.reset_type_codec("numeric", schema="pg_catalog")
            pos_bin = await binary_numerics(conn, "positions", POSITION_COLUMNS, pos_rows)
            led_bin = await binary_numerics(conn, "position_fills", LEDGER_COLUMNS, led_rows)
            started = time.perf_counter()
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "positions", records=pos_bin, columns=list(POSITION_COLUMNS)
                )
                await conn.copy_records_to_table(
                    "position_fills", records=led_bin, columns=list(LEDGER_COLUMNS)
                )
            cp = time.perf_counter() - started
            await text_numerics(conn)
    sink_rate = written / elapsed
    print(
        f"raw executemany: {rows:,} rows in {em:.2f}s = {rows / em:,.0f} rows/s; "
        f"copy_records_to_table: {rows / cp:,.0f} rows/s"
    )
    print(
        f"ratio sink/executemany = {sink_rate / (rows / em):.2f}, "
        f"sink/copy = {sink_rate / (rows / cp):.2f}  "
        "(the sink writes fewer rows: it coalesces to the newest version per position)"
    )


async def bench_lag(rate: int, seconds: float) -> None:
    n = int(rate * seconds)
    books = changes(n, seed=9)
    async with Rig() as rig:
        metrics = Metrics()
        sink = TimedSink(Deps(rig.settings, metrics, SystemClock()), rig.db)
        await sink.start()
        await asyncio.sleep(2.0)  # group join
        assert rig.producer is not None
        topic = rig.settings.kafka.positions_changelog
        tick = 0.01
        per_tick = max(1, int(rate * tick))
        started = time.perf_counter()
        futs = []
        for i in range(0, n, per_tick):
            target = started + (i / rate)
            delay = target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            for b in books[i : i + per_tick]:
                futs.append(
                    await rig.producer.send(
                        topic, key=b.asset.encode(), value=stored_to_bytes(Stored(b))
                    )
                )
        await asyncio.gather(*futs)
        sent = time.perf_counter() - started
        while sink.done < n:  # noqa: ASYNC110 - polling the measured service
            await asyncio.sleep(0.01)
        await sink.stop()
        lags = sink.lags
        print(
            f"sink lag at {n / sent:,.0f} changes/s offered ({n} over {sent:.1f}s, "
            f"{sink.batches} batches): p50 {pct(lags, 0.5) * 1000:.0f} ms, "
            f"p99 {pct(lags, 0.99) * 1000:.0f} ms, max {max(lags) * 1000:.0f} ms "
            f"(target p99 <= 1000 ms)"
        )


async def bench_snapshots(assets: int = 20, days: int = 365) -> None:
    async with Rig() as rig:
        pool = rig.db.pool
        assert pool is not None
        now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        rng = random.Random(1)
        started = time.perf_counter()
        total = 0
        for a in range(assets):
            asset = f"S{a:02d}USDT"
            pid = uuid.uuid4()
            records = []
            for h in range(days * 24):
                at = now - timedelta(hours=h)
                data = _snapshot_data(str(pid), asset, at, rng)
                records.append(
                    (uuid.uuid4(), pid, asset, "one-way", orjson.dumps(data).decode(), at)
                )
            await pool.copy_records_to_table(
                "position_snapshots",
                records=records,
                columns=["id", "position_id", "asset", "mode", "snapshot_data", "created_at"],
            )
            total += len(records)
        await pool.execute("VACUUM ANALYZE position_snapshots")
        print(f"snapshots: {total:,} rows loaded in {time.perf_counter() - started:.1f}s")
        snaps = Snapshots(Deps(rig.settings, Metrics(), SystemClock()), rig.db, None, None)  # type: ignore[arg-type]
        for offset, limit in ((0, 100), (1000, 100), (8000, 100), (0, 1000)):
            times = []
            for i in range(40):
                asset = f"S{i % assets:02d}USDT"
                t = time.perf_counter()
                rows, count = await snaps.page(asset, "one-way", limit, offset)
                times.append(time.perf_counter() - t)
                assert len(rows) == min(limit, days * 24 - offset) and count == days * 24
            print(
                f"snapshot page limit={limit} offset={offset}: median "
                f"{statistics.median(times) * 1000:.1f} ms, p99 {pct(times, 0.99) * 1000:.1f} ms"
                " (incl. JSON decode; target <= 50 ms)"
            )


def _snapshot_data(pid: str, asset: str, at: datetime, rng: random.Random) -> dict[str, Any]:
    from pm_streams.domain import Position

    p = Position(
        id=pid, asset=asset, mode="one-way",
        size=Decimal(rng.randint(1, 5000)) / 1000, average_entry_price=Decimal("50123.45"),
        current_price=Decimal("50500.12"), unrealized_pnl=Decimal("376.67"),
        realized_pnl=Decimal("120.5"), total_fees=Decimal("12.3"), version=rng.randint(1, 10_000),
        created_at=at - timedelta(days=30), opened_at=at - timedelta(days=1), last_updated=at,
        last_price_at=at, exchange_size=Decimal("1.5"), exchange_avg_price=Decimal("50123.45"),
    )  # fmt: skip
    return position_to_dict(p, features=features(p, at, Decimal(100_000)))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--changes", type=int, default=20_000)
    parser.add_argument("--rate", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--skip-snapshots", action="store_true")
    args = parser.parse_args()
    await bench_throughput(args.changes)
    await bench_lag(args.rate, args.seconds)
    if not args.skip_snapshots:
        await bench_snapshots()


if __name__ == "__main__":
    asyncio.run(main())
