"""Position snapshots (SPEC §6): on demand, periodic, listed newest first, retained N days.

A snapshot is taken on the worker that actively owns the asset: it reads the live
leg, writes the full position with its features as JSONB to `position_snapshots`,
puts a `position_snapshot_created` event on the outbox topic (the republisher sends
it to RabbitMQ) and sends `SnapshotTaken` through the asset's input partition, so
that `last_snapshot_at` is set by the agent, serialized with every other change.

Periodic snapshots: each worker ticks every `interval / 10` (1 s … 60 s) and snapshots
the open legs of the partitions it actively owns whose `last_snapshot_at` is older
than 90% of the interval, in groups paced over 5% of the interval (`_round`). As
`last_snapshot_at` travels with the position in the changelog, a partition that moves
to another worker is not snapshotted twice.
Retention: snapshots older than `SNAPSHOT_RETENTION_DAYS` are deleted once Postgres
is reachable after start-up, then daily (by every worker: the delete is idempotent).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from mode import Service

from pm_streams.deps import Deps
from pm_streams.domain import Position, SnapshotTaken, features, iso, position_to_dict
from pm_streams.logs import bound_trace, get_logger, new_trace_id
from tables.db import Database
from tables.live import LivePositions

log = get_logger("tables.snapshots")

RETENTION_EVERY = 24 * 3600.0
ROUND_SPREAD = 0.05
"""A periodic round is spread over this share of the snapshot interval (3 min of 1 h).
A leg is due at 0.9 of the interval, found within a tick (a tenth of the interval, at
most 60 s) and taken within the spread: within the interval for intervals of 20 min and
up, within 1.05 of it for shorter ones."""
ROUND_GROUP = 16
"""Snapshots of a periodic round taken together (see `Snapshots._round`)."""
EXPOSURE_MAX_AGE = 10.0
"""Seconds a round reuses the stored total exposure for `position_size_norm`."""

INSERT_SNAPSHOT = """
INSERT INTO position_snapshots (id, position_id, asset, mode, snapshot_data, created_at)
VALUES ($1, $2, $3, $4, $5::jsonb, $6)
"""

PAGE = """
WITH page AS (
    SELECT id, created_at FROM position_snapshots
    WHERE asset = $1 AND mode = $2
    ORDER BY created_at DESC, id DESC
    LIMIT $3 OFFSET $4
)
SELECT s.id, s.position_id, s.asset, s.mode, s.snapshot_data::text AS snapshot_data,
       s.created_at
FROM page JOIN position_snapshots s ON s.id = page.id
ORDER BY page.created_at DESC, page.id DESC
"""

COUNT = "SELECT count(*) FROM position_snapshots WHERE asset = $1 AND mode = $2"

DELETE_OLD = "DELETE FROM position_snapshots WHERE created_at < $1"


class Unavailable(Exception):
    """Postgres (or Kafka) is needed for the answer and is not reachable."""


STORED_EXPOSURE = """
SELECT COALESCE(SUM(ABS(size * COALESCE(current_price, average_entry_price))), 0)
FROM positions WHERE size <> 0
"""


def snapshot_event(snapshot: dict[str, Any], trace_id: str) -> dict[str, Any]:
    """`position_snapshot_created` (§8): the snapshot's fields flattened, plus `snapshot_data`."""
    data = snapshot["snapshot_data"]
    body: dict[str, Any] = {
        key: value for key, value in data.items() if key not in ("id",)
    }  # the position's fields
    body.update(
        event_type="position_snapshot_created",
        event_id=f"snapshot:{snapshot['id']}",
        trace_id=trace_id,
        timestamp=snapshot["created_at"],
        snapshot_id=snapshot["id"],
        position_id=snapshot["position_id"],
        asset=snapshot["asset"],
        mode=snapshot["mode"],
        created_at=snapshot["created_at"],
        snapshot_data=data,
    )
    return body


