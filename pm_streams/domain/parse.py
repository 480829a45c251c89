"""Edge validation: raw RabbitMQ messages → domain events, or `RejectedInput`.

Numbers are accepted as JSON strings or JSON numbers and parsed into `Decimal`
through their text, never through float arithmetic. A rejection names the field so
the bridge can log it and put the reason on the dead-lettered message.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

from pm_streams.domain.model import ZERO, ExchangeUpdate, Fill

MAX_BODY_BYTES = 64 * 1024
MAX_ID_LENGTH = 200

ASSET_RE = re.compile(r"[A-Z0-9]{2,20}")
_NUMBER_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d{1,4})?")
_INT_RE = re.compile(r"[+-]?\d{1,19}")
#: Decimal exponents (`adjusted()`) outside this range are not plausible money.
_MAX_MAGNITUDE = 24

ORDER_EVENT_TYPES = ("order_executed", "position_updated_from_order")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class RejectedInput(ValueError):
    """A message that can never be applied; goes to the dead-letter queue."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"field '{field}': {reason}")
        self.field = field
        self.reason = reason

    def __reduce__(self) -> tuple[type[RejectedInput], tuple[str, str]]:
        return (RejectedInput, (self.field, self.reason))


# --------------------------------------------------------------------------- scalars


def _decimal(value: object, field: str) -> Decimal:
    """A finite Decimal from a JSON string or number (never via float arithmetic)."""
    if isinstance(value, bool):
        raise RejectedInput(field, "not a number")
    if isinstance(value, int):
        d = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise RejectedInput(field, "not a finite number")
        d = Decimal(str(value))
    elif isinstance(value, str):
        text = value.strip()
        if len(text) > 64 or not _NUMBER_RE.fullmatch(text):
            if text.lower().lstrip("+-") in ("nan", "snan", "inf", "infinity"):
                raise RejectedInput(field, "not a finite number")
            raise RejectedInput(field, "not a number")
        d = Decimal(text)
    else:
        raise RejectedInput(field, "not a number")
    if d != 0 and abs(d.adjusted()) > _MAX_MAGNITUDE:
        raise RejectedInput(field, "out of range")
    if d == 0:
        d = abs(d)  # no "-0"
    return d


def _present(raw: Mapping[str, Any], key: str) -> bool:
    value = raw.get(key)
    return value is not None and value != ""


def _opt_decimal(raw: Mapping[str, Any], key: str) -> Decimal | None:
    """The number under `key`; None when missing, null or empty string."""
    if not _present(raw, key):
        return None
    return _decimal(raw[key], key)


def _opt_non_negative(raw: Mapping[str, Any], key: str) -> Decimal | None:
    d = _opt_decimal(raw, key)
    if d is not None and d < 0:
        raise RejectedInput(key, "must not be negative")
    return d


def _required_positive(raw: Mapping[str, Any], key: str) -> Decimal:
    d = _opt_non_negative(raw, key)
    if d is None:
        raise RejectedInput(key, "missing")
    if d == 0:
        raise RejectedInput(key, "must be positive")
    return d


