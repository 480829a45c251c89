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
  dropped first. Replays of whole input events are caught by `Book.last_offset`
  (kept by the caller); the ids catch the same fill arriving twice upstream.
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
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
    localcontext,
)
from operator import attrgetter

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
    Note,
    Position,
    PriceUpdate,
    Publish,
    ScheduleValidation,
    SnapshotTaken,
)

#: Arithmetic context for all position math: 50 significant digits, so that sums and
#: products of exchange numbers are exact and averages are exact far below a satoshi.
DECIMAL_CONTEXT = Context(
    prec=50,
    rounding=ROUND_HALF_EVEN,
    traps=[InvalidOperation, DivisionByZero, Overflow],
)
#: For sums over positions quantized to a fixed scale (portfolio contributions and
#: totals): an exposure of accepted values (`|size|, price < 10^18`, 18 places each)
#: is below 10^36 and has 72 digits exact; at 20 places a sum of a million of them
#: needs 62 digits, so 80 leave room and a quantize can never be refused.
AGGREGATE_CONTEXT = Context(
    prec=80,
    rounding=ROUND_HALF_EVEN,
    traps=[InvalidOperation, DivisionByZero, Overflow],
)

UPDATED = "position_updated"
CLOSED = "position_closed"
SRC_ORDER = "order_execution"
SRC_WS = "websocket"
SRC_VALIDATION = "validation"

Result = tuple[Book, tuple[Effect, ...]]

_POSITION_FIELDS = Position.__dataclass_fields__
_FIELD_NAMES = tuple(_POSITION_FIELDS)
_FIELD_INDEX = {name: i for i, name in enumerate(_FIELD_NAMES)}
_all_fields = attrgetter(*_FIELD_NAMES)


def _evolve(p: Position, **changes: object) -> Position:
    """`dataclasses.replace`, several times faster (this is the hot path)."""
    values = list(_all_fields(p))
    for name, value in changes.items():
        values[_FIELD_INDEX[name]] = value
    return Position(*values)


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
            return _apply_exchange(book, event, now, cfg, new_id)
        if isinstance(event, PriceUpdate):
            return _apply_price(book, event, now)
        if isinstance(event, Correction):
            return _apply_correction(book, event, now, new_id)
        return _apply_snapshot(book, event)


def needs_write(old: Book | None, new: Book) -> bool:
    """Whether `new` (from `apply(old, …)`) must be stored."""
    if new is old:
        return False
    return not (old is None and not new.legs and not new.fill_ids)


# --------------------------------------------------------------------------- helpers


def _sign(x: Decimal) -> int:
    return 1 if x > 0 else -1 if x < 0 else 0


def _put_leg(legs: tuple[Position, ...], leg: Position) -> tuple[Position, ...]:
    """`legs` with `leg` replacing the one of its mode, kept sorted by mode."""
    mode = leg.mode
    for i, p in enumerate(legs):
        if p.mode == mode:
            return (*legs[:i], leg, *legs[i + 1 :])
    return tuple(sorted((*legs, leg), key=_by_mode))


def _by_mode(p: Position) -> str:
    return p.mode


def _freshest_price(book: Book) -> tuple[Decimal | None, datetime | None]:
    """The most recent mark price known for the asset, from any leg."""
    best: Position | None = None
    for p in book.legs:
        if p.current_price is None:
            continue
        if best is None or (
            p.last_price_at is not None
            and (best.last_price_at is None or p.last_price_at > best.last_price_at)
        ):
            best = p
    if best is None:
        return None, None
    return best.current_price, best.last_price_at


def _new_leg(book: Book, mode: str, now: datetime, new_id: Callable[[], str]) -> Position:
    price, price_at = _freshest_price(book)
    return Position(
        id=new_id(),
        asset=book.asset,
        mode=mode,
        size=ZERO,
        average_entry_price=ZERO,
        current_price=price,
        unrealized_pnl=ZERO,
        realized_pnl=ZERO,
        total_fees=ZERO,
        version=0,
        created_at=now,
        opened_at=None,
        last_updated=now,
        last_price_at=price_at,
    )


def _unrealized(size: Decimal, avg: Decimal, price: Decimal | None, old: Decimal) -> Decimal:
    """`(price - avg)·size`; 0 when flat; `old` when no price is known."""
    if size == 0:
        return ZERO
    if price is None:
        return old
    return (price - avg) * size


def _note(kind: str, **fields: object) -> Note:
    return Note(kind, tuple((k, str(v)) for k, v in fields.items() if v is not None))


def _changed(
    book: Book,
    leg: Position,
    effects: tuple[Effect, ...],
    fill_ids: tuple[str, ...] | None = None,
) -> Result:
    new = Book(
        asset=book.asset,
        legs=_put_leg(book.legs, leg),
        fill_ids=book.fill_ids if fill_ids is None else fill_ids,
        last_offset=book.last_offset,
        effects=effects,
    )
    return new, effects


# --------------------------------------------------------------------------- fills


