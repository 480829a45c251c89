"""ML features of a position (SPEC §4.4) and the combined hedge view (SPEC §4)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal, localcontext
from typing import Any

from pm_streams.domain.legs import DECIMAL_CONTEXT
from pm_streams.domain.model import ZERO, Position
from pm_streams.domain.output import iso, json_value, position_to_dict

HEDGE_MODES = ("hedge-long", "hedge-short")
_MINUTE = timedelta(minutes=1)


def features(
    p: Position, now: datetime, total_exposure: Decimal | int
) -> dict[str, Decimal | int | None]:
    """`unrealized_pnl_pct`, `time_held_minutes`, `position_size_norm`.

    * `unrealized_pnl_pct = unrealized / (|size|·avg) · 100`, None when size or avg is 0.
    * `time_held_minutes`: whole minutes since `opened_at`, 0 when flat.
    * `position_size_norm = |size · price| / total_exposure`, 0 when the exposure is 0;
      the price is `current_price`, falling back to the average entry price as the
      portfolio does (SPEC §5).
    """
    with localcontext(DECIMAL_CONTEXT):
        basis = abs(p.size) * p.average_entry_price
        pct = None if basis == 0 else p.unrealized_pnl / basis * 100
        held = 0
        if p.size != 0 and p.opened_at is not None:
            held = max(0, (now - p.opened_at) // _MINUTE)
        price = p.current_price if p.current_price is not None else p.average_entry_price
        norm = ZERO
        if total_exposure != 0 and p.size != 0:
            norm = abs(p.size * price) / total_exposure
        return {
            "unrealized_pnl_pct": None if pct is None else pct.normalize(),
            "time_held_minutes": held,
            "position_size_norm": norm.normalize(),
        }


def hedge_view(
    legs: Iterable[Position],
    *,
    features_by_mode: Mapping[str, Mapping[str, object]] | None = None,
    places: int | None = None,
) -> dict[str, Any]:
    """The API's `mode=hedge` object: both legs combined, plus the legs themselves.

    `size = long_size - short_size`; PnL and fees are summed over the legs; the price is
    the freshest leg's. One-way positions among `legs` are ignored.
    """
    hedge = sorted((p for p in legs if p.mode in HEDGE_MODES), key=lambda p: p.mode)
    if not hedge:
        raise ValueError("no hedge legs")
    with localcontext(DECIMAL_CONTEXT):
        long_size = sum((p.long_size for p in hedge), ZERO)
        short_size = sum((p.short_size for p in hedge), ZERO)
        size = long_size - short_size
        unrealized = sum((p.unrealized_pnl for p in hedge), ZERO)
        realized = sum((p.realized_pnl for p in hedge), ZERO)
        fees = sum((p.total_fees for p in hedge), ZERO)
        funding = sum((p.funding_pnl for p in hedge), ZERO)
    priced = [p for p in hedge if p.current_price is not None]
    freshest = max(
        priced,
        key=lambda p: (p.last_price_at is not None, p.last_price_at or p.last_updated),
        default=None,
    )
    fbm = features_by_mode or {}
    return {
        "asset": hedge[0].asset,
        "mode": "hedge",
        "size": json_value(size, places),
        "side": "long" if size > 0 else "short" if size < 0 else "flat",
        "long_size": json_value(long_size, places),
        "short_size": json_value(short_size, places),
        "current_price": None
        if freshest is None or freshest.current_price is None
        else json_value(freshest.current_price, places),
        "unrealized_pnl": json_value(unrealized, places),
        "realized_pnl": json_value(realized, places),
        "total_fees": json_value(fees, places),
        "funding_pnl": json_value(funding, places),
        "last_updated": iso(max(p.last_updated for p in hedge)),
        "legs": [position_to_dict(p, features=fbm.get(p.mode), places=places) for p in hedge],
    }
