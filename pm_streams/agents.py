"""The positions agent: per batch of input events, decode and apply each, then write
each changed asset once and send its portfolio contribution."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from pm_streams.context import Service
from pm_streams.domain import UNDECODABLE, Book, Event, ScheduleValidation, event_from_bytes
from pm_streams.domain.portfolio import contribution, contributions_to_bytes
from pm_streams.fill_ids import FillIds
from pm_streams.logs import bound_trace, get_logger
from pm_streams.processing import Batch, Step, step
from pm_streams.runtime.gaps import GapReader, Sentry, Watermarks
from pm_streams.runtime.reads import Reader
from pm_streams.runtime.writes import TableWriter
from pm_streams.stored import Stored, record_floor, stored_to_bytes

log = get_logger("pm_streams.agents")

PROBE = b'{"type":"probe"}'
"""A record the agent skips; sent to an input partition whose last records Faust skipped
(`gaps.Sentry`), so that they are re-read (`fill_gap`) at once, not only when the
partition's next real event arrives."""

PROBE_INTERVAL = 0.5
"""Seconds between the sentry's looks at the input partitions' high-water marks."""

CONTRIBUTIONS_PER_RECORD = 500
"""~300 bytes each: a record of at most ~150 KB."""


def register(service: Service) -> None:
    """The positions agent: per batch, apply every event, then write and contribute."""
    positions = Positions(service)
    settings = service.settings

    @service.app.agent(service.input_topic, name="positions", concurrency=1)
    async def agent(stream: Any) -> None:
        async for events in stream.take_events(settings.batch_max, within=settings.batch_window):
            await positions.take(events)

    @service.app.timer(PROBE_INTERVAL)  # type: ignore[untyped-decorator]
    async def watch_partitions() -> None:
        await positions.watch_partitions()