class _FillIdIndex:
    """Memo of the fill-id tuples' contents as hash maps, keyed by tuple identity.

    `x in tuple_of_256_ids` costs several microseconds per fill; this keeps the
    membership test O(1). It is a pure cache: an entry is only used for the very tuple
    object it was built from (a strong reference is kept, so ids cannot be reused), and
    when a tuple is extended the map moves to the new tuple. A miss rebuilds the map.
    """

    def __init__(self, capacity: int = 1024) -> None:
        self._capacity = capacity
        self._maps: dict[int, tuple[tuple[str, ...], dict[str, int]]] = {}

    def _map(self, ids: tuple[str, ...]) -> dict[str, int]:
        hit = self._maps.get(id(ids))
        if hit is not None and hit[0] is ids:
            return hit[1]
        counts: dict[str, int] = {}
        for x in ids:
            counts[x] = counts.get(x, 0) + 1
        self._remember(ids, counts)
        return counts

    def _remember(self, ids: tuple[str, ...], counts: dict[str, int]) -> None:
        if len(self._maps) >= self._capacity:
            self._maps.pop(next(iter(self._maps)))
        self._maps[id(ids)] = (ids, counts)

    def contains(self, ids: tuple[str, ...], fill_id: str) -> bool:
        if len(ids) < 16:
            return fill_id in ids
        return fill_id in self._map(ids)

    def append(self, ids: tuple[str, ...], fill_id: str, capacity: int) -> tuple[str, ...]:
        """`ids + (fill_id,)` keeping the newest `capacity`; moves the memo along."""
        drop = max(0, len(ids) + 1 - capacity)
        new = (ids[drop:] if drop else ids) + (fill_id,)
        hit = self._maps.pop(id(ids), None)
        if hit is None or hit[0] is not ids:
            return new
        counts = hit[1]
        for x in ids[:drop]:
            n = counts[x] - 1
            if n:
                counts[x] = n
            else:
                del counts[x]
        counts[fill_id] = counts.get(fill_id, 0) + 1
        self._remember(new, counts)
        return new


_seen_ids = _FillIdIndex()


