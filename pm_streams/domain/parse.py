"""Edge validation: raw RabbitMQ messages → domain events, or `RejectedInput`.

Numbers are accepted as JSON strings or JSON numbers and parsed into `Decimal`
through their own text, never through a float. A rejection names the field so the
bridge can log it and put the reason on the dead-lettered message.

The bounds (SPEC §3.3 rev 2) are the same for every stage after this one: quantities,
prices, fees and PnL with `|value| < 10^18` and at most 18 decimal places; `seq` and
`updatedTime` non-negative and below 2^63. Whatever is accepted here, the engine,
the tables, the API and Postgres hold exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from pm_streams.domain.fields import (
    ORDER_EVENT_TYPES,
    UNIDENTIFIABLE_FILL,
    RejectedInput,
    is_present,
    plain_text,
    read_asset,
    read_datetime,
    read_int,
    read_opt_decimal,
    read_opt_non_negative,
    read_opt_text,
    read_positive,
    read_sequence,
    read_trace_id,
)
from pm_streams.domain.model import ZERO, ExchangeUpdate, Fill
from pm_streams.domain.output import iso

_IDX_LEGS = {0: None, 1: "hedge-long", 2: "hedge-short"}
_SIDE_LEGS = {"long": "hedge-long", "short": "hedge-short"}


def _position_idx(raw: Mapping[str, Any], *keys: str) -> tuple[int | None, str]:
    for key in keys:
        if is_present(raw, key):
            idx = read_int(raw[key], key)
            if idx not in _IDX_LEGS:
                raise RejectedInput(key, "must be 0, 1 or 2")
            return idx, key
    return None, keys[0]


def _resolve_mode(
    mode: object, idx: int | None, idx_field: str, side_leg: str | None, what: str
) -> str:
    """Mode from an explicit `mode` plus leg hints (position idx, position side).

    Without `mode`, only a position idx of 1/2 means hedge: a bare position side may be
    a one-way system's direction. With `mode: hedge` either hint names the leg.
    """
    idx_leg = _IDX_LEGS.get(idx) if idx is not None else None
    if mode is None or mode == "":
        return idx_leg or "one-way"
    if not isinstance(mode, str):
        raise RejectedInput("mode", "not a string")
    m = mode.strip().lower()
    if m == "one-way":
        if idx_leg is not None:
            raise RejectedInput(idx_field, "conflicts with mode one-way")
        return "one-way"
    if m not in ("hedge", "hedge-long", "hedge-short"):
        raise RejectedInput("mode", "unknown mode")
    if idx_leg is not None and side_leg is not None and idx_leg != side_leg:
        raise RejectedInput(idx_field, "conflicts with the position side")
    leg = idx_leg or side_leg
    if m == "hedge":
        if leg is None:
            raise RejectedInput(idx_field, f"ambiguous hedge {what}")
        return leg
    if leg is not None and leg != m:
        raise RejectedInput(idx_field, f"conflicts with mode {m}")
    return m


# --------------------------------------------------------------------------- fills


def parse_order_executed(raw: Mapping[str, Any], *, new_trace_id: Callable[[], str]) -> Fill:
    """An `order-manager.order_executed` message (SPEC §3.2) as a `Fill`."""
    if not isinstance(raw, Mapping):
        raise RejectedInput("body", "not a JSON object")
    event_type = raw.get("event_type")
    if event_type is not None and event_type not in ORDER_EVENT_TYPES:
        raise RejectedInput("event_type", "not order_executed or position_updated_from_order")
    asset = read_asset(raw.get("asset"), "asset")
    trace_id, _ = read_trace_id(raw, new_trace_id)

    side_leg: str | None = None
    for key in ("position_side", "positionSide"):
        if is_present(raw, key):
            value = raw[key]
            if not isinstance(value, str) or value.strip().lower() not in _SIDE_LEGS:
                raise RejectedInput(key, "not long or short")
            side_leg = _SIDE_LEGS[value.strip().lower()]
            break
    idx, idx_field = _position_idx(raw, "position_idx", "positionIdx")
    mode = _resolve_mode(raw.get("mode"), idx, idx_field, side_leg, "fill")

    exec_type = raw.get("exec_type", raw.get("execType"))
    funding = isinstance(exec_type, str) and exec_type.strip().lower() == "funding"
    fee = read_opt_decimal(raw, "execution_fees") or ZERO
    executed_at = (
        read_datetime(raw["executed_at"], "executed_at") if is_present(raw, "executed_at") else None
    )
    order_id = read_opt_text(raw, "order_id")

    if funding:
        quantity = ZERO
        price = read_opt_non_negative(raw, "execution_price") or ZERO
    else:
        qty_key = "filled_quantity"
        if is_present(raw, "execution_quantity") or not is_present(raw, "filled_quantity"):
            qty_key = "execution_quantity"
        size = read_positive(raw, qty_key)
        price = read_positive(raw, "execution_price")
        quantity = size * _side_sign(raw.get("side"))

    # Never the trace id: one trace spans many fills (SPEC §3.2 rev 2).
    fill_id = read_opt_text(raw, "execution_id")
    if fill_id is None and order_id is not None and executed_at is not None:
        fill_id = f"{order_id}|{iso(executed_at)}|{plain_text(abs(quantity))}|{plain_text(price)}"
    if fill_id is None:
        raise RejectedInput("execution_id", UNIDENTIFIABLE_FILL)

    return Fill(
        asset=asset,
        mode=mode,
        quantity=quantity,
        price=price,
        fee=fee,
        fill_id=fill_id,
        order_id=order_id,
        executed_at=executed_at,
        trace_id=trace_id,
        is_funding=funding,
    )


def _side_sign(value: object) -> int:
    if isinstance(value, str):
        side = value.strip().lower()
        if side == "buy":
            return 1
        if side == "sell":
            return -1
    if value is None or value == "":
        raise RejectedInput("side", "missing")
    raise RejectedInput("side", "not BUY or SELL")


# --------------------------------------------------------------------------- positions


def parse_position_update(
    raw: Mapping[str, Any], *, new_trace_id: Callable[[], str]
) -> ExchangeUpdate:
    """A `ws-gateway.position` message (SPEC §3.1) as an `ExchangeUpdate`."""
    if not isinstance(raw, Mapping):
        raise RejectedInput("body", "not a JSON object")
    data = raw.get("data")
    if data is None:
        raise RejectedInput("data", "missing")
    if not isinstance(data, Mapping):
        raise RejectedInput("data", "not an object")
    asset = read_asset(data.get("symbol"), "symbol")
    trace_id, has_trace = read_trace_id(raw, new_trace_id)
    if not has_trace:
        inner = read_opt_text(data, "trace_id")
        if inner is not None:
            trace_id = inner

    idx, idx_field = _position_idx(data, "positionIdx")
    mode = _resolve_mode(data.get("mode"), idx, idx_field, None, "position")

    sign = _position_side(data.get("side"))
    size = read_opt_non_negative(data, "size")
    signed: Decimal | None = None
    if size is not None:
        if size == 0:
            signed = ZERO
        elif sign == 0:
            raise RejectedInput("side", "missing for a non-zero size")
        else:
            signed = size if sign > 0 else -size
            if (mode == "hedge-long" and sign < 0) or (mode == "hedge-short" and sign > 0):
                raise RejectedInput("side", f"conflicts with {mode}")

    avg_key = "avgPrice" if is_present(data, "avgPrice") else "entryPrice"
    realized_key = "realisedPnl" if is_present(data, "realisedPnl") else "cumRealisedPnl"
    mark = read_opt_non_negative(data, "markPrice")

    seq: int | None = None
    if is_present(data, "seq"):
        seq = None if read_int(data["seq"], "seq") == -1 else read_sequence(data["seq"], "seq")
        # -1 is Bybit's "no sequence"
    updated_ms: int | None = None
    if is_present(data, "updatedTime"):
        updated_ms = read_sequence(data["updatedTime"], "updatedTime")

    return ExchangeUpdate(
        asset=asset,
        mode=mode,
        size=signed,
        avg_price=read_opt_non_negative(data, avg_key),
        unrealized_pnl=read_opt_decimal(data, "unrealisedPnl"),
        realized_pnl=read_opt_decimal(data, realized_key),
        mark_price=mark if mark else None,  # "0" means no price
        seq=seq,
        updated_ms=updated_ms,
        trace_id=trace_id,
    )


def _position_side(value: object) -> int:
    if value is None:
        return 0
    if not isinstance(value, str):
        raise RejectedInput("side", "not Buy or Sell")
    side = value.strip().lower()
    if side in ("", "none"):
        return 0
    if side == "buy":
        return 1
    if side == "sell":
        return -1
    raise RejectedInput("side", "not Buy or Sell")


# --------------------------------------------------------------------------- bodies