class Snapshots(Service):
    def __init__(
        self, deps: Deps, db: Database, live: LivePositions, outbox_topic: Any, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.settings, self.metrics, self.clock = deps
        self.db = db
        self.live = live
        self.outbox_topic = outbox_topic

    # ------------------------------------------------------------------ on demand

    def _pool(self) -> Any:
        if self.db.pool is None:
            raise Unavailable("postgres is not reachable")
        return self.db.pool

    async def stored_exposure(self) -> Decimal:
        """Total exposure of the open positions Postgres holds (valued as SPEC §5).

        Periodic snapshots run on every worker for the assets it owns, while the live
        totals live on the portfolio's owner; the stored positions are the sink's
        copy, behind the live state by the sink's lag (~0.1 s), and read by every
        worker alike."""
        pool = self._pool()
        try:
            async with asyncio.timeout(10):
                value = await pool.fetchval(STORED_EXPOSURE)
        except (OSError, TimeoutError) as exc:
            raise Unavailable(f"postgres: {exc!r}") from exc
        return Decimal(value)

    async def take(
        self, leg: Position, trace_id: str | None = None, *, exposure: Decimal
    ) -> dict[str, Any]:
        """Snapshot the live `leg` (call on the owning worker); return the snapshot.

        `exposure` is the portfolio's total exposure for `position_size_norm`."""
        trace_id = trace_id or new_trace_id()
        pool = self._pool()
        now = self.clock.now()
        data = position_to_dict(leg, features=features(leg, now, exposure))
        snapshot_id = str(uuid.uuid4())
        raw = orjson.dumps(data)
        try:
            async with asyncio.timeout(10):
                await pool.execute(
                    INSERT_SNAPSHOT, snapshot_id, leg.id, leg.asset, leg.mode, raw.decode(), now
                )
        except (OSError, TimeoutError) as exc:
            raise Unavailable(f"postgres: {exc!r}") from exc
        snapshot = {
            "id": snapshot_id,
            "position_id": leg.id,
            "asset": leg.asset,
            "mode": leg.mode,
            "snapshot_data": data,
            "created_at": iso(now),
        }
        async with asyncio.timeout(10):
            fut = await self.outbox_topic.send(
                key=leg.asset, value=orjson.dumps(snapshot_event(snapshot, trace_id))
            )
            await fut
            await self.live.send(SnapshotTaken(leg.asset, leg.mode, now, trace_id))
        self.metrics.inc("pm_snapshots_total")
        with bound_trace(trace_id):
            log.info(
                "snapshot_created",
                asset=leg.asset,
                mode=leg.mode,
                snapshot_id=snapshot_id,
                version=leg.version,
            )
        return snapshot

    async def page(
        self, asset: str, mode: str, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        """Snapshots of `(asset, mode)`, newest first, and how many exist in all."""
        pool = self._pool()
        try:
            async with asyncio.timeout(10):
                rows = await pool.fetch(PAGE, asset, mode, limit, offset)
                total = int(await pool.fetchval(COUNT, asset, mode))
        except (OSError, TimeoutError) as exc:
            raise Unavailable(f"postgres: {exc!r}") from exc
        return [
            {
                "id": str(r["id"]),
                "position_id": str(r["position_id"]),
                "asset": r["asset"],
                "mode": r["mode"],
                "snapshot_data": orjson.loads(r["snapshot_data"]),
                "created_at": iso(r["created_at"]),
            }
            for r in rows
        ], total

    async def cleanup(self, now: datetime | None = None) -> int:
        """Delete snapshots older than the retention; return how many."""
        pool = self._pool()
        cutoff = (now or self.clock.now()) - timedelta(days=self.settings.snapshot_retention_days)
        status = await pool.execute(DELETE_OLD, cutoff)
        deleted = int(status.split()[-1]) if status.startswith("DELETE") else 0
        self.metrics.inc("pm_snapshots_deleted_total", deleted)
        log.info("snapshot_retention", deleted=deleted, cutoff=iso(cutoff))
        return deleted

    # ------------------------------------------------------------------ periodic

    async def on_start(self) -> None:
        self.add_future(self._retention_loop())
        self.add_future(self._periodic_loop())

    async def _retention_loop(self) -> None:
        while not self.should_stop:
            if self.db.pool is None:
                await asyncio.sleep(1.0)
                continue
            try:
                await self.cleanup()
            except Exception as exc:
                log.warning("snapshot_retention_failed", error=repr(exc))
                await asyncio.sleep(30.0)
                continue
            await self.sleep(RETENTION_EVERY)  # returns early when the worker stops

    def due(self, leg: Position, now: datetime) -> bool:
        interval = self.settings.snapshot_interval
        last = leg.last_snapshot_at
        return last is None or (now - last).total_seconds() >= 0.9 * interval

    async def _periodic_loop(self) -> None:
        interval = self.settings.snapshot_interval
        tick = min(60.0, max(1.0, interval / 10))
        while not self.should_stop:
            await self.sleep(tick)  # returns early when the worker stops
            if self.should_stop:
                return
            if self.db.pool is None:
                continue
            now = self.clock.now()
            legs = self.live.owned_open_legs()
            due = [(leg.asset, leg.mode) for leg in legs if self.due(leg, now)]
            if due:
                await self._round(due, spread=interval * ROUND_SPREAD)

    async def _round(self, due: list[tuple[str, str]], spread: float) -> None:
        """Snapshot the `due` legs in groups of `ROUND_GROUP`, paced evenly over `spread`
        seconds.

        A round is every open leg at a worker's first tick, and again each interval:
        taken back to back, a round of a thousand legs holds a core long enough to
        lift every event's latency. Taken one by one, each snapshot's outbox and input
        records go out in Kafka requests of their own, and the agents take its
        `SnapshotTaken` as a batch of one. A group's snapshots are taken together,
        so they share those requests and batches. Each leg is read again just before
        its snapshot, so one that moved to another worker, closed, or was snapshotted
        on demand meanwhile is skipped, and the exposure is read again when older than
        `EXPOSURE_MAX_AGE`.
        """
        groups = [due[i : i + ROUND_GROUP] for i in range(0, len(due), ROUND_GROUP)]
        gap = spread / len(groups)
        exposure: tuple[float, Decimal] | None = None  # (read at, monotonic s; value)
        for i, group in enumerate(groups):
            if i and gap > 0:
                await self.sleep(gap)  # returns early when the worker stops
            if self.should_stop:
                return
            legs = [leg for asset, mode in group if (leg := self._still_due(asset, mode))]
            if not legs:
                continue
            try:
                if exposure is None or time.monotonic() - exposure[0] >= EXPOSURE_MAX_AGE:
                    exposure = (time.monotonic(), await self.stored_exposure())
            except Unavailable as exc:
                log.warning("periodic_snapshot_failed", error=repr(exc))
                return
            if not await self._take_all(legs, exposure[1]):
                return  # Postgres or Kafka is down: the next tick tries again

    async def _take_all(self, legs: list[Position], exposure: Decimal) -> bool:
        """Snapshot `legs` together; whether every one was taken (failures are logged)."""
        results = await asyncio.gather(
            *(self.take(leg, exposure=exposure) for leg in legs), return_exceptions=True
        )
        failed = [
            (leg, r) for leg, r in zip(legs, results, strict=True) if isinstance(r, BaseException)
        ]
        for leg, error in failed:
            log.warning(
                "periodic_snapshot_failed", asset=leg.asset, mode=leg.mode, error=repr(error)
            )
        return not failed

    def _still_due(self, asset: str, mode: str) -> Position | None:
        """The live leg, if this worker still owns it and it is still open and due."""
        leg = self.live.leg(asset, mode) if self.live.owns(asset) else None
        if leg is None or not leg.is_open or not self.due(leg, self.clock.now()):
            return None
        return leg