def _int(value: object, field: str) -> int:
    if isinstance(value, bool):
        raise RejectedInput(field, "not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INT_RE.fullmatch(value.strip()):
        return int(value.strip())
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise RejectedInput(field, "not an integer")


def _asset(value: object, field: str) -> str:
    if value is None or value == "":
        raise RejectedInput(field, "missing")
    if not isinstance(value, str):
        raise RejectedInput(field, "not a string")
    if not ASSET_RE.fullmatch(value):
        raise RejectedInput(field, "does not match ^[A-Z0-9]{2,20}$")
    return value


def _opt_text(raw: Mapping[str, Any], key: str) -> str | None:
    """An identifier: string (numbers are accepted and turned into text)."""
    value = raw.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise RejectedInput(key, "not a string")
    text = str(value)
    if len(text) > MAX_ID_LENGTH:
        raise RejectedInput(key, "too long")
    return text


def _datetime(value: object, field: str) -> datetime:
    """ISO-8601 (naive = UTC) or epoch milliseconds, as an aware UTC datetime."""
    try:
        if isinstance(value, str) and _INT_RE.fullmatch(value.strip()):
            value = int(value.strip())
        if isinstance(value, int) and not isinstance(value, bool):
            if not 0 <= value < 10**14:
                raise RejectedInput(field, "timestamp out of range")
            return _EPOCH + timedelta(milliseconds=value)
        if not isinstance(value, str) or len(value) > 64:
            raise RejectedInput(field, "not an ISO-8601 timestamp")
        dt = datetime.fromisoformat(value.strip())
    except (ValueError, OverflowError) as exc:
        if isinstance(exc, RejectedInput):
            raise
        raise RejectedInput(field, "not an ISO-8601 timestamp") from None
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def _trace_id(raw: Mapping[str, Any], new_trace_id: Callable[[], str]) -> tuple[str, bool]:
    """The message's trace id (and True), or a fresh one (and False)."""
    value = _opt_text(raw, "trace_id")
    if value is None:
        return new_trace_id(), False
    return value, True


def _plain(d: Decimal) -> str:
    """Canonical text of a number: `0.50` and `0.5` give the same identity."""
    return format(d.normalize(), "f")


def _iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


# --------------------------------------------------------------------------- modes

_IDX_LEGS = {0: None, 1: "hedge-long", 2: "hedge-short"}
_SIDE_LEGS = {"long": "hedge-long", "short": "hedge-short"}


def _position_idx(raw: Mapping[str, Any], *keys: str) -> tuple[int | None, str]:
    for key in keys:
        if _present(raw, key):
            idx = _int(raw[key], key)
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
    asset = _asset(raw.get("asset"), "asset")
    trace_id, has_trace = _trace_id(raw, new_trace_id)

    side_leg: str | None = None
    for key in ("position_side", "positionSide"):
        if _present(raw, key):
            value = raw[key]
            if not isinstance(value, str) or value.strip().lower() not in _SIDE_LEGS:
                raise RejectedInput(key, "not long or short")
            side_leg = _SIDE_LEGS[value.strip().lower()]
            break
    idx, idx_field = _position_idx(raw, "position_idx", "positionIdx")
    mode = _resolve_mode(raw.get("mode"), idx, idx_field, side_leg, "fill")

    exec_type = raw.get("exec_type", raw.get("execType"))
    funding = isinstance(exec_type, str) and exec_type.strip().lower() == "funding"
    fee = _opt_decimal(raw, "execution_fees") or ZERO
    executed_at = (
        _datetime(raw["executed_at"], "executed_at") if _present(raw, "executed_at") else None
    )
    order_id = _opt_text(raw, "order_id")

    if funding:
        quantity = ZERO
        price = _opt_non_negative(raw, "execution_price") or ZERO
    else:
        qty_key = "filled_quantity"
        if _present(raw, "execution_quantity") or not _present(raw, "filled_quantity"):
            qty_key = "execution_quantity"
        size = _required_positive(raw, qty_key)
        price = _required_positive(raw, "execution_price")
        quantity = size * _side_sign(raw.get("side"))

    fill_id = _opt_text(raw, "execution_id")
    if fill_id is None and order_id is not None and executed_at is not None:
        fill_id = f"{order_id}|{_iso(executed_at)}|{_plain(abs(quantity))}|{_plain(price)}"
    if fill_id is None and has_trace:
        fill_id = trace_id
    if fill_id is None:
        raise RejectedInput(
            "execution_id", "no fill identity (execution_id, order_id+executed_at or trace_id)"
        )

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
    asset = _asset(data.get("symbol"), "symbol")
    trace_id, has_trace = _trace_id(raw, new_trace_id)
    if not has_trace:
        inner = _opt_text(data, "trace_id")
        if inner is not None:
            trace_id = inner

    idx, idx_field = _position_idx(data, "positionIdx")
    mode = _resolve_mode(data.get("mode"), idx, idx_field, None, "position")

    sign = _position_side(data.get("side"))
    size = _opt_non_negative(data, "size")
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

    avg_key = "avgPrice" if _present(data, "avgPrice") else "entryPrice"
    realized_key = "realisedPnl" if _present(data, "realisedPnl") else "cumRealisedPnl"
    mark = _opt_non_negative(data, "markPrice")

    seq: int | None = None
    if _present(data, "seq"):
        seq = _int(data["seq"], "seq")
        if seq < 0:  # Bybit uses -1 for "no sequence"
            seq = None
    updated_ms: int | None = None
    if _present(data, "updatedTime"):
        updated_ms = _int(data["updatedTime"], "updatedTime")
        if updated_ms < 0:
            raise RejectedInput("updatedTime", "must not be negative")

    return ExchangeUpdate(
        asset=asset,
        mode=mode,
        size=signed,
        avg_price=_opt_non_negative(data, avg_key),
        unrealized_pnl=_opt_decimal(data, "unrealisedPnl"),
        realized_pnl=_opt_decimal(data, realized_key),
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


def decode_json(body: bytes | bytearray | memoryview | str) -> dict[str, Any]:
    """A message body as a JSON object (at most 64 KiB)."""
    size = len(body.encode()) if isinstance(body, str) else len(body)
    if size > MAX_BODY_BYTES:
        raise RejectedInput("body", "payload too large")
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise RejectedInput("body", "not valid JSON") from None
    if not isinstance(obj, dict):
        raise RejectedInput("body", "not a JSON object")
    return obj
