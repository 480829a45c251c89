"""The position engine: one pure function from (book, event) to (book, effects).

Rules are those of SPEC §4. Decisions the SPEC leaves open, made here:

* **No-op exchange pushes are not recorded.** When an exchange update changes no stored
  value (size, average price, prices, PnL, exchange size/avg), the same book object is
  returned and its `seq`/`updatedTime` is *not* remembered. Recording it would mean a
  write without a version change. The cost: a later push carrying a seq between the
  recorded one and the skipped one would not be recognised as stale; as pushes reach
  us in order per asset (one Kafka partition), that only happens on an upstream
  redelivery, and the next push corrects the state.
* **Fees.** Every trading fee is charged to realized PnL when it is paid, opening and
  increasing fills included (SPEC §4.1 rev 2, Bybit's `cumRealisedPnl` convention), so
  `realized + unrealized` is the cash result and an exchange push carrying
  `cumRealisedPnl` does not make realized jump.
* **Hedge over-close.** A hedge leg never changes side. A reduce bigger than the leg
  closes the leg; the remainder is ignored and a `hedge_overclose` note is emitted.
  The whole fee is charged (realized and total fees), as nothing is opened to carry
  part of it. Validation against the exchange then settles the truth.
* **Fill ids** are kept per asset (one book), bounded to `fill_id_capacity`, oldest
  dropped first. Replays of whole input events are caught by the store's offset
  guard (`pm_streams.stored`); the ids catch the same fill arriving twice upstream.
* **Price updates** touch open legs only; a closed leg keeps its last price. A new
  leg inherits the freshest price known for the asset.
* `update_source` of a price update is `websocket` (exchange market data).
* An exchange push reporting a flat position for a leg we do not have creates nothing.
* An exchange `avgPrice` of 0 (Bybit's "no position") is never adopted, and the
  average price of a flat leg is not replaced.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import (
    Decimal,
    localcontext,
)

from pm_streams.domain.exchange import (
    apply_correction,
    apply_exchange,
    apply_price,
    apply_snapshot,
)
from pm_streams.domain.legs import (
    CLOSED,
    DECIMAL_CONTEXT,
    SRC_ORDER,
    UPDATED,
    Result,
    changed,
    evolve,
    fresh_leg,
    make_note,
    sign,
    unrealized_of,
)
from pm_streams.domain.model import (
    MODES,
    ZERO,
    Book,
    Correction,
    Effect,
    EngineConfig,
    Event,
    ExchangeUpdate,
    Fill,
    LedgerEntry,
    Position,
    PriceUpdate,
    Publish,
)


def apply(
    book: Book | None,
    event: Event,
    now: datetime,
    cfg: EngineConfig,
    *,
    new_id: Callable[[], str],
) -> Result:
    """Apply one event to an asset's book.

    Returns the new book, whose `effects` are the returned effects, or — when nothing
    changed (duplicate, stale, no-op) — the very same `book` object with effects that
    are only `Note`s: callers test `new is book` to skip the write. When `book` is None
    and nothing changed, an empty book (no legs, no fill ids) is returned; see
    `needs_write`.

    `now` is the processing time stamped on the change; `new_id` makes position ids.
    """
    if book is None:
        book = Book(asset=event.asset, legs=(), fill_ids=())
    elif book.asset != event.asset:
        raise ValueError(f"event for {event.asset!r} applied to the book of {book.asset!r}")
    if not isinstance(event, PriceUpdate) and event.mode not in MODES:
        raise ValueError(f"unknown mode {event.mode!r}")
    with localcontext(DECIMAL_CONTEXT):
        if isinstance(event, Fill):
            return _apply_fill(book, event, now, cfg, new_id)
        if isinstance(event, ExchangeUpdate):
            return apply_exchange(book, event, now, cfg, new_id)
        if isinstance(event, PriceUpdate):
            return apply_price(book, event, now)
        if isinstance(event, Correction):
            return apply_correction(book, event, now, new_id)
        return apply_snapshot(book, event)


def needs_write(old: Book | None, new: Book) -> bool:
    """Whether `new` (from `apply(old, …)`) must be stored."""
    if new is old:
        return False
    return not (old is None and not new.legs and not new.fill_ids)


# --------------------------------------------------------------------------- fills


def _with_id(ids: tuple[str, ...], fill_id: str, capacity: int) -> tuple[str, ...]:
    """`ids + (fill_id,)`, keeping the newest `capacity`."""
    drop = len(ids) + 1 - capacity
    return (ids[drop:] if drop > 0 else ids) + (fill_id,)


def _apply_fill(
    book: Book,
    fill: Fill,
    now: datetime,
    cfg: EngineConfig,
    new_id: Callable[[], str],
) -> Result:
    if fill.fill_id in book.fill_ids:
        return book, (
            make_note(
                "duplicate_fill", fill_id=fill.fill_id, mode=fill.mode, trace_id=fill.trace_id
            ),
        )
    leg = book.leg(fill.mode)
    if leg is None:
        leg = fresh_leg(book, fill.mode, now, new_id)
    notes: tuple[Effect, ...] = ()
    if fill.is_funding:
        new_leg = evolve(
            leg,
            realized_pnl=leg.realized_pnl - fill.fee,
            funding_pnl=leg.funding_pnl - fill.fee,
            total_fees=leg.total_fees + fill.fee,
            version=leg.version + 1,
            last_updated=now,
        )
        kinds: tuple[str, ...] = (UPDATED,)
    else:
        qty = _hedge_clamp(leg, fill.quantity)
        if qty != fill.quantity:
            notes = (
                make_note(
                    "hedge_overclose",
                    fill_id=fill.fill_id,
                    mode=fill.mode,
                    leg_size=leg.size,
                    quantity=fill.quantity,
                    applied=qty,
                    trace_id=fill.trace_id,
                ),
            )
        new_leg, kinds = _trade(leg, qty, fill.price, fill.fee, now)
    ids = _with_id(book.fill_ids, fill.fill_id, cfg.fill_id_capacity)
    ledger = LedgerEntry(fill, new_leg.id)
    if len(kinds) == 1 and not notes:  # the common case, without generic tuple building
        effects: tuple[Effect, ...] = (
            ledger,
            Publish(kinds[0], fill.mode, SRC_ORDER, fill.trace_id),
        )
    else:
        publishes = tuple(Publish(k, fill.mode, SRC_ORDER, fill.trace_id) for k in kinds)
        effects = (ledger, *notes, *publishes)
    return changed(book, new_leg, effects, ids)


def _hedge_clamp(leg: Position, qty: Decimal) -> Decimal:
    """Cap a reduce on a hedge leg at the leg's size (a hedge leg never flips)."""
    if leg.mode == "hedge-long" and qty < 0 and -qty > leg.size:
        return -leg.size if leg.size > 0 else ZERO
    if leg.mode == "hedge-short" and qty > 0 and qty > -leg.size:
        return -leg.size if leg.size < 0 else ZERO
    return qty


