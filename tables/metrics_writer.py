"""Periodic copy of the worker's in-process metrics into `service_metrics` (for Grafana).

Every `POSITION_MANAGER_METRICS_WRITE_INTERVAL` seconds (default 30) the writer
inserts one row per counter series that grew since its last write (with `delta`,
the growth), one row per gauge series, and the configured exposure limit. The
Prometheus endpoint stays the live source; this table is what the Health and Risk
dashboards can read from Postgres. Rows older than `RETENTION` are deleted.
A failed write is retried on the next tick with the deltas still accumulated.
"""

from __future__ import annotations

import asyncio
import math
import socket
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from mode import Service

from pm_streams.deps import Deps
from pm_streams.logs import get_logger
from pm_streams.metrics import Labels
from pm_streams.settings import Settings
from tables.db import Database

log = get_logger("tables.metrics_writer")

RETENTION = timedelta(days=7)
_CLEANUP_EVERY = timedelta(hours=1)

INSERT_METRIC = """
INSERT INTO service_metrics (at, worker, started_at, kind, name, labels, value, delta)
VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8)
"""
DELETE_OLD = "DELETE FROM service_metrics WHERE at < $1"

Row = tuple[datetime, str, datetime, str, str, str, Decimal | None, Decimal | None]


def worker_name(settings: Settings) -> str:
    """The worker's name on the dashboards: its static instance id, else host:port."""
    return settings.instance_id or f"{socket.gethostname()}:{settings.port}"


class MetricsWriter(Service):
    def __init__(self, deps: Deps, db: Database, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings, self.metrics, self.clock = deps
        self.db = db
        self.interval = self.settings.metrics_write_interval
        self.worker = worker_name(self.settings)
        self.started_at = self.clock.now()
        self._written: dict[tuple[str, Labels], int] = {}
        self._cleaned_at: datetime | None = None

    async def on_start(self) -> None:
        self.add_future(self._write_loop())

    async def _write_loop(self) -> None:
        while not self.should_stop:
            await self.sleep(self.interval)  # returns early when the worker stops
            if self.should_stop:
                return
            try:
                await self.write_once()
            except Exception as exc:
                log.warning("metrics_write_failed", error=repr(exc))

    def rows(self, now: datetime) -> tuple[list[Row], dict[tuple[str, Labels], int]]:
        """The rows to insert now, and the counter values they account for."""
        rows: list[Row] = []
        seen: dict[tuple[str, Labels], int] = {}
        for name, series in list(self.metrics.counters.items()):
            for labels, value in list(series.items()):
                key = (name, labels)
                seen[key] = value
                before = self._written.get(key)
                if before is not None and before == value:
                    continue
                delta = value - (before or 0)
                rows.append(self._row(now, "counter", name, labels, Decimal(value), Decimal(delta)))
        for name, gseries in list(self.metrics.gauges.items()):
            for labels, gauge in list(gseries.items()):
                if math.isfinite(gauge):
                    rows.append(self._row(now, "gauge", name, labels, Decimal(repr(gauge)), None))
        limit = self.settings.max_exposure_usdt
        rows.append(self._row(now, "setting", "max_exposure_usdt", (), limit, None))
        return rows, seen

    def _row(
        self,
        now: datetime,
        kind: str,
        name: str,
        labels: Labels,
        value: Decimal | None,
        delta: Decimal | None,
    ) -> Row:
        return (
            now,
            self.worker,
            self.started_at,
            kind,
            name,
            orjson.dumps(dict(labels)).decode(),
            value,
            delta,
        )

    async def write_once(self) -> int:
        """Insert one round of rows; return how many (0 while Postgres is not ready)."""
        pool = self.db.pool
        if pool is None:
            return 0
        now = self.clock.now()
        rows, seen = self.rows(now)
        async with asyncio.timeout(10):
            async with pool.acquire() as conn, conn.transaction():
                await conn.executemany(INSERT_METRIC, rows)
            if self._cleaned_at is None or now - self._cleaned_at >= _CLEANUP_EVERY:
                await pool.execute(DELETE_OLD, now - RETENTION)
                self._cleaned_at = now
        self._written.update(seen)
        return len(rows)
