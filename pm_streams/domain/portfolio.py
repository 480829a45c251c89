"""The live portfolio of SPEC §5, pure part (no Faust, no I/O).

`contribution(book)` is what one asset adds to the portfolio; `Totals.apply(old, new)`
replaces an asset's old contribution by its new one, exactly (Decimal, 50 digits);
`portfolio_view` renders the §5 answer; `decide` says which events a change causes.
The agent that keeps them live is `pm_streams.portfolio`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal, localcontext
from typing import Any

import orjson

from pm_streams.domain.legs import AGGREGATE_CONTEXT
from pm_streams.domain.model import Book
from pm_streams.domain.output import decimal_text, iso
from pm_streams.domain.schema import Codec

ZERO = Decimal(0)
SCALE = Decimal("1e-20")
"""Contributions are quantized to 20 places: a sum of fixed-scale numbers is exact in
`AGGREGATE_CONTEXT` for every accepted magnitude, so adding and removing contributions
incrementally gives exactly the from-scratch sum (average entry prices are
non-terminating, so unquantized products would differ in the last digit)."""


def _s(d: Decimal) -> str:
    """Stored form (records): exact, all 20 places kept."""
    if d == 0:
        d = d.copy_abs()
    return format(d, "f")


_out = decimal_text
"""Output form (API, events): SPEC §4 rev 2."""


def time_of(raw: str | None) -> datetime | None:
    """A stored ISO-8601 time (`Z` suffix) as a datetime."""
    return None if raw is None else datetime.fromisoformat(raw.replace("Z", "+00:00"))


# --------------------------------------------------------------------------- contributions


@dataclass(frozen=True, slots=True)
class Contribution:
    """What one asset (all its legs) adds to the portfolio."""

    asset: str
    version: int
    exposure: Decimal
    net: Decimal
    unrealized: Decimal
    realized: Decimal
    size: Decimal
    open_count: int
    long_count: int
    short_count: int
    price_fallback: bool
    trace_id: str
    at: datetime

    def to_bytes(self) -> bytes:
        return orjson.dumps(CONTRIBUTION.encode(self))

    @classmethod
    def from_bytes(cls, raw: bytes) -> Contribution:
        return CONTRIBUTION.decode(orjson.loads(raw))

    def by_asset(self) -> dict[str, Any]:
        return {
            "exposure_usdt": _out(self.exposure),
            "unrealized_pnl_usdt": _out(self.unrealized),
            "realized_pnl_usdt": _out(self.realized),
            "size": _out(self.size),
            "price_fallback": self.price_fallback,
        }


COUNTS = {"open_count": "open", "long_count": "long", "short_count": "short"}
"""The stored names of the counters (records written so far use them)."""

CONTRIBUTION = Codec(
    Contribution, rename={**COUNTS, "price_fallback": "fallback"}, decimal=_s, time=iso
)


def exposure_from_bytes(raw: bytes) -> tuple[str, Decimal]:
    """(asset, exposure) of a stored contribution (`Contribution.to_bytes`), without
    decoding the rest: the outputs' exposure follower reads every contribution record
    and needs only these two. Raises `UNDECODABLE` errors as `from_bytes` does."""
    o = orjson.loads(raw)
    asset, exposure = o["asset"], o["exposure"]
    if not isinstance(asset, str) or not isinstance(exposure, str):
        raise ValueError("not a contribution record")
    return asset, Decimal(exposure)


def contributions_to_bytes(contributions: Iterable[Contribution]) -> bytes:
    """One portfolio-topic record carrying the contributions of one positions batch."""
    return orjson.dumps([CONTRIBUTION.encode(c) for c in contributions])


def contributions_from_bytes(raw: bytes) -> list[Contribution]:
    """The contributions of a portfolio-topic record: a list, or one object (records
    written before contributions were batched)."""
    o = orjson.loads(raw)
    if isinstance(o, list):
        return [CONTRIBUTION.decode(x) for x in o]
    return [CONTRIBUTION.decode(o)]


_add, _sub, _mul = AGGREGATE_CONTEXT.add, AGGREGATE_CONTEXT.subtract, AGGREGATE_CONTEXT.multiply
"""The aggregate context's operations, called directly: exact as under `localcontext`,
without entering and leaving a context per call (a contribution is computed per changed
asset per batch, and taken once per change by the portfolio agent)."""


def _fixed(x: Decimal) -> Decimal:
    """`x` at `SCALE` (20 places), shortest form; zero as `ZERO`."""
    return x.quantize(SCALE, context=AGGREGATE_CONTEXT).normalize(AGGREGATE_CONTEXT) if x else ZERO


def exposure_of(book: Book) -> Decimal:
    """The asset's exposure (open legs, |size| times the leg's price): its contribution's,
    and what the outputs value every change with against the portfolio's total."""
    exposure = ZERO
    for leg in book.legs:
        if leg.size:
            price = leg.current_price
            price = price if price is not None else leg.average_entry_price
            exposure = _add(exposure, _mul(leg.size.copy_abs(), price))
    return _fixed(exposure)