def _apply_fill(
    book: Book,
    fill: Fill,
    now: datetime,
    cfg: EngineConfig,
    new_id: Callable[[], str],
) -> Result:
    if _seen_ids.contains(book.fill_ids, fill.fill_id):
        return book, (
            _note("duplicate_fill", fill_id=fill.fill_id, mode=fill.mode, trace_id=fill.trace_id),
        )
    leg = book.leg(fill.mode)
    if leg is None:
        leg = _new_leg(book, fill.mode, now, new_id)
    notes: tuple[Effect, ...] = ()
    if fill.is_funding:
        new_leg = _evolve(
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
                _note(
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
    ids = _seen_ids.append(book.fill_ids, fill.fill_id, cfg.fill_id_capacity)
    ledger = LedgerEntry(fill, new_leg.id)
    if len(kinds) == 1 and not notes:  # the common case, without generic tuple building
        effects: tuple[Effect, ...] = (
            ledger,
            Publish(kinds[0], fill.mode, SRC_ORDER, fill.trace_id),
        )
    else:
        publishes = tuple(Publish(k, fill.mode, SRC_ORDER, fill.trace_id) for k in kinds)
        effects = (ledger, *notes, *publishes)
    return _changed(book, new_leg, effects, ids)


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
        realized += (price - a) * abs(q) * _sign(s) - fee
        new_size, new_avg = s + q, a
        if new_size == 0:
            closed_at = now
            kinds = (CLOSED,)
        else:
            kinds = (UPDATED,)
    else:  # flip: close |s|, open the rest at `price`; the whole fee is paid now
        realized += (price - a) * abs(s) * _sign(s) - fee
        new_size, new_avg = s + q, price
        opened_at, closed_at = now, None
        kinds = (CLOSED, UPDATED)
    new_leg = _evolve(
        leg,
        size=new_size,
        average_entry_price=new_avg,
        realized_pnl=realized,
        total_fees=leg.total_fees + fee,
        unrealized_pnl=_unrealized(new_size, new_avg, leg.current_price, leg.unrealized_pnl),
        opened_at=opened_at,
        closed_at=closed_at,
        version=leg.version + 1,
        last_updated=now,
    )
    return new_leg, kinds


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


def _apply_exchange(
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
        return book, (
            _note(
                "stale_event",
                mode=ev.mode,
                seq=ev.seq,
                stored_seq=leg.exchange_seq,
                updated_ms=ev.updated_ms,
                stored_updated_ms=leg.exchange_updated_ms,
                trace_id=ev.trace_id,
            ),
        )

    notes: list[Effect] = []
    avg = leg.average_entry_price
    adopted = _adopted_avg(leg, ev, cfg)
    if adopted is not None:
        notes.append(
            _note("avg_price_replaced", mode=ev.mode, old=avg, new=adopted, trace_id=ev.trace_id)
        )
        avg = adopted

    price = leg.current_price if ev.mark_price is None else ev.mark_price
    if ev.unrealized_pnl is not None:
        unrealized = ev.unrealized_pnl
    elif ev.mark_price is not None or avg != leg.average_entry_price:
        unrealized = _unrealized(leg.size, avg, price, leg.unrealized_pnl)
    else:
        unrealized = leg.unrealized_pnl
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
        return book, (_note("noop", mode=ev.mode, seq=ev.seq, trace_id=ev.trace_id),)

    new_leg = _evolve(
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
    if ev.size is not None and abs(ev.size - leg.size) > cfg.size_validation_threshold:
        notes.append(
            _note(
                "size_discrepancy",
                mode=ev.mode,
                size=leg.size,
                exchange_size=ev.size,
                trace_id=ev.trace_id,
            )
        )
        notes.append(
            ScheduleValidation(book.asset, ev.mode, cfg.size_reconcile_grace, "size_discrepancy")
        )
    effects = (*notes, Publish(UPDATED, ev.mode, SRC_WS, ev.trace_id))
    return _changed(book, new_leg, effects)


def _create_from_exchange(
    book: Book, ev: ExchangeUpdate, now: datetime, new_id: Callable[[], str]
) -> Result:
    """A push for a leg we do not have: create it (unless it reports a flat position)."""
    if ev.size is None or ev.size == 0:
        return book, (_note("noop", mode=ev.mode, reason="flat_unknown", trace_id=ev.trace_id),)
    base = _new_leg(book, ev.mode, now, new_id)
    avg = ev.avg_price if ev.avg_price is not None else ZERO
    price = ev.mark_price if ev.mark_price is not None else base.current_price
    if ev.unrealized_pnl is not None:
        unrealized = ev.unrealized_pnl
    elif avg > 0:
        unrealized = _unrealized(ev.size, avg, price, ZERO)
    else:
        unrealized = ZERO
    leg = _evolve(
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
    return _changed(book, leg, (Publish(UPDATED, ev.mode, SRC_WS, ev.trace_id),))


# --------------------------------------------------------------------------- prices


def _apply_price(book: Book, ev: PriceUpdate, now: datetime) -> Result:
    legs = list(book.legs)
    effects: list[Effect] = []
    for i, leg in enumerate(legs):
        if not leg.is_open or leg.current_price == ev.mark_price:
            continue
        legs[i] = _evolve(
            leg,
            current_price=ev.mark_price,
            last_price_at=now,
            unrealized_pnl=(ev.mark_price - leg.average_entry_price) * leg.size,
            version=leg.version + 1,
            last_updated=now,
        )
        effects.append(Publish(UPDATED, leg.mode, SRC_WS, ev.trace_id))
    if not effects:
        return book, (_note("noop", price=ev.mark_price, trace_id=ev.trace_id),)
    out = tuple(effects)
    return Book(book.asset, tuple(legs), book.fill_ids, book.last_offset, out), out


# --------------------------------------------------------------------------- validation


def _apply_correction(
    book: Book, ev: Correction, now: datetime, new_id: Callable[[], str]
) -> Result:
    leg = book.leg(ev.mode)
    if leg is None:
        if ev.size is None or ev.size == 0:
            return book, (_note("noop", mode=ev.mode, reason=ev.reason, trace_id=ev.trace_id),)
        leg = _new_leg(book, ev.mode, now, new_id)
    size = leg.size if ev.size is None else ev.size
    avg = leg.average_entry_price if ev.avg_price is None else ev.avg_price
    if size == leg.size and avg == leg.average_entry_price:
        return book, (_note("noop", mode=ev.mode, reason=ev.reason, trace_id=ev.trace_id),)

    opened_at, closed_at = leg.opened_at, leg.closed_at
    if size == 0 and leg.size != 0:
        closed_at = now
        kind = CLOSED
    else:
        kind = UPDATED
        if size != 0 and leg.size == 0:
            opened_at, closed_at = now, None
    new_leg = _evolve(
        leg,
        size=size,
        average_entry_price=avg,
        unrealized_pnl=_unrealized(size, avg, leg.current_price, leg.unrealized_pnl),
        opened_at=opened_at,
        closed_at=closed_at,
        version=leg.version + 1,
        last_updated=now,
    )
    note = _note(
        "position_corrected",
        mode=ev.mode,
        old_size=leg.size,
        size=size,
        old_avg_price=leg.average_entry_price,
        avg_price=avg,
        reason=ev.reason,
        trace_id=ev.trace_id,
    )
    return _changed(book, new_leg, (note, Publish(kind, ev.mode, SRC_VALIDATION, ev.trace_id)))


def _apply_snapshot(book: Book, ev: SnapshotTaken) -> Result:
    leg = book.leg(ev.mode)
    if leg is None:
        note = _note("noop", mode=ev.mode, reason="snapshot_no_position", trace_id=ev.trace_id)
        return book, (note,)
    return _changed(book, _evolve(leg, last_snapshot_at=ev.at), ())
