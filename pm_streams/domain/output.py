"""The output form of numbers, times and positions (API, events, Postgres): SPEC §4 rev 2
(plain decimals rounded half-even to 18 places, ISO-8601 UTC with `Z`)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Any

from pm_streams.domain.model import (
    Position,
)

# --------------------------------------------------------------------------- API form


_OUT = Context(prec=100, rounding=ROUND_HALF_EVEN)
_OUT_SCALE = Decimal("1e-18")


TEXT_CACHE = 8192
"""Recent values whose output text is remembered (`decimal_text`, `iso`). The outputs
spell the same sizes, fees, PnL and times for change after change of an asset, twice
(Postgres row and event), and the API again: a remembered text costs ~0.06 µs against
0.5-1 µs to spell it. Equal values always spell the same (both functions depend on the
value only, not on a Decimal's exponent or a datetime's zone), so the value is the key."""


def decimal_text(d: Decimal) -> str:
    """A Decimal as every output shows it (SPEC §4 rev 2): plain, no exponent, no `-0`,
    trailing zeros stripped, rounded half-even to at most 18 decimal places."""
    if not d:
        return "0"
    return _decimal_text(d)


@functools.lru_cache(maxsize=TEXT_CACHE)
def _decimal_text(d: Decimal) -> str:
    """Spelt first, rounded only when the text shows more than 18 places (such a value
    has more than 18 before normalizing too): `as_tuple()` on every value, to look at
    its exponent, cost as much as the spelling."""
    text = format(_OUT.normalize(d), "f")
    dot = text.find(".")
    if dot >= 0 and len(text) - dot - 1 > 18:
        d = _OUT.quantize(d, _OUT_SCALE)
        if not d:
            return "0"
        text = format(_OUT.normalize(d), "f")
    return text


def _plain(d: Decimal, places: int | None) -> str:
    if places is not None:
        d = _OUT.quantize(d, Decimal(1).scaleb(-places))
    return decimal_text(d)


def _oplain(d: Decimal | None, places: int | None) -> str | None:
    return None if d is None else _plain(d, places)


def iso(dt: datetime | None) -> str | None:
    """ISO-8601 UTC with a `Z` suffix."""
    if dt is None:
        return None
    return _iso(dt)


@functools.lru_cache(maxsize=TEXT_CACHE)
def _iso(dt: datetime) -> str:
    if dt.tzinfo is UTC:  # every stored time: spelt `...+00:00`, no conversion needed
        return dt.isoformat()[:-6] + "Z"
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def json_value(value: object, places: int | None = None) -> object:
    """A feature value in JSON-ready form (Decimal → string)."""
    if isinstance(value, Decimal):
        return _plain(value, places)
    if isinstance(value, datetime):
        return iso(value)
    return value


def position_to_dict(
    p: Position,
    *,
    features: Mapping[str, object] | None = None,
    places: int | None = None,
) -> dict[str, Any]:
    """The position as SPEC §4 publishes it: Decimals as plain strings, ISO timestamps.

    `places` rounds money and sizes for display (None = exact stored values).
    """
    out: dict[str, Any] = {
        "id": p.id,
        "asset": p.asset,
        "mode": p.mode,
        "size": _plain(p.size, places),
        "side": p.side,
        "average_entry_price": _plain(p.average_entry_price, places),
        "current_price": _oplain(p.current_price, places),
        "unrealized_pnl": _plain(p.unrealized_pnl, places),
        "realized_pnl": _plain(p.realized_pnl, places),
        "total_fees": _plain(p.total_fees, places),
        "long_size": _plain(p.long_size, places),
        "short_size": _plain(p.short_size, places),
        "version": p.version,
        "created_at": iso(p.created_at),
        "opened_at": iso(p.opened_at),
        "last_updated": iso(p.last_updated),
        "closed_at": iso(p.closed_at),
        "last_snapshot_at": iso(p.last_snapshot_at),
        "last_price_at": iso(p.last_price_at),
        "exchange_size": _oplain(p.exchange_size, places),
        "exchange_avg_price": _oplain(p.exchange_avg_price, places),
        "funding_pnl": _plain(p.funding_pnl, places),
    }
    if features:
        for key, value in features.items():
            out[key] = json_value(value, places)
    return out