class Positions:
    """The positions agent's state and steps; Faust calls `take` with each batch."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.app = service.app
        self.table = service.positions
        self.writer = TableWriter(self.table)
        self.read = Reader(self.table)
        self.cache = service.books
        self.gaps = GapReader(service.settings)
        self.marks = Watermarks(service.settings.partitions)
        self.ids = FillIds(
            service.fill_ids,
            service.settings.dedup_horizon,
            self.marks.partition_of,
            TableWriter(service.fill_ids).put,
        )
        self.sentry = Sentry()
        self.sentry_generation: int | None = None
        # Per input partition, the first offset applied since the last `flush`: the
        # books written in one cycle go out in asset order, and a crash can keep a
        # prefix of them, so one asset's newest record can be durable while another's
        # older one of the same cycle is lost. Every record carries the cycle's floor
        # (everything of its partition up to it was written in earlier cycles, which
        # are durable once any later record is), and the watermark after a rebalance is
        # rebuilt from the floors, not from `Stored.offset` (which skipped such a lost
        # event).
        self.cycle_from: dict[int, int] = {}
        # Metric series of the per-event path, looked up once.
        metrics = service.metrics
        self.processed = metrics.counter_series("pm_events_processed_total")
        self.kind_keys: dict[str, Any] = {}
        self.apply_seconds = metrics.histogram("pm_apply_seconds")
        self.events = service.events

    def decode(self, payload: bytes) -> Event:
        """An input event: the bridge's own object when it forwarded these bytes."""
        event = self.events.take(payload)
        return event if event is not None else event_from_bytes(payload)

    async def take(self, events: list[Any]) -> None:
        """Apply a batch in order (reading back any records Faust skipped), then flush."""
        batch: Batch[Any] = Batch()
        generation = self.app.consumer_generation_id
        self.ids.reindex(generation)
        for event in events:
            tp = event.message.tp
            offset: int = event.message.offset
            applied = self.marks.get(tp.partition, generation, self.book_floors)
            if offset > applied + 1:
                await self.fill_gap(event, applied, batch)
            await self.apply_all(((event.key, event.value, offset),), batch, event)
            self.marks.advance(tp.partition, offset)
        self.flush(batch)

    def book_floors(self) -> list[tuple[str, int]]:
        """The records' floors; an unreadable record tells none (a lower watermark only
        re-reads records that the books' own replay guard then skips)."""
        floors = []
        for asset, raw in list(self.table.items()):
            try:
                floors.append((asset, record_floor(raw)))
            except UNDECODABLE:
                continue
        return floors

    def stored_book(self, asset: str) -> Book | None:
        """The asset's stored book, None when it has none or it cannot be read."""
        try:
            return self.cache.decode(asset, self.read.get(asset))
        except UNDECODABLE:
            return None

    def write(self, stored: Stored, origin: Any) -> None:
        """Store a record; `origin` is an input event of its partition (`TableWriter.put`).
        The record carries no fill ids: they live in the fill-id table."""
        book = stored.book
        if book.fill_ids:
            book = Book(book.asset, book.legs, (), book.effects)
            stored = Stored(book, stored.offset, stored.earlier)
        first = self.cycle_from.get(origin.message.tp.partition)
        raw = stored_to_bytes(stored, floor=None if first is None else first - 1)
        self.writer.put(book.asset, raw, origin)
        self.cache.remember(book.asset, raw, stored)

    def apply_one(
        self, asset: str, payload: bytes, offset: int, batch: Batch[Any], origin: Any
    ) -> Exception | None:
        """Apply one event into `batch`; the exception of a failed event is returned."""
        if payload == PROBE:
            return None
        service = self.service
        started = time.perf_counter()
        self.cycle_from.setdefault(origin.message.tp.partition, offset)
        now = service.clock.now()
        try:
            # An unreadable stored book (a record of a newer version after a rollback)
            # dead-letters the asset's events instead of crash-looping the agent.
            current = batch.get(asset)
            if current is None:
                current = self.cache.record(asset, self.read.get(asset))
                if current is not None and current.book.fill_ids:
                    _seed_legacy_ids(self.ids, current, now, origin)
            result = step(
                current,
                payload,
                offset,
                now,
                service.engine,
                applied_offset=self.ids.applied_offset,
                decode=self.decode,
            )
        except Exception as exc:  # a bug, not bad input: inputs are validated at the bridge
            return exc
        self.keep(asset, result, offset, int(now.timestamp() * 1000), batch, origin)
        processed, key = self.processed, self.kind_keys.get(result.kind)
        if key is None:
            key = self.kind_keys[result.kind] = service.metrics.series_key(result=result.kind)
        processed[key] = processed.get(key, 0) + 1
        if result.notes:
            _report(service, asset, result.notes, result.trace_id)
        self.apply_seconds.observe(time.perf_counter() - started)
        return None

    def keep(
        self, asset: str, result: Step, offset: int, at_ms: int, batch: Batch[Any], origin: Any
    ) -> None:
        """Put an applied change into `batch` (and its fill id in the table); a replayed
        fill's id is written again if a crash lost it."""
        fill = result.fill
        if result.kind == "applied" and result.stored is not None:
            if fill is not None:
                self.ids.record(fill.asset, fill.mode, fill.fill_id, offset, at_ms, origin)
            full = batch.put(result.stored, origin)
            if full is not None:
                self.write(*full)
            _schedule_validations(self.service, result.stored.book)
        elif result.kind == "replay":
            batch.replayed(asset)
            if fill is not None and self.ids.restore(
                fill.asset, fill.mode, fill.fill_id, offset, at_ms, origin
            ):
                self.service.metrics.inc("pm_fill_ids_restored_total")

    async def apply_all(
        self, records: Iterable[tuple[str, bytes, int]], batch: Batch[Any], origin: Any
    ) -> None:
        """Apply records of `origin`'s partition in order; a failed one goes to the DLQ."""
        for asset, payload, offset in records:
            error = self.apply_one(asset, payload, offset, batch, origin)
            if error is not None:
                self.flush(batch)  # before any await: see `flush`
                await _dead_letter(self.service, asset, payload, error)

    async def fill_gap(self, event: Any, applied: int, batch: Batch[Any]) -> None:
        """Apply the records between the watermark and `event` that Faust skipped."""
        tp, offset = event.message.tp, event.message.offset
        self.flush(batch)  # before any await: see `flush`
        missing = await self.gaps.read(tp.topic, tp.partition, applied + 1, offset)
        self.service.metrics.inc("pm_offset_gaps_filled_total", len(missing))
        log.warning(
            "offset_gap_filled",
            partition=tp.partition,
            start=applied + 1,
            end=offset,
            records=len(missing),
        )
        await self.apply_all(((r.key, r.value, r.offset) for r in missing), batch, event)

    def flush(self, batch: Batch[Any]) -> None:
        """Write each changed asset once, then queue the contributions of the batch.

        Synchronous on purpose: `take_events` acks a batch's events when the agent
        leaves the batch, also when it is cancelled at an `await` (a stop, a rebalance),
        so every applied event must be in the table (and its contribution queued on the
        same producer buffer, after the table record) before anything is awaited."""
        records, touched = batch.drain()
        origins: dict[int, Any] = {}
        for stored, origin in records:
            self.write(stored, origin)
            origins[origin.message.tp.partition] = origin
        self.ids.flush()
        self.cycle_from.clear()
        now_ms = int(self.service.clock.now().timestamp() * 1000)
        for origin in origins.values():
            expired = self.ids.sweep(origin, now_ms)
            if expired:
                self.service.metrics.inc("pm_fill_ids_expired_total", expired)
        latest = (self.stored_book(asset) for asset in touched)
        _contribute(self.service, [book for book in latest if book is not None])

    async def watch_partitions(self) -> None:
        """Send a probe record to each owned input partition with records the agent has
        not seen and no progress (`gaps.Sentry`), so the gap check reads them back."""
        app = self.app
        if app.rebalancing or not app.flow_control.is_active():
            return
        generation = app.consumer_generation_id
        if self.sentry_generation != generation:
            self.sentry.forget()
            self.sentry_generation = generation
        name = self.service.input_topic.get_topic_name()
        try:
            assigned = [tp for tp in app.consumer.assignment() if tp.topic == name]
        except Exception as exc:  # not started, or stopping: nothing is assigned
            log.debug("probe_skipped", error=repr(exc))
            return
        for tp in assigned:
            applied = self.marks.get(tp.partition, generation, self.book_floors)
            if self.sentry.due(tp.partition, applied, _highwater(app, tp)):
                self.service.metrics.inc("pm_probes_sent_total")
                await self.service.input_topic.send(value=PROBE, partition=tp.partition)


