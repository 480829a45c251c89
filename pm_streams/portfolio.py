"""The live portfolio of SPEC §5: per-asset contributions, incremental totals, history.

The math is `pm_streams.domain.portfolio`. After each batch the positions agent sends
the contributions of the assets it changed to a one-partition topic, as one record.
One portfolio agent, on the worker owning that partition, keeps

* `portfolio-contrib`: asset → contribution, idempotent by its `version` (the sum of
  the asset's leg versions, which only grows);
* `portfolio-totals`: one record with the §5 totals, the input offset of the last
  contribution it took (so a replay after a crash between the two table writes
  repairs the contribution table instead of double counting), and the limit flag;
* `portfolio-history`: a tumbling windowed table (event time: the change's time), one
  aggregate per window, expiring after `METRICS_CACHE_TTL`; closed windows go to a
  background writer (`portfolio_metrics`): the agent never awaits Postgres.

`portfolio_updated` goes to the outbox topic at most once per
`PORTFOLIO_EVENT_INTERVAL` while changes occur (leading edge from the agent, trailing
edge from a timer); `portfolio_limit_exceeded` once per upward crossing of
`MAX_EXPOSURE_USDT`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import faust
import orjson

from pm_streams.deps import Deps
from pm_streams.domain import UNDECODABLE
from pm_streams.domain.portfolio import (
    Contribution,
    Totals,
    contributions_from_bytes,
    decide,
    totals_of,
    window_start,
)
from pm_streams.domain.portfolio_views import (
    exposure_view,
    pnl_view,
    portfolio_event,
    portfolio_view,
    window_row,
)
from pm_streams.handoff import Handoff
from pm_streams.logs import bound_trace, get_logger
from pm_streams.metrics import Metrics
from pm_streams.names import (
    PORTFOLIO_CONTRIB_TABLE,
    PORTFOLIO_HISTORY_TABLE,
    PORTFOLIO_TOTALS_TABLE,
    TOTALS_KEY,
)
from pm_streams.runtime import ownership
from pm_streams.runtime.reads import Reader
from pm_streams.runtime.windows import window_key
from pm_streams.runtime.writes import TableWriter, on_behalf_of
from pm_streams.topics import raw_topic
from tables.db import Database
from tables.portfolio_metrics import upsert_windows

log = get_logger("pm_streams.portfolio")

HISTORY_SAMPLE = 1.0
"""Seconds of event time between two writes of the same history window."""


def _quarantine(metrics: Metrics, event: Any, exc: Exception) -> None:
    metrics.inc("pm_quarantined_records_total", consumer="portfolio")
    tp = event.message.tp
    log.error(
        "record_quarantined",
        consumer="portfolio",
        topic=tp.topic,
        partition=tp.partition,
        offset=event.message.offset,
        error=repr(exc),
    )


# --------------------------------------------------------------------------- wiring


class Portfolio:
    """Topic, tables, agent, timers and the in-memory read caches of the portfolio."""

    def __init__(self, app: faust.App, deps: Deps, db: Database) -> None:
        self.app = app
        self.settings, self.metrics, self.clock = deps
        settings = self.settings
        self.db = db
        names = settings.kafka
        self.max_exposure = settings.max_exposure_usdt
        self.topic = raw_topic(app, names.portfolio_topic, 1, internal=True)
        self.outbox = raw_topic(app, names.outbox_topic, settings.partitions, internal=True)
        self.contrib = app.Table(
            PORTFOLIO_CONTRIB_TABLE,
            key_type=str,
            value_type=bytes,
            partitions=1,
            help="asset -> its contribution to the portfolio",
        )
        self.totals_table = app.Table(
            PORTFOLIO_TOTALS_TABLE,
            key_type=str,
            value_type=bytes,
            partitions=1,
            help="the portfolio totals (one record)",
        )
        history = app.Table(
            PORTFOLIO_HISTORY_TABLE,
            value_type=bytes,
            partitions=1,
            help="portfolio totals per tumbling window",
        )
        # Values are our own JSON bytes (Faust's type-derived default is "json").
        for table in (self.contrib, self.totals_table, history):
            table.value_serializer = "raw"  # type: ignore[attr-defined]
        self._contrib_writer = TableWriter(self.contrib)
        self._totals_writer = TableWriter(self.totals_table)
        # The positions agent's contributions, by the record they were sent in.
        self.handoff: Handoff[list[Contribution]] = Handoff(256)
        self.history = history.tumbling(
            settings.portfolio_window, expires=settings.metrics_cache_ttl
        )
        self.window = settings.portfolio_window
        self._decoded: dict[str, tuple[bytes, Contribution]] = {}
        self._stored_totals = Reader(self.totals_table)
        self._stored_contribution = Reader(self.contrib)
        self._totals: tuple[bytes | None, Totals] = (None, Totals())
        self._last_emit = 0.0
        self._pending: Totals | None = None
        self._persisted: dict[float, int] = {}
        self._writes: dict[float, dict[str, Any]] = {}
        self._writer_wakeup = asyncio.Event()
        self._rendered: dict[str, tuple[bytes | None, bytes]] = {}
        self._history_last: tuple[float, float] | None = None
        self._history_pending: tuple[float, float, Totals] | None = None

    # -- reads (any worker; meaningful on the owner of the single partition)

    def totals_record(self) -> bytes | None:
        """The stored totals record: a new object with every applied change, so a
        value derived from it is current while the record is the same object."""
        raw: bytes | None = self._stored_totals.get(TOTALS_KEY)
        return raw

    def totals(self) -> Totals:
        raw = self.totals_record()
        cached_raw, cached = self._totals
        if raw is cached_raw:
            return cached
        t = Totals.from_bytes(raw)
        self._totals = (raw, t)
        return t

    def contribution(self, asset: str) -> Contribution | None:
        raw = self._stored_contribution.get(asset)
        if raw is None:
            return None
        hit = self._decoded.get(asset)
        if hit is not None and hit[0] is raw:
            return hit[1]
        c = Contribution.from_bytes(raw)
        self._decoded[asset] = (raw, c)
        return c

    def contributions(self) -> dict[str, Contribution]:
        out: dict[str, Contribution] = {}
        for asset in list(self.contrib.keys()):
            c = self.contribution(asset)
            if c is not None:
                out[asset] = c
        return out

    def view(self, asset: str | None = None) -> dict[str, Any]:
        if asset is not None:
            c = self.contribution(asset)
            cs = {} if c is None else {asset: c}
            return portfolio_view(totals_of(cs.values()), cs, max_exposure=self.max_exposure)
        return portfolio_view(self.totals(), self.contributions(), max_exposure=self.max_exposure)

    def rendered(self, kind: str) -> bytes:
        """`portfolio` / `exposure` / `pnl` as JSON bytes, rendered once per change.

        Valid while the stored totals record is the same object: every applied
        contribution writes a new one, so an answer is never staler than the last change.
        """
        raw = self.totals_record()
        hit = self._rendered.get(kind)
        if hit is not None and hit[0] is raw and raw is not None:
            return hit[1]
        body = self.view()
        if kind == "exposure":
            by_open = {a: v for a, v in body["by_asset"].items() if Decimal(v["size"]) != 0}
            out = orjson.dumps(exposure_view(body, by_open))
        elif kind == "pnl":
            out = orjson.dumps(pnl_view(body))
        else:
            out = orjson.dumps(body)
        self._rendered[kind] = (raw, out)
        return out

    def windows(self, start: float, end: float) -> list[dict[str, Any]]:
        """History entries of the windows overlapping [start, end], oldest first."""
        return [
            window_row(w, w + self.window, totals)
            for w, totals in sorted(self._history_rows().items())
            if w + self.window > start and w <= end
        ]

    def closed_windows(self, now: float) -> list[tuple[float, float, Totals]]:
        return [
            (w, w + self.window, totals)
            for w, totals in self._history_rows().items()
            if w + self.window <= now
        ]

    # -- registration

    def register(self) -> None:
        app = self.app

        @app.agent(self.topic, name="portfolio", concurrency=1)
        async def portfolio(stream: Any) -> None:
            settings = self.settings
            async for events in stream.take_events(
                settings.batch_max, within=settings.batch_window
            ):
                await self._take(events)

        interval = self.settings.portfolio_event_interval

        @app.timer(max(0.05, interval / 4))  # type: ignore[untyped-decorator]
        async def flush_portfolio_event() -> None:
            pending = self._pending
            if pending is not None and time.monotonic() - self._last_emit >= interval:
                await self._emit("portfolio_updated", pending)

        @app.timer(min(max(self.window / 4, 0.5), 15.0))  # type: ignore[untyped-decorator]
        async def close_windows() -> None:
            if not self.owner():
                return
            for start, _end, totals in self.closed_windows(time.time()):
                if self._persisted.get(start) == totals.version:
                    continue
                row = window_row(start, start + self.window, totals)
                row["_version"] = totals.version
                self._writes[start] = row
            if self._writes:
                self._writer_wakeup.set()

        @app.task  # type: ignore[untyped-decorator]
        async def window_writer() -> None:
            while True:
                await self._writer_wakeup.wait()
                self._writer_wakeup.clear()
                await self._write_windows()

    async def _take(self, events: Iterable[Any]) -> None:
        """Decide each contribution in order against in-memory totals, then write the
        totals once and each changed contribution once (the changelog record is what
        costs), then emit events. A crash between those writes is repaired on replay
        (`decide`)."""
        metrics = self.metrics
        started = time.perf_counter()
        totals = self.totals()
        pending: dict[str, Contribution] = {}
        latest: Totals | None = None
        last: Any = None
        crossings: list[Totals] = []
        kinds: dict[str, int] = {}  # decision kind -> contributions (one metric update each)
        now = self.clock.now()
        visibility = metrics.histogram("pm_portfolio_visibility_seconds")
        for event in events:
            last = event
            try:
                taken = self.handoff.take(event.value) or contributions_from_bytes(event.value)
            except UNDECODABLE as exc:  # a record of a newer version: skip, never loop
                _quarantine(self.metrics, event, exc)
                continue
            for index, new in enumerate(taken):
                old = pending.get(new.asset) or self.contribution(new.asset)
                decision = decide(
                    totals,
                    old,
                    new,
                    offset=event.message.offset,
                    index=index,
                    now=now,
                    max_exposure=self.max_exposure,
                )
                kinds[decision.kind] = kinds.get(decision.kind, 0) + 1
                if decision.write_contribution:
                    pending[new.asset] = new
                if decision.totals is None:
                    continue
                totals = latest = decision.totals
                changed_at = new.at.timestamp()  # event time: the position change's
                self._record_history(totals, changed_at, event)
                visibility.observe(max(0.0, time.time() - changed_at))
                if decision.crossed_limit:
                    crossings.append(totals)
        for kind, n in kinds.items():
            metrics.inc("pm_portfolio_changes_total", n, result=kind)
        self._store(latest, pending, last)
        # Only now await anything: `take_events` acks the batch however the agent leaves
        # it, so the tables must hold every decision first.
        for crossed in crossings:
            await self._emit("portfolio_limit_exceeded", crossed)
        if latest is not None:
            await self._maybe_emit(latest)
        metrics.observe("pm_portfolio_apply_seconds", time.perf_counter() - started)

    def _store(self, totals: Totals | None, changed: dict[str, Contribution], origin: Any) -> None:
        if totals is not None:
            self._totals_writer.put(TOTALS_KEY, totals.to_bytes(), origin)
        for asset, c in changed.items():
            raw = c.to_bytes()
            self._contrib_writer.put(asset, raw, origin)
            self._decoded[asset] = (raw, c)

    def _record_history(self, totals: Totals, ts: float, origin: Any) -> None:
        """Write the windowed table at most once per `HISTORY_SAMPLE` s of event time per
        window (a changelog record per change would double the produce load); the
        latest unwritten totals stay pending in memory, overlay reads, and are written
        into their window when the next change lands in a later window."""
        start = window_start(ts, self.window)
        pending = self._history_pending
        last = self._history_last
        close = pending is not None and pending[0] != start
        sample = last is None or last[0] != start or ts - last[1] >= HISTORY_SAMPLE
        if not (close or sample):
            self._history_pending = (start, ts, totals)
            return
        with on_behalf_of(origin):
            if pending is not None and close:  # the previous window's last totals
                self.history.relative_to(pending[1])[TOTALS_KEY] = pending[2].to_bytes()  # type: ignore[attr-defined]
            if sample:  # event time: the change's
                self.history.relative_to(ts)[TOTALS_KEY] = totals.to_bytes()  # type: ignore[attr-defined]
                self._history_last = (start, ts)
        self._history_pending = None if sample else (start, ts, totals)

    def _history_rows(self) -> dict[float, Totals]:
        """Window start -> totals, from the windowed table with the pending overlay."""
        out: dict[float, Totals] = {}
        for raw_key, value in list(self.history.table.data.items()):
            k = window_key(raw_key)
            if k is not None and k[0] == TOTALS_KEY:
                out[k[1]] = Totals.from_bytes(value)
        pending = self._history_pending
        if pending is not None:
            out[pending[0]] = pending[2]
        return out

    def owner(self) -> bool:
        """Whether this worker actively owns the portfolio partition."""
        topic = self.totals_table.changelog_topic.get_topic_name()
        return ownership.owns_partition(self.app, topic, 0)

    async def _maybe_emit(self, totals: Totals) -> None:
        if time.monotonic() - self._last_emit >= self.settings.portfolio_event_interval:
            await self._emit("portfolio_updated", totals)
        else:
            self._pending = totals

    async def _emit(self, event_type: str, totals: Totals) -> None:
        body = portfolio_event(event_type, totals, self.clock.now(), self.max_exposure)
        if event_type == "portfolio_updated":
            self._last_emit = time.monotonic()
            self._pending = None
        with bound_trace(totals.trace_id):
            if event_type != "portfolio_updated":
                log.warning(event_type, total_exposure_usdt=body["total_exposure_usdt"])
        # force: not held back until the next offset commit; ids are deterministic.
        await self.outbox.send(key=TOTALS_KEY, value=orjson.dumps(body), force=True)
        self.metrics.inc("pm_portfolio_events_total", event_type=event_type)

    async def _write_windows(self) -> None:
        pool = self.db.pool
        if pool is None or not self._writes:
            return
        batch = dict(self._writes)
        try:
            await upsert_windows(pool, batch.values())
        except Exception as exc:
            self.metrics.inc("pm_portfolio_window_write_errors_total")
            log.warning("portfolio_window_write_failed", error=repr(exc), windows=len(batch))
            return
        for start, row in batch.items():
            self._persisted[start] = int(row["_version"])
            if self._writes.get(start) is row:
                del self._writes[start]
        self.metrics.inc("pm_portfolio_windows_persisted_total", len(batch))
