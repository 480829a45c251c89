"""The portfolio as answered and published (SPEC §5): the REST views, the history
window row and the `portfolio_updated` / `portfolio_limit_exceeded` events."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pm_streams.domain.output import decimal_text, iso
from pm_streams.domain.portfolio import Contribution, Totals, exceeds

_out = decimal_text
"""Output form (API, events): SPEC §4 rev 2."""


def portfolio_view(
    totals: Totals,
    by_asset: Mapping[str, Contribution],
    *,
    max_exposure: Decimal | None,
    open_only: bool = False,
) -> dict[str, Any]:
    """The §5 answer (`GET /api/v1/portfolio`)."""
    body: dict[str, Any] = {
        "total_exposure_usdt": _out(totals.exposure),
        "net_exposure_usdt": _out(totals.net),
        "portfolio_value_usdt": _out(totals.net),
        "total_unrealized_pnl_usdt": _out(totals.unrealized),
        "total_realized_pnl_usdt": _out(totals.realized),
        "total_pnl_usdt": _out(totals.total_pnl),
        "open_positions_count": totals.open_count,
        "long_positions_count": totals.long_count,
        "short_positions_count": totals.short_count,
        "by_asset": {
            a: c.by_asset() for a, c in sorted(by_asset.items()) if not open_only or c.open_count
        },
        "calculated_at": iso(totals.calculated_at),
        "limit_exceeded": exceeds(totals.exposure, max_exposure),
        "max_exposure_usdt": None if max_exposure is None else _out(max_exposure),
    }
    return body


def exposure_view(body: Mapping[str, Any], by_open: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "total_exposure_usdt": body["total_exposure_usdt"],
        "net_exposure_usdt": body["net_exposure_usdt"],
        "by_asset": {
            a: {"exposure_usdt": v["exposure_usdt"], "size": v["size"]} for a, v in by_open.items()
        },
        "calculated_at": body["calculated_at"],
        "limit_exceeded": body["limit_exceeded"],
    }


def pnl_view(body: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "total_unrealized_pnl_usdt": body["total_unrealized_pnl_usdt"],
        "total_realized_pnl_usdt": body["total_realized_pnl_usdt"],
        "total_pnl_usdt": body["total_pnl_usdt"],
        "by_asset": {
            a: {
                "unrealized_pnl_usdt": v["unrealized_pnl_usdt"],
                "realized_pnl_usdt": v["realized_pnl_usdt"],
            }
            for a, v in body["by_asset"].items()
        },
        "calculated_at": body["calculated_at"],
    }


def window_row(start: float, end: float, totals: Totals) -> dict[str, Any]:
    """One history entry (also the `portfolio_metrics` row)."""
    return {
        "window_start": iso(datetime.fromtimestamp(start, UTC)),
        "window_end": iso(datetime.fromtimestamp(end, UTC)),
        "total_exposure_usdt": _out(totals.exposure),
        "net_exposure_usdt": _out(totals.net),
        "total_unrealized_pnl_usdt": _out(totals.unrealized),
        "total_realized_pnl_usdt": _out(totals.realized),
        "total_pnl_usdt": _out(totals.total_pnl),
        "open_positions_count": totals.open_count,
        "long_positions_count": totals.long_count,
        "short_positions_count": totals.short_count,
        "calculated_at": iso(totals.calculated_at),
    }


def portfolio_event(
    event_type: str, totals: Totals, now: datetime, max_exposure: Decimal | None
) -> dict[str, Any]:
    """`portfolio_updated` / `portfolio_limit_exceeded` (SPEC §8), deterministic id."""
    body = portfolio_view(totals, {}, max_exposure=max_exposure)
    body.pop("by_asset")
    body.update(
        event_id=f"portfolio:{totals.version}:{event_type}",
        event_type=event_type,
        trace_id=totals.trace_id,
        timestamp=iso(totals.calculated_at or now),
    )
    return body