def _highwater(app: Any, tp: Any) -> int | None:
    """The offset the partition's next record will get, as of the last fetch."""
    try:
        value = app.consumer.highwater(tp)
    except Exception:  # unassigned meanwhile
        return None
    return value if isinstance(value, int) else None


def _seed_legacy_ids(ids: FillIds, stored: Stored, now: Any, origin: Any) -> None:
    """A record written before the fill-id table carries its last fill ids itself:
    copy them into the table (as applied at the record's offset) before the next write
    drops them from the record."""
    at_ms = int(now.timestamp() * 1000)
    book = stored.book
    for leg in book.legs:
        for fill_id in book.fill_ids:
            ids.restore(book.asset, leg.mode, fill_id, stored.offset, at_ms, origin)


def _contribute(service: Service, books: list[Book]) -> None:
    """Queue the contributions of `books` to the portfolio (SPEC §5), event-timed.

    Appended to the producer's batch at once (`Buffer.append_now`), or `send_soon`
    behind what the buffer holds: after the table records they describe either way,
    without an await; a replay re-sends them and the portfolio ignores versions it has.
    At most `CONTRIBUTIONS_PER_RECORD` per record (a record stays far below Kafka's 1 MB)."""
    topic = service.portfolio.topic
    buffer: Any = service.app.producer.buffer  # `runtime.buffer.Buffer` (the transport's)
    for start in range(0, len(books), CONTRIBUTIONS_PER_RECORD):
        chunk = [contribution(book) for book in books[start : start + CONTRIBUTIONS_PER_RECORD]]
        raw = contributions_to_bytes(chunk)
        service.portfolio.handoff.put(raw, chunk)
        at = max(c.at for c in chunk).timestamp()
        if not buffer.append_now(topic.get_topic_name(), None, raw, None, None, int(at * 1000.0)):
            topic.send_soon(key=None, value=raw, timestamp=at, force=True)


def _schedule_validations(service: Service, book: Book) -> None:
    """Hand the engine's `ScheduleValidation` (size discrepancy grace) to the validator."""
    for effect in book.effects:
        if isinstance(effect, ScheduleValidation):
            service.validator.schedule(effect)


def _report(service: Service, asset: str, notes: Any, trace_id: str | None) -> None:
    for note in notes:
        service.metrics.inc("pm_engine_notes_total", kind=note.kind)
        with bound_trace(trace_id or "-"):
            log.info(note.kind, asset=asset, **dict(note.fields))


async def _dead_letter(service: Service, asset: str, payload: bytes, exc: Exception) -> None:
    service.metrics.inc("pm_engine_errors_total")
    log.error("engine_error", asset=asset, error=repr(exc), exc_info=exc)
    await service.dead_letter_topic.send(
        key=asset, value=payload, headers={"x-reason": repr(exc)[:500].encode()}
    )