def _trade(
    leg: Position, q: Decimal, price: Decimal, fee: Decimal, now: datetime
) -> tuple[Position, tuple[str, ...]]:
    """SPEC §4.1 for a trade of signed quantity `q` (may be 0 after a hedge clamp)."""
    s, a = leg.size, leg.average_entry_price
    realized = leg.realized_pnl
    opened_at, closed_at = leg.opened_at, leg.closed_at
    new_size: Decimal
    if q == 0:  # over-close of an empty hedge leg: only the fee is real
        realized -= fee
        new_size, new_avg = s, a
        kinds: tuple[str, ...] = (UPDATED,)
    elif s == 0:  # open: the fee is paid now
        realized -= fee
        new_size, new_avg = q, price
        opened_at, closed_at = now, None
        kinds = (UPDATED,)
    elif (s > 0) == (q > 0):  # increase
        realized -= fee
        abs_s, abs_q = abs(s), abs(q)
        new_size = s + q
        new_avg = (abs_s * a + abs_q * price) / (abs_s + abs_q)
        kinds = (UPDATED,)
    elif abs(q) <= abs(s):  # reduce or close exactly
        realized += (price - a) * abs(q) * sign(s) - fee
        new_size, new_avg = s + q, a
        if new_size == 0:
            closed_at = now
            kinds = (CLOSED,)
        else:
            kinds = (UPDATED,)
    else:  # flip: close |s|, open the rest at `price`; the whole fee is paid now
        realized += (price - a) * abs(s) * sign(s) - fee
        new_size, new_avg = s + q, price
        opened_at, closed_at = now, None
        kinds = (CLOSED, UPDATED)
    new_leg = evolve(
        leg,
        size=new_size,
        average_entry_price=new_avg,
        realized_pnl=realized,
        total_fees=leg.total_fees + fee,
        unrealized_pnl=unrealized_of(new_size, new_avg, leg.current_price, leg.unrealized_pnl),
        opened_at=opened_at,
        closed_at=closed_at,
        version=leg.version + 1,
        last_updated=now,
    )
    return new_leg, kinds
