"""Postgres sink: positions (version-guarded upserts) and the fill ledger (`tables.ledger`).

Consumes the positions changelog outside the agents' hot path. Per batch it keeps
only the newest version of each (asset, mode), upserts it so that a row never moves
back in `version`, and inserts one ledger row per applied fill (unique fill identity,
so a replay inserts nothing). Offsets are committed after the database commit.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from aiokafka import ConsumerRecord

from pm_streams.clock import Clock
from pm_streams.consumer import BatchConsumer, decoded
from pm_streams.domain import Book, Position, book_from_bytes, features
from pm_streams.logs import get_logger
from pm_streams.metrics import Metrics
from pm_streams.settings import Settings
from tables.db import Database
from tables.ledger import INSERT_LEDGER, ledger_rows

log = get_logger("tables.sink")

POSITION_COLUMNS = (
    "id", "asset", "mode", "size", "side", "average_entry_price", "current_price",
    "unrealized_pnl", "realized_pnl", "total_fees", "long_size", "short_size",
    "exchange_size", "exchange_avg_price", "version", "created_at", "opened_at",
    "last_updated", "closed_at", "last_snapshot_at", "last_price_at",
    "unrealized_pnl_pct", "time_held_minutes", "position_size_norm",
)  # fmt: skip

_placeholders = ", ".join(f"${i}" for i in range(1, len(POSITION_COLUMNS) + 1))
_updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in POSITION_COLUMNS if c not in ("asset", "mode"))
UPSERT_POSITION = f"""
INSERT INTO positions ({", ".join(POSITION_COLUMNS)}) VALUES ({_placeholders})
ON CONFLICT (asset, mode) DO UPDATE SET {_updates}
WHERE positions.version < EXCLUDED.version
   OR (positions.version = EXCLUDED.version
       AND EXCLUDED.last_snapshot_at > COALESCE(positions.last_snapshot_at, '-infinity'))
"""


def position_row(p: Position, clock_now: Any) -> tuple[Any, ...]:
    f = features(p, clock_now, 0)
    return (
        p.id, p.asset, p.mode, p.size, p.side, p.average_entry_price, p.current_price,
        p.unrealized_pnl, p.realized_pnl, p.total_fees, p.long_size, p.short_size,
        p.exchange_size, p.exchange_avg_price, p.version, p.created_at, p.opened_at,
        p.last_updated, p.closed_at, p.last_snapshot_at, p.last_price_at,
        f["unrealized_pnl_pct"], f["time_held_minutes"], f["position_size_norm"],
    )  # fmt: skip


def coalesce(books: Iterable[Book]) -> list[Position]:
    """The newest state of each (asset, mode) among the books of one batch."""
    newest: dict[tuple[str, str], Position] = {}
    for book in books:
        for leg in book.legs:
            key = (leg.asset, leg.mode)
            seen = newest.get(key)
            if seen is None or (leg.version, leg.last_snapshot_at or leg.created_at) >= (
                seen.version,
                seen.last_snapshot_at or seen.created_at,
            ):
                newest[key] = leg
    return list(newest.values())


def _steps(record: ConsumerRecord) -> tuple[Book, ...]:
    return () if record.value is None else book_from_bytes(record.value).steps()


class PostgresSink(BatchConsumer):
    name = "sink"
    linger_ms = 100  # the sink lag target is 1 s; Grafana reads no faster

    def __init__(
        self, settings: Settings, metrics: Metrics, clock: Clock, db: Database, **kwargs: Any
    ) -> None:
        names = settings.kafka
        super().__init__(
            settings, metrics, (names.positions_changelog,), names.sink_group, **kwargs
        )
        self.clock = clock
        self.db = db

    async def handle(self, records: Sequence[ConsumerRecord]) -> None:
        try:
            await self.write(records)
        except BaseException:
            # Nothing committed: the batch waits in Kafka. The lag grows with the age of
            # the oldest record still waiting, so an outage shows on the dashboard.
            oldest = min(r.timestamp for r in records)
            self.metrics.set(
                "pm_consumer_lag_seconds", max(0.0, time.time() - oldest / 1000), consumer=self.name
            )
            raise

    async def write(self, records: Sequence[ConsumerRecord]) -> None:
        """One transaction per batch: newest version per leg, then the ledger rows."""
        if self.db.pool is None:
            raise ConnectionError("postgres pool not ready")
        books = await decoded(records, _steps)
        now = self.clock.now()
        rows = [position_row(p, now) for p in coalesce(books)]
        ledger = [row for book in books for row in ledger_rows(book)]
        async with self.db.pool.acquire() as conn, conn.transaction():
            if rows:
                await conn.executemany(UPSERT_POSITION, rows)
            if ledger:
                await conn.executemany(INSERT_LEDGER, ledger)
        self.metrics.inc("pm_sink_rows_total", len(rows), table="positions")
        self.metrics.inc("pm_sink_rows_total", len(ledger), table="position_fills")
        self.metrics.inc("pm_sink_batches_total")
