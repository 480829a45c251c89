"""Exchange position updates, price updates, corrections and snapshots applied to a
book (SPEC §4.2-§4.4, §6); fills are `pm_streams.domain.engine`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import (
    Decimal,
)

from pm_streams.domain.legs import (
    CLOSED,
    SRC_VALIDATION,
    SRC_WS,
    UPDATED,
    Result,
    changed,
    evolve,
    fresh_leg,
    make_note,
    unrealized_of,
)
from pm_streams.domain.model import (
    ZERO,
    Book,
    Correction,
    Effect,
    EngineConfig,
    ExchangeUpdate,
    Note,
    Position,
    PriceUpdate,
    Publish,
    ScheduleValidation,
    SnapshotTaken,
)

# --------------------------------------------------------------------------- exchange


def _is_stale(leg: Position, ev: ExchangeUpdate) -> bool:
    """Strictly older than the last applied push (SPEC §3.1 rev 2): the same `seq` is
    not stale; if it changes nothing it is a no-op, otherwise it is applied."""
    if ev.seq is not None and leg.exchange_seq is not None and ev.seq < leg.exchange_seq:
        return True
    return (
        ev.updated_ms is not None
        and leg.exchange_updated_ms is not None
        and ev.updated_ms < leg.exchange_updated_ms
    )


def _adopted_avg(leg: Position, ev: ExchangeUpdate, cfg: EngineConfig) -> Decimal | None:
    """SPEC §4.2: the exchange's avg price when it differs by more than the threshold.

    Ignored for a flat leg (its average is meaningless) and for an avgPrice of 0.
    """
    new, old = ev.avg_price, leg.average_entry_price
    if not cfg.use_ws_avg_price or new is None or new <= 0 or leg.size == 0 or new == old:
        return None
    if old == 0 or abs(new - old) / old > cfg.avg_price_diff_threshold:
        return new
    return None


def apply_exchange(
    book: Book,
    ev: ExchangeUpdate,
    now: datetime,
    cfg: EngineConfig,
    new_id: Callable[[], str],
) -> Result:
    leg = book.leg(ev.mode)
    if leg is None:
        return _create_from_exchange(book, ev, now, new_id)
    if _is_stale(leg, ev):
        return book, (_stale_note(leg, ev),)

    notes: list[Effect] = []
    avg = leg.average_entry_price
    adopted = _adopted_avg(leg, ev, cfg)
    if adopted is not None:
        notes.append(
            make_note(
                "avg_price_replaced", mode=ev.mode, old=avg, new=adopted, trace_id=ev.trace_id
            )
        )
        avg = adopted

    price = leg.current_price if ev.mark_price is None else ev.mark_price
    unrealized = _unrealized_after(leg, ev, avg, price)
    realized = leg.realized_pnl if ev.realized_pnl is None else ev.realized_pnl
    ex_size = leg.exchange_size if ev.size is None else ev.size
    ex_avg = leg.exchange_avg_price if ev.avg_price is None else ev.avg_price

    if (
        avg == leg.average_entry_price
        and price == leg.current_price
        and unrealized == leg.unrealized_pnl
        and realized == leg.realized_pnl
        and ex_size == leg.exchange_size
        and ex_avg == leg.exchange_avg_price
    ):
        return book, (make_note("noop", mode=ev.mode, seq=ev.seq, trace_id=ev.trace_id),)

    new_leg = evolve(
        leg,
        average_entry_price=avg,
        current_price=price,
        last_price_at=now if ev.mark_price is not None else leg.last_price_at,
        unrealized_pnl=unrealized,
        realized_pnl=realized,
        exchange_size=ex_size,
        exchange_avg_price=ex_avg,
        exchange_seq=leg.exchange_seq if ev.seq is None else ev.seq,
        exchange_updated_ms=leg.exchange_updated_ms if ev.updated_ms is None else ev.updated_ms,
        version=leg.version + 1,
        last_updated=now,
    )
    notes += _size_discrepancy(book, leg, ev, cfg)
    effects = (*notes, Publish(UPDATED, ev.mode, SRC_WS, ev.trace_id))
    return changed(book, new_leg, effects)


def _unrealized_after(
    leg: Position, ev: ExchangeUpdate, avg: Decimal, price: Decimal | None
) -> Decimal:
    """The exchange's unrealized PnL, else recomputed when the price or entry changed."""
    if ev.unrealized_pnl is not None:
        return ev.unrealized_pnl
    if ev.mark_price is not None or avg != leg.average_entry_price:
        return unrealized_of(leg.size, avg, price, leg.unrealized_pnl)
    return leg.unrealized_pnl


def _stale_note(leg: Position, ev: ExchangeUpdate) -> Note:
    return make_note(
        "stale_event",
        mode=ev.mode,
        seq=ev.seq,
        stored_seq=leg.exchange_seq,
        updated_ms=ev.updated_ms,
        stored_updated_ms=leg.exchange_updated_ms,
        trace_id=ev.trace_id,
    )


