"""Faust agents: a few lines each: decode, apply, write, emit."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from pm_streams.domain import ScheduleValidation
from pm_streams.gaps import GapReader, Watermarks
from pm_streams.logs import bound_trace, get_logger
from pm_streams.processing import step

if TYPE_CHECKING:
    from pm_streams.app import Service

log = get_logger("pm_streams.agents")


def register(service: Service) -> None:
    app = service.app
    table = service.positions
    cache = service.books
    gaps = GapReader(service.settings)
    marks = Watermarks(service.settings.partitions)

    def book_offsets() -> list[tuple[str, int]]:
        out = []
        for asset, stored in list(table.items()):
            book = cache.decode(asset, stored)
            if book is not None:
                out.append((asset, book.last_offset))
        return out

    async def apply_one(asset: str, payload: bytes, offset: int) -> None:
        started = time.perf_counter()
        try:
            result = step(
                cache.decode(asset, table.get(asset)),
                payload,
                offset,
                service.clock.now(),
                service.engine,
            )
        except Exception as exc:  # a bug, not bad input: inputs are validated at the bridge
            await _dead_letter(service, asset, payload, exc)
            return
        if result.write is not None and result.book is not None:
            table[asset] = result.write
            cache.remember(asset, result.write, result.book)
            _schedule_validations(service, result.book)
            await _contribute(service, result.book)
        elif result.kind == "replay" and result.book is not None:
            # The send after the original write may have been lost in a crash;
            # the portfolio agent ignores it when it already has this version.
            await _contribute(service, result.book)
        _report(service, asset, result.kind, result.notes, result.trace_id)
        service.metrics.observe("pm_apply_seconds", time.perf_counter() - started)

    @app.agent(service.input_topic, name="positions", concurrency=1)
    async def positions(stream: Any) -> None:
        async for event in stream.events():
            tp = event.message.tp
            offset: int = event.message.offset
            applied = marks.get(tp.partition, app.consumer_generation_id, book_offsets)
            if offset > applied + 1:
                missing = await gaps.read(tp.topic, tp.partition, applied + 1, offset)
                service.metrics.inc("pm_offset_gaps_filled_total", len(missing))
                log.warning(
                    "offset_gap_filled",
                    partition=tp.partition,
                    start=applied + 1,
                    end=offset,
                    records=len(missing),
                )
                for record in missing:
                    await apply_one(record.key, record.value, record.offset)
            await apply_one(event.key, event.value, offset)
            marks.advance(tp.partition, offset)


async def _contribute(service: Service, book: Any) -> None:
    """Send the asset's contribution to the portfolio (SPEC §5), event-timed."""
    from pm_streams.portfolio import contribution

    c = contribution(book)
    # force: send now, not as a Faust "attachment" held back until the next offset
    # commit (seconds); a replay re-sends it and the portfolio ignores known versions.
    await service.portfolio.topic.send(
        key=book.asset, value=c.to_bytes(), timestamp=c.at.timestamp(), force=True
    )


def _schedule_validations(service: Service, book: Any) -> None:
    """Hand the engine's `ScheduleValidation` (size discrepancy grace) to the validator."""
    if service.validator is None:
        return
    for effect in book.effects:
        if isinstance(effect, ScheduleValidation):
            service.validator.schedule(effect)


def _report(service: Service, asset: str, kind: str, notes: Any, trace_id: str | None) -> None:
    service.metrics.inc("pm_events_processed_total", result=kind)
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