def contribution(book: Book) -> Contribution:
    """The asset's contribution: open legs for exposure/unrealized, all legs for realized.

    The price of a leg is its `current_price`, else its average entry price (flagged).
    """
    trace = "-"
    for effect in book.effects:
        t = getattr(effect, "trace_id", None)
        if t:
            trace = str(t)
            break
    net = unrealized = realized = size = exposure = ZERO
    open_count = long_count = short_count = version = 0
    fallback = False
    at: datetime | None = None
    for leg in book.legs:
        version += leg.version
        if at is None or leg.last_updated > at:
            at = leg.last_updated
        realized = _add(realized, leg.realized_pnl)
        leg_size = leg.size
        if leg_size == 0:
            continue
        price = leg.current_price
        if price is None:
            price = leg.average_entry_price
            fallback = True
        net = _add(net, _mul(leg_size, price))
        exposure = _add(exposure, _mul(leg_size.copy_abs(), price))
        unrealized = _add(unrealized, leg.unrealized_pnl)
        size = _add(size, leg_size)
        open_count += 1
        if leg_size > 0:
            long_count += 1
        else:
            short_count += 1
    return Contribution(
        asset=book.asset,
        version=version,
        exposure=_fixed(exposure),  # as `exposure_of`, the outputs' definition
        net=_fixed(net),
        unrealized=_fixed(unrealized),
        realized=_fixed(realized),
        size=size,
        open_count=open_count,
        long_count=long_count,
        short_count=short_count,
        price_fallback=fallback,
        trace_id=trace,
        at=at if at is not None else datetime.now(UTC),
    )


# --------------------------------------------------------------------------- totals


@dataclass(frozen=True, slots=True)
class Totals:
    """The §5 totals over every contribution taken so far.

    `version` counts applied contributions (the `portfolio_updated` event id);
    `(last_offset, last_index)` is the portfolio-topic offset of the last one and its
    place in that record (replay guard).
    """

    exposure: Decimal = ZERO
    net: Decimal = ZERO
    unrealized: Decimal = ZERO
    realized: Decimal = ZERO
    open_count: int = 0
    long_count: int = 0
    short_count: int = 0
    version: int = 0
    last_offset: int = -1
    last_index: int = 0
    calculated_at: datetime | None = None
    limit_exceeded: bool = False
    trace_id: str = "-"

    def apply(
        self,
        old: Contribution | None,
        new: Contribution,
        *,
        offset: int,
        now: datetime,
        max_exposure: Decimal | None = None,
        index: int = 0,
    ) -> Totals:
        """Totals with `old` (the asset's previous contribution) replaced by `new`.
        Built in one constructor call: `dataclasses.replace` looks the fields up on
        every call, and this runs once per contribution."""
        exposure = _add(self.exposure, new.exposure)
        net = _add(self.net, new.net)
        unrealized = _add(self.unrealized, new.unrealized)
        realized = _add(self.realized, new.realized)
        counts = (new.open_count, new.long_count, new.short_count)
        if old is not None:
            exposure = _sub(exposure, old.exposure)
            net = _sub(net, old.net)
            unrealized = _sub(unrealized, old.unrealized)
            realized = _sub(realized, old.realized)
            counts = (
                counts[0] - old.open_count,
                counts[1] - old.long_count,
                counts[2] - old.short_count,
            )
        return Totals(
            exposure=exposure,
            net=net,
            unrealized=unrealized,
            realized=realized,
            open_count=self.open_count + counts[0],
            long_count=self.long_count + counts[1],
            short_count=self.short_count + counts[2],
            version=self.version + 1,
            last_offset=offset,
            last_index=index,
            calculated_at=now,
            limit_exceeded=exceeds(exposure, max_exposure),
            trace_id=new.trace_id,
        )

    @property
    def total_pnl(self) -> Decimal:
        with localcontext(AGGREGATE_CONTEXT):
            return self.unrealized + self.realized

    def to_bytes(self) -> bytes:
        return orjson.dumps(TOTALS.encode(self))

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> Totals:
        return cls() if raw is None else TOTALS.decode(orjson.loads(raw))


TOTALS = Codec(Totals, rename=COUNTS, decimal=_s, time=iso)


def exceeds(exposure: Decimal, limit: Decimal | None) -> bool:
    return limit is not None and exposure > limit


def totals_of(contributions: Iterable[Contribution]) -> Totals:
    """Totals recomputed from scratch (tests, and the `asset` filter)."""
    t = Totals()
    latest: datetime | None = None
    for c in contributions:
        t = t.apply(None, c, offset=-1, now=c.at)
        latest = c.at if latest is None else max(latest, c.at)
    return replace(t, calculated_at=latest, version=0)


@dataclass(frozen=True, slots=True)
class Decision:
    """What the portfolio agent does with one contribution message."""

    totals: Totals | None
    """New totals to write, or None when they already include this message."""
    write_contribution: bool
    crossed_limit: bool = False
    kind: str = "applied"
    """`applied`, `repaired` (replay after a partial write), `duplicate` or `stale`."""


def decide(
    totals: Totals,
    old: Contribution | None,
    new: Contribution,
    *,
    offset: int,
    now: datetime,
    max_exposure: Decimal | None,
    index: int = 0,
) -> Decision:
    """What to do with contribution `new`, the `index`-th of the record at `offset`."""
    if (offset, index) <= (totals.last_offset, totals.last_index):
        # Already counted in the totals; the contribution write may have been lost.
        behind = old is None or old.version < new.version
        return Decision(None, behind, kind="repaired" if behind else "duplicate")
    if old is not None and old.version >= new.version:
        return Decision(None, False, kind="stale")
    t = totals.apply(old, new, offset=offset, now=now, max_exposure=max_exposure, index=index)
    crossed = t.limit_exceeded and not totals.limit_exceeded
    return Decision(t, True, crossed_limit=crossed)


# --------------------------------------------------------------------------- views


def window_start(ts: float, size: float) -> float:
    """Start of the tumbling window holding `ts` (faust's own arithmetic)."""
    return ts - ts % size
