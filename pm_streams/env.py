"""Parsers of environment values, one per kind; each raises `ValueError` with the
reason, which `pm_streams.settings` reports with the variable's name."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

_APP_ID = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


def path(raw: str) -> Path:
    return Path(raw).expanduser()


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(raw: str) -> float:
    """Seconds, or a number with a unit: `604800`, `7d`, `12h`, `30m`, `90s`."""
    unit = _UNITS.get(raw[-1].lower()) if raw and raw[-1].isalpha() else 1
    if unit is None:
        raise ValueError("expected seconds or a number with s, m, h or d")
    seconds = float(raw[:-1] if raw[-1].isalpha() else raw) * unit
    if not seconds > 0 or seconds != seconds or seconds == float("inf"):
        raise ValueError("must be a positive duration")
    return seconds


def hostname(raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._:\-\[\]]+", raw):
        raise ValueError("not a host name or address")
    return raw


def positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def port(raw: str) -> int:
    value = int(raw)
    if not 0 < value < 65536:
        raise ValueError("must be a TCP port (1-65535)")
    return value


def positive_seconds(raw: str) -> float:
    seconds = float(raw)
    if not seconds > 0:
        raise ValueError("must be a positive number of seconds")
    return seconds


def non_negative_seconds(raw: str) -> float:
    seconds = float(raw)
    if not seconds >= 0:
        raise ValueError("must be zero or a positive number of seconds")
    return seconds


def non_negative_decimal(raw: str) -> Decimal:
    value = Decimal(raw)
    if not value.is_finite() or value < 0:
        raise ValueError("must be a non-negative decimal")
    return value


def optional_decimal(raw: str) -> Decimal | None:
    return non_negative_decimal(raw)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def boolean(raw: str) -> bool:
    low = raw.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError("must be true or false")


def log_level(raw: str) -> str:
    level = raw.upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level


def app_id(raw: str) -> str:
    if not _APP_ID.match(raw):
        raise ValueError("letters, digits, '.', '_' and '-' only")
    return raw


name = app_id


def identifier(raw: str) -> str:
    if not re.match(r"^[a-z_][a-z0-9_]{0,62}$", raw):
        raise ValueError("must be a lower-case SQL identifier")
    return raw


def kafka_url(raw: str) -> str:
    for part in raw.split(";"):
        if not re.match(r"^(kafka://)?[^:/\s]+:\d+$", part.strip()):
            raise ValueError("expected kafka://host:port[;kafka://host:port]")
    return raw


def http_url(raw: str) -> str:
    if not re.match(r"^https?://[^\s/]+", raw):
        raise ValueError("expected an http(s) URL")
    return raw.rstrip("/")


def store(raw: str) -> str:
    if raw not in {"memory://", "rocksdb://"}:
        raise ValueError("must be memory:// or rocksdb://")
    return raw


SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def sslmode(raw: str) -> str:
    if raw not in SSL_MODES:
        raise ValueError(f"must be one of {', '.join(SSL_MODES)}")
    return raw


def event_loop(raw: str) -> str:
    if raw not in {"uvloop", "asyncio"}:
        raise ValueError("must be uvloop or asyncio")
    return raw


def outputs(raw: str) -> str:
    if raw not in {"worker", "separate"}:
        raise ValueError("must be worker or separate")
    return raw


def overrides(raw: str) -> dict[str, int]:
    result: dict[str, int] = {}
    for item in filter(None, (p.strip() for p in raw.split(","))):
        name, sep, limit = item.partition(":")
        if not sep or not name:
            raise ValueError(f"entry {item!r} is not name:limit")
        result[name] = positive_int(limit)
    return result
