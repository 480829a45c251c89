"""The JSON schemas of the REST API's bodies (components of `web.openapi`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

DECIMAL = {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,18})?$"}
"""A plain decimal (SPEC §4 rev 2): no exponent, at most 18 places."""
NDECIMAL = {**DECIMAL, "nullable": True}
TIME = {"type": "string", "format": "date-time"}
NTIME = {**TIME, "nullable": True}
ERROR_REF = {"$ref": "#/components/schemas/Error"}


def _obj(props: dict[str, Any], required: Iterable[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": props,
        "required": sorted(props) if required is None else list(required),
    }


FEATURES = {
    "unrealized_pnl_pct": NDECIMAL,
    "time_held_minutes": {"type": "integer", "minimum": 0},
    "position_size_norm": DECIMAL,
}

POSITION = _obj(
    {
        "id": {"type": "string"},
        "asset": {"type": "string"},
        "mode": {"type": "string", "enum": ["one-way", "hedge-long", "hedge-short"]},
        "size": DECIMAL,
        "side": {"type": "string", "enum": ["long", "short", "flat"]},
        "average_entry_price": DECIMAL,
        "current_price": NDECIMAL,
        "unrealized_pnl": DECIMAL,
        "realized_pnl": DECIMAL,
        "total_fees": DECIMAL,
        "funding_pnl": DECIMAL,
        "long_size": DECIMAL,
        "short_size": DECIMAL,
        "version": {"type": "integer", "minimum": 0},
        "created_at": TIME,
        "opened_at": NTIME,
        "last_updated": TIME,
        "closed_at": NTIME,
        "last_snapshot_at": NTIME,
        "last_price_at": NTIME,
        "exchange_size": NDECIMAL,
        "exchange_avg_price": NDECIMAL,
        **FEATURES,
    }
)

HEDGE_POSITION = _obj(
    {
        "asset": {"type": "string"},
        "mode": {"type": "string", "enum": ["hedge"]},
        "size": DECIMAL,
        "side": {"type": "string", "enum": ["long", "short", "flat"]},
        "long_size": DECIMAL,
        "short_size": DECIMAL,
        "current_price": NDECIMAL,
        "unrealized_pnl": DECIMAL,
        "realized_pnl": DECIMAL,
        "total_fees": DECIMAL,
        "funding_pnl": DECIMAL,
        "last_updated": TIME,
        "legs": {"type": "array", "items": {"$ref": "#/components/schemas/Position"}},
    }
)

BY_ASSET = {
    "type": "object",
    "additionalProperties": _obj(
        {
            "exposure_usdt": DECIMAL,
            "unrealized_pnl_usdt": DECIMAL,
            "realized_pnl_usdt": DECIMAL,
            "size": DECIMAL,
            "price_fallback": {"type": "boolean"},
        }
    ),
}

TOTALS = {
    "total_exposure_usdt": DECIMAL,
    "net_exposure_usdt": DECIMAL,
    "portfolio_value_usdt": DECIMAL,
    "total_unrealized_pnl_usdt": DECIMAL,
    "total_realized_pnl_usdt": DECIMAL,
    "total_pnl_usdt": DECIMAL,
    "open_positions_count": {"type": "integer", "minimum": 0},
    "long_positions_count": {"type": "integer", "minimum": 0},
    "short_positions_count": {"type": "integer", "minimum": 0},
}

PORTFOLIO = _obj(
    {
        **TOTALS,
        "by_asset": {"$ref": "#/components/schemas/ByAsset"},
        "calculated_at": NTIME,
        "limit_exceeded": {"type": "boolean"},
        "max_exposure_usdt": NDECIMAL,
        "positions": {"type": "array", "items": {"$ref": "#/components/schemas/AnyPosition"}},
    },
    required=[*sorted(TOTALS), "by_asset", "calculated_at", "limit_exceeded"],
)

EXPOSURE = _obj(
    {
        "total_exposure_usdt": DECIMAL,
        "net_exposure_usdt": DECIMAL,
        "by_asset": {
            "type": "object",
            "additionalProperties": _obj({"exposure_usdt": DECIMAL, "size": DECIMAL}),
        },
        "calculated_at": NTIME,
        "limit_exceeded": {"type": "boolean"},
    }
)

PNL = _obj(
    {
        "total_unrealized_pnl_usdt": DECIMAL,
        "total_realized_pnl_usdt": DECIMAL,
        "total_pnl_usdt": DECIMAL,
        "by_asset": {
            "type": "object",
            "additionalProperties": _obj(
                {"unrealized_pnl_usdt": DECIMAL, "realized_pnl_usdt": DECIMAL}
            ),
        },
        "calculated_at": NTIME,
    }
)

WINDOW = _obj(
    {
        "window_start": TIME,
        "window_end": TIME,
        "total_exposure_usdt": DECIMAL,
        "net_exposure_usdt": DECIMAL,
        "total_unrealized_pnl_usdt": DECIMAL,
        "total_realized_pnl_usdt": DECIMAL,
        "total_pnl_usdt": DECIMAL,
        "open_positions_count": {"type": "integer", "minimum": 0},
        "long_positions_count": {"type": "integer", "minimum": 0},
        "short_positions_count": {"type": "integer", "minimum": 0},
        "calculated_at": NTIME,
    }
)

HISTORY = _obj(
    {
        "windows": {"type": "array", "items": {"$ref": "#/components/schemas/Window"}},
        "count": {"type": "integer", "minimum": 0},
        "window_seconds": {"type": "number"},
        "from": TIME,
        "to": TIME,
    }
)

HEALTH = _obj(
    {
        "status": {"type": "string", "enum": ["healthy", "degraded", "unhealthy"]},
        "service": {"type": "string", "enum": ["position-manager"]},
        "database_connected": {"type": "boolean"},
        "queue_connected": {"type": "boolean"},
        "kafka_connected": {"type": "boolean"},
        "positions_count": {"type": "integer", "minimum": 0},
        "validation": _obj(
            {
                "validations": {"type": "integer", "minimum": 0},
                "discrepancies": {"type": "integer", "minimum": 0},
                "fixes": {"type": "integer", "minimum": 0},
            }
        ),
        "timestamp": TIME,
    }
)

VALIDATION = _obj(
    {
        "is_valid": {"type": "boolean"},
        "error_message": {"type": "string", "nullable": True},
        "discrepancies": {
            "type": "array",
            "items": _obj(
                {
                    "field": {"type": "string"},
                    "stored": {"nullable": True},
                    "expected": {"nullable": True},
                    "source": {"type": "string"},
                }
            ),
        },
        "updated_position": {
            "nullable": True,
            "anyOf": [
                {"$ref": "#/components/schemas/Position"},
                {"$ref": "#/components/schemas/HedgePosition"},
            ],
        },
    },
    required=["is_valid", "discrepancies"],
)

SNAPSHOT = _obj(
    {
        "id": {"type": "string"},
        "position_id": {"type": "string"},
        "asset": {"type": "string"},
        "mode": {"type": "string"},
        "snapshot_data": {"type": "object"},
        "created_at": TIME,
    },
    required=["id", "position_id", "asset", "mode", "snapshot_data", "created_at"],
)

SNAPSHOTS = _obj(
    {
        "snapshots": {"type": "array", "items": {"$ref": "#/components/schemas/Snapshot"}},
        "count": {"type": "integer", "minimum": 0},
        "total": {"type": "integer", "minimum": 0},
        "limit": {"type": "integer", "minimum": 0},
        "offset": {"type": "integer", "minimum": 0},
    },
    required=["snapshots", "count", "limit", "offset"],
)

ERROR = _obj({"error": _obj({"code": {"type": "string"}, "message": {"type": "string"}})})


SCHEMAS = {
    "Position": POSITION,
    "HedgePosition": HEDGE_POSITION,
    "AnyPosition": {
        "anyOf": [
            {"$ref": "#/components/schemas/Position"},
            {"$ref": "#/components/schemas/HedgePosition"},
        ]
    },
    "PositionList": _obj(
        {
            "positions": {"type": "array", "items": {"$ref": "#/components/schemas/AnyPosition"}},
            "count": {"type": "integer", "minimum": 0},
        }
    ),
    "ByAsset": BY_ASSET,
    "Portfolio": PORTFOLIO,
    "Exposure": EXPOSURE,
    "Pnl": PNL,
    "Window": WINDOW,
    "History": HISTORY,
    "Health": HEALTH,
    "Probe": _obj({"status": {"type": "string"}, "reason": {"type": "string"}}, ["status"]),
    "ValidationResult": VALIDATION,
    "Snapshot": SNAPSHOT,
    "SnapshotList": SNAPSHOTS,
    "Error": ERROR,
}
