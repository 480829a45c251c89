"""Query and path parameters of the REST API: one parser per kind, each failing with a
JSON 400 (or 422 for an integer out of range) that names the parameter.

An empty value (`?include_closed=`) is the same as no value: the default applies.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

from aiohttp import web

from web.errors import bad_parameter

ASSET = re.compile(r"^[A-Z0-9]{2,20}$")
API_MODES = ("one-way", "hedge", "hedge-long", "hedge-short")
LEG_MODES = ("one-way", "hedge-long", "hedge-short")
MAX_SIZE = Decimal("1e15")
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def _query(request: web.Request, name: str) -> str | None:
    """The parameter's value; None when it is absent or empty."""
    raw = request.query.get(name)
    return None if raw is None or raw == "" else raw


def parse_asset(raw: str, name: str = "asset") -> str:
    if not ASSET.match(raw):
        raise bad_parameter(name, "must match ^[A-Z0-9]{2,20}$")
    return raw


def parse_mode(request: web.Request, default: str | None = "one-way") -> str | None:
    """A mode of `API_MODES` (`hedge`: both legs)."""
    mode = _query(request, "mode") or default
    if mode is not None:
        check_mode(mode)
    return mode


def check_mode(mode: str) -> None:
    if mode not in API_MODES:
        raise bad_parameter("mode", f"must be one of {', '.join(API_MODES)}")


def parse_leg_mode(request: web.Request) -> str:
    """One leg: `one-way`, `hedge-long` or `hedge-short`."""
    mode = _query(request, "mode") or "one-way"
    if mode not in LEG_MODES:
        raise bad_parameter("mode", f"must be one of {', '.join(LEG_MODES)}")
    return mode


def parse_bool(request: web.Request, name: str, default: bool) -> bool:
    raw = _query(request, name)
    if raw is None:
        return default
    low = raw.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise bad_parameter(name, "must be true or false")


def parse_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = _query(request, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_parameter(name, "must be an integer") from None
    if not low <= value <= high:
        raise bad_parameter(name, f"must be between {low} and {high}", 422)
    return value


def parse_size(request: web.Request, name: str) -> Decimal | None:
    raw = _query(request, name)
    if raw is None:
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise bad_parameter(name, "must be a decimal number") from None
    if not value.is_finite() or value < 0 or value > MAX_SIZE:
        raise bad_parameter(name, f"must be a number between 0 and {MAX_SIZE:f}")
    return value


def parse_time(request: web.Request, name: str, default: datetime) -> datetime:
    raw = _query(request, name)
    if raw is None:
        return default
    try:
        if re.fullmatch(r"\d{1,12}(\.\d+)?", raw):
            return datetime.fromtimestamp(float(raw), UTC)
        value = datetime.fromisoformat(raw.replace("Z", "+00:00").replace(" ", "+"))
    except (ValueError, OverflowError, OSError):
        raise bad_parameter(name, "must be an ISO 8601 timestamp or epoch seconds") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