def _size_discrepancy(
    book: Book, leg: Position, ev: ExchangeUpdate, cfg: EngineConfig
) -> list[Effect]:
    """A note and a validation when the exchange's size differs beyond the threshold."""
    if ev.size is None or abs(ev.size - leg.size) <= cfg.size_validation_threshold:
        return []
    return [
        make_note(
            "size_discrepancy",
            mode=ev.mode,
            size=leg.size,
            exchange_size=ev.size,
            trace_id=ev.trace_id,
        ),
        ScheduleValidation(book.asset, ev.mode, cfg.size_reconcile_grace, "size_discrepancy"),
    ]


def _create_from_exchange(
    book: Book, ev: ExchangeUpdate, now: datetime, new_id: Callable[[], str]
) -> Result:
    """A push for a leg we do not have: create it (unless it reports a flat position)."""
    if ev.size is None or ev.size == 0:
        return book, (make_note("noop", mode=ev.mode, reason="flat_unknown", trace_id=ev.trace_id),)
    base = fresh_leg(book, ev.mode, now, new_id)
    avg = ev.avg_price if ev.avg_price is not None else ZERO
    price = ev.mark_price if ev.mark_price is not None else base.current_price
    if ev.unrealized_pnl is not None:
        unrealized = ev.unrealized_pnl
    elif avg > 0:
        unrealized = unrealized_of(ev.size, avg, price, ZERO)
    else:
        unrealized = ZERO
    leg = evolve(
        base,
        size=ev.size,
        average_entry_price=avg,
        current_price=price,
        last_price_at=now if ev.mark_price is not None else base.last_price_at,
        unrealized_pnl=unrealized,
        realized_pnl=ev.realized_pnl if ev.realized_pnl is not None else ZERO,
        opened_at=now,
        exchange_size=ev.size,
        exchange_avg_price=ev.avg_price,
        exchange_seq=ev.seq,
        exchange_updated_ms=ev.updated_ms,
        version=1,
    )
    return changed(book, leg, (Publish(UPDATED, ev.mode, SRC_WS, ev.trace_id),))


# --------------------------------------------------------------------------- prices


def apply_price(book: Book, ev: PriceUpdate, now: datetime) -> Result:
    legs = list(book.legs)
    effects: list[Effect] = []
    for i, leg in enumerate(legs):
        if not leg.is_open or leg.current_price == ev.mark_price:
            continue
        legs[i] = evolve(
            leg,
            current_price=ev.mark_price,
            last_price_at=now,
            unrealized_pnl=(ev.mark_price - leg.average_entry_price) * leg.size,
            version=leg.version + 1,
            last_updated=now,
        )
        effects.append(Publish(UPDATED, leg.mode, SRC_WS, ev.trace_id))
    if not effects:
        return book, (make_note("noop", price=ev.mark_price, trace_id=ev.trace_id),)
    out = tuple(effects)
    return Book(book.asset, tuple(legs), book.fill_ids, out), out


# --------------------------------------------------------------------------- validation


def apply_correction(
    book: Book, ev: Correction, now: datetime, new_id: Callable[[], str]
) -> Result:
    leg = book.leg(ev.mode)
    if leg is None:
        if ev.size is None or ev.size == 0:
            return book, (make_note("noop", mode=ev.mode, reason=ev.reason, trace_id=ev.trace_id),)
        leg = fresh_leg(book, ev.mode, now, new_id)
    size = leg.size if ev.size is None else ev.size
    avg = leg.average_entry_price if ev.avg_price is None else ev.avg_price
    if size == leg.size and avg == leg.average_entry_price:
        return book, (make_note("noop", mode=ev.mode, reason=ev.reason, trace_id=ev.trace_id),)

    opened_at, closed_at = leg.opened_at, leg.closed_at
    if size == 0 and leg.size != 0:
        closed_at = now
        kind = CLOSED
    else:
        kind = UPDATED
        if size != 0 and leg.size == 0:
            opened_at, closed_at = now, None
    new_leg = evolve(
        leg,
        size=size,
        average_entry_price=avg,
        unrealized_pnl=unrealized_of(size, avg, leg.current_price, leg.unrealized_pnl),
        opened_at=opened_at,
        closed_at=closed_at,
        version=leg.version + 1,
        last_updated=now,
    )
    note = make_note(
        "position_corrected",
        mode=ev.mode,
        old_size=leg.size,
        size=size,
        old_avg_price=leg.average_entry_price,
        avg_price=avg,
        reason=ev.reason,
        trace_id=ev.trace_id,
    )
    return changed(book, new_leg, (note, Publish(kind, ev.mode, SRC_VALIDATION, ev.trace_id)))


def apply_snapshot(book: Book, ev: SnapshotTaken) -> Result:
    leg = book.leg(ev.mode)
    if leg is None:
        note = make_note("noop", mode=ev.mode, reason="snapshot_no_position", trace_id=ev.trace_id)
        return book, (note,)
    return changed(book, evolve(leg, last_snapshot_at=ev.at), ())
