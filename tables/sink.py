"""Postgres sink: positions (version-guarded upserts) and the fill ledger (`tables.ledger`).

Consumes the positions changelog outside the agents' hot path. Per batch it keeps
only the newest version of each (asset, mode), upserts it so that a row never moves
back in `version`, and inserts one ledger row per applied fill (unique fill identity,
so a replay inserts nothing). Offsets are committed after the database commit.

The sink never stalls on one record (SPEC §9 rev 2). A record it cannot decode, or
whose rows Postgres refuses (a data or constraint error, not a lost connection), is
written to `sink_rejects` with the error, logged and counted, and every other record
of the batch still lands: the batch is then written record by record, each in a
savepoint. Money columns are written as the API shows them: the text `decimal_text`
spells, which Postgres reads into `numeric` digit for digit (`tables.db` sends numerics
as text).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

import asyncpg
from aiokafka import ConsumerRecord

from pm_streams.consumer import BatchConsumer, decoded
from pm_streams.deps import Deps
from pm_streams.domain import Book, Position, decimal_text, features
from pm_streams.exposure import Exposure
from pm_streams.logs import get_logger
from pm_streams.stored import SharedDecode
from tables.db import Database
from tables.ledger import INSERT_LEDGER, ledger_rows

log = get_logger("tables.sink")

POSITION_COLUMNS = (
    "id", "asset", "mode", "size", "side", "average_entry_price", "current_price",
    "unrealized_pnl", "realized_pnl", "total_fees", "long_size", "short_size",
    "exchange_size", "exchange_avg_price", "version", "created_at", "opened_at",
    "last_updated", "closed_at", "last_snapshot_at", "last_price_at",
    "unrealized_pnl_pct", "time_held_minutes", "position_size_norm", "funding_pnl",
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


INSERT_REJECT = """
INSERT INTO sink_rejects (consumer, topic, kafka_partition, kafka_offset, kafka_key, record, error)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (consumer, topic, kafka_partition, kafka_offset) DO NOTHING
"""

REFUSED = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)
"""Postgres (or asyncpg's encoder) refusing a row's values: the record's fault, not the
connection's. Anything else fails the batch, which is retried from Kafka."""


def _shown(d: Decimal | None) -> str | None:
    """The value the API shows (SPEC §4 rev 2), so Postgres holds the same digits."""
    return None if d is None else decimal_text(d)


def position_row(p: Position, clock_now: Any, total_exposure: Decimal) -> tuple[Any, ...]:
    """The `positions` row of a leg, its features against `total_exposure` (the
    portfolio's as of the change, `pm_streams.exposure`)."""
    f = features(p, clock_now, total_exposure)
    pct, norm = f["unrealized_pnl_pct"], f["position_size_norm"]
    return (
        p.id, p.asset, p.mode, _shown(p.size), p.side, _shown(p.average_entry_price),
        _shown(p.current_price), _shown(p.unrealized_pnl), _shown(p.realized_pnl),
        _shown(p.total_fees), _shown(p.long_size), _shown(p.short_size),
        _shown(p.exchange_size), _shown(p.exchange_avg_price), p.version, p.created_at,
        p.opened_at, p.last_updated, p.closed_at, p.last_snapshot_at, p.last_price_at,
        _shown(pct) if isinstance(pct, Decimal) else None, f["time_held_minutes"],
        _shown(norm) if isinstance(norm, Decimal) else None, _shown(p.funding_pnl),
    )  # fmt: skip


def reject_row(consumer: str, record: ConsumerRecord, error: str) -> tuple[Any, ...]:
    """A `sink_rejects` row; the record as text (NULs escaped: TEXT cannot hold them)."""

    def text(raw: bytes | None) -> str | None:
        if raw is None:
            return None
        return raw.decode("utf-8", "backslashreplace").replace("\x00", "\\u0000")

    return (
        consumer, record.topic, record.partition, record.offset, text(record.key),
        text(record.value), error[:2000],
    )  # fmt: skip


def coalesce(books: Iterable[Book]) -> list[tuple[Position, Book]]:
    """The newest state of each (asset, mode) among the books of one batch, with the
    book it is part of."""
    newest: dict[tuple[str, str], tuple[Position, Book]] = {}
    for book in books:
        for leg in book.legs:
            key = (leg.asset, leg.mode)
            hit = newest.get(key)
            if hit is None or (leg.version, leg.last_snapshot_at or leg.created_at) >= (
                hit[0].version,
                hit[0].last_snapshot_at or hit[0].created_at,
            ):
                newest[key] = (leg, book)
    return list(newest.values())


class PostgresSink(BatchConsumer):
    name = "sink"
    linger_ms = 100  # the sink lag target is 1 s; Grafana reads no faster

    def __init__(
        self,
        deps: Deps,
        db: Database,
        exposure: Exposure | None = None,
        decode: SharedDecode | None = None,
        **kwargs: Any,
    ) -> None:
        names = deps.settings.kafka
        super().__init__(deps, (names.positions_changelog,), names.sink_group, **kwargs)
        self.db = db
        self.exposure = exposure or Exposure()
        self.decode = decode or SharedDecode()

    def _record_steps(
        self, record: ConsumerRecord
    ) -> list[tuple[ConsumerRecord, tuple[Book, ...]]]:
        if record.value is None:
            return [(record, ())]
        return [(record, self.decode.books(record.partition, record.offset, record.value))]

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
        """One transaction per batch: newest version per leg, then the ledger rows; if
        Postgres refuses a value, the batch again record by record (`_write_each`)."""
        if self.db.pool is None:
            raise ConnectionError("postgres pool not ready")
        rejects: list[tuple[Any, ...]] = []

        def undecodable(record: ConsumerRecord, exc: Exception) -> None:
            self.quarantine(record, exc)
            rejects.append(reject_row(self.name, record, f"undecodable: {exc!r}"))

        decoded_records = await decoded(records, self._record_steps, on_error=undecodable)
        books = [book for _, steps in decoded_records for book in steps]
        try:
            async with self.db.pool.acquire() as conn, conn.transaction():
                rows, ledger = await self._write_books(conn, books)
                if rejects:
                    await conn.executemany(INSERT_REJECT, rejects)
        except REFUSED as exc:
            log.warning("sink_batch_refused", error=repr(exc), records=len(records))
            rows, ledger = await self._write_each(decoded_records, rejects)
        self.metrics.inc("pm_sink_rows_total", rows, table="positions")
        self.metrics.inc("pm_sink_rows_total", ledger, table="position_fills")
        self.metrics.inc("pm_sink_batches_total")

    async def _write_books(self, conn: Any, books: Sequence[Book]) -> tuple[int, int]:
        now = self.clock.now()
        as_of = self.exposure.as_of
        rows = [position_row(p, now, as_of(book)) for p, book in coalesce(books)]
        ledger = [row for book in books for row in ledger_rows(book)]
        if rows:
            await conn.executemany(UPSERT_POSITION, rows)
        if ledger:
            await conn.executemany(INSERT_LEDGER, ledger)
        return len(rows), len(ledger)

    async def _write_each(
        self,
        decoded_records: Sequence[tuple[ConsumerRecord, tuple[Book, ...]]],
        rejects: list[tuple[Any, ...]],
    ) -> tuple[int, int]:
        """Each record in its own savepoint; a refused one goes to `sink_rejects`."""
        assert self.db.pool is not None
        rows = ledger = 0
        async with self.db.pool.acquire() as conn, conn.transaction():
            for record, books in decoded_records:
                try:
                    async with conn.transaction():
                        r, n = await self._write_books(conn, books)
                except REFUSED as exc:
                    self.skipped(record, exc, "sink_row_refused", "pm_sink_rejects_total")
                    rejects.append(reject_row(self.name, record, repr(exc)))
                    continue
                rows, ledger = rows + r, ledger + n
            if rejects:
                await conn.executemany(INSERT_REJECT, rejects)
        return rows, ledger
