"""The OpenAPI 3 description of the REST API (served at /api/v1/openapi.json).

`document(registered)` describes the routes actually registered on the web app, so
the document never lists a route the server lacks; a test checks the other
direction (`undescribed`): every registered route has a description here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from web.schemas import ERROR_REF, SCHEMAS


def _json(ref: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


def _err(description: str, retry_after: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": ERROR_REF}},
    }
    if retry_after:
        out["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
    return out


def _errors(*codes: int) -> dict[str, Any]:
    known = {
        400: _err("a bad parameter (the message names it)"),
        401: _err("missing or unknown X-API-Key"),
        403: _err("an X-PM-Forwarded header that is not this deployment's"),
        404: _err("no such position"),
        422: _err("parameters that contradict each other"),
        429: _err("rate limit of the key exceeded", retry_after=True),
        503: _err(
            "a dependency needed for the answer is down, or partitions are being reassigned",
            retry_after=True,
        ),
    }
    return {str(c): known[c] for c in codes}


ASSET_PARAM = {
    "name": "asset",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Z0-9]{2,20}$"},
    "example": "BTCUSDT",
}
ASSET_QUERY = {**ASSET_PARAM, "in": "query", "required": False}
LEG_MODES = ["one-way", "hedge", "hedge-long", "hedge-short"]
COMMAND_MODES = ["one-way", "hedge-long", "hedge-short"]


def _mode(default: str | None, modes: list[str] = LEG_MODES) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "enum": modes}
    if default is not None:
        schema["default"] = default
    return {"name": "mode", "in": "query", "required": False, "schema": schema}


def _query(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


_API = (400, 401, 403, 429, 503)

INTERNAL_HEADER = {
    "name": "X-PM-Forwarded",
    "in": "header",
    "required": False,
    "description": "Internal: set only by a worker forwarding a request to another. Any "
    "other value is refused with 403 and counted; it never skips the key check.",
    "schema": {"type": "string"},
}

PATHS: dict[str, dict[str, Any]] = {
    "/api/v1/positions": {
        "get": {
            "summary": "Positions (open only unless include_closed); size filters on |size|",
            "parameters": [
                ASSET_QUERY,
                _mode(None),
                _query("size_min", {"type": "number", "minimum": 0, "maximum": 1e15}),
                _query("size_max", {"type": "number", "minimum": 0, "maximum": 1e15}),
                _query("include_closed", {"type": "boolean", "default": False}),
            ],
            "responses": {
                "200": _json("PositionList", "positions from every worker, by asset and mode"),
                **_errors(*_API, 422),
            },
        }
    },
    "/api/v1/positions/{asset}": {
        "get": {
            "summary": "One position with its ML features",
            "parameters": [ASSET_PARAM, _mode("one-way")],
            "responses": {
                "200": _json("AnyPosition", "the position"),
                **_errors(*_API, 404),
            },
        }
    },
    "/api/v1/positions/{asset}/validate": {
        "post": {
            "summary": "Validate the position against the fill ledger and the exchange",
            "parameters": [
                ASSET_PARAM,
                _mode("one-way", COMMAND_MODES),
                _query("fix_discrepancies", {"type": "boolean", "default": True}),
            ],
            "responses": {
                "200": _json("ValidationResult", "the validation result"),
                **_errors(*_API, 404),
            },
        }
    },
    "/api/v1/positions/{asset}/snapshot": {
        "post": {
            "summary": "Take a snapshot of the position now",
            "parameters": [ASSET_PARAM, _mode("one-way", COMMAND_MODES)],
            "responses": {
                "201": _json("Snapshot", "the snapshot"),
                **_errors(*_API, 404),
            },
        }
    },
    "/api/v1/positions/{asset}/snapshots": {
        "get": {
            "summary": "Snapshots of the position, newest first",
            "parameters": [
                ASSET_PARAM,
                _mode("one-way", COMMAND_MODES),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}),
                _query("offset", {"type": "integer", "minimum": 0, "maximum": 10_000_000}),
            ],
            "responses": {
                "200": _json("SnapshotList", "a page of snapshots (empty when none)"),
                **_errors(*_API, 422),
            },
        }
    },
    "/api/v1/portfolio": {
        "get": {
            "summary": "Portfolio metrics (SPEC §5), live",
            "parameters": [
                _query("include_positions", {"type": "boolean", "default": False}),
                ASSET_QUERY,
            ],
            "responses": {"200": _json("Portfolio", "the portfolio"), **_errors(*_API)},
        }
    },
    "/api/v1/portfolio/exposure": {
        "get": {
            "summary": "Total and net exposure, by open asset",
            "responses": {
                "200": _json("Exposure", "exposure"),
                **_errors(401, 403, 429, 503),
            },
        }
    },
    "/api/v1/portfolio/pnl": {
        "get": {
            "summary": "Unrealized, realized and total PnL, by asset",
            "responses": {"200": _json("Pnl", "PnL"), **_errors(401, 403, 429, 503)},
        }
    },
    "/api/v1/portfolio/history": {
        "get": {
            "summary": "Portfolio aggregates per window, oldest first",
            "parameters": [
                _query("from", {"type": "string", "format": "date-time"}, "default: now - TTL"),
                _query("to", {"type": "string", "format": "date-time"}, "default: now"),
            ],
            "responses": {
                "200": _json("History", "windows overlapping [from, to]"),
                **_errors(*_API, 422),
            },
        }
    },
    "/health": {
        "get": {
            "summary": "Dependency checks (no key needed)",
            "security": [],
            "responses": {
                "200": _json("Health", "healthy or degraded"),
                "503": _json("Health", "unhealthy"),
            },
        }
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus text (no key needed)",
            "security": [],
            "responses": {
                "200": {
                    "description": "Prometheus exposition format",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    },
    "/livez": {
        "get": {
            "summary": "Liveness: the process serves (no key needed)",
            "security": [],
            "responses": {"200": _json("Probe", "alive")},
        }
    },
    "/readyz": {
        "get": {
            "summary": "Readiness: partitions assigned, tables recovered, Kafka reachable "
            "(no key needed)",
            "security": [],
            "responses": {"200": _json("Probe", "ready"), "503": _json("Probe", "not ready")},
        }
    },
    "/api/v1/docs": {
        "get": {
            "summary": "Interactive API page (Swagger UI) over this document (no key needed)",
            "security": [],
            "responses": {
                "200": {
                    "description": "HTML page",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                }
            },
        }
    },
    "/api/v1/docs/{file}": {
        "get": {
            "summary": "A static file of the API page (no key needed)",
            "security": [],
            "parameters": [
                {"name": "file", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {
                "200": {
                    "description": "CSS, JavaScript or an icon",
                    "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
                },
                "404": _err("no such file"),
            },
        }
    },
    "/api/v1/openapi.json": {
        "get": {
            "summary": "This document (no key needed)",
            "security": [],
            "responses": {
                "200": {
                    "description": "OpenAPI 3",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        }
    },
}


def _with_internal(op: dict[str, Any]) -> dict[str, Any]:
    """A keyed operation also lists the internal header (so fuzzers send it too)."""
    if op.get("security") == []:
        return op
    return {**op, "parameters": [*op.get("parameters", []), INTERNAL_HEADER]}


def described() -> set[tuple[str, str]]:
    return {(m.upper(), path) for path, ops in PATHS.items() for m in ops}


def undescribed(registered: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    """Registered routes this document does not describe (a test keeps it empty)."""
    return set(registered) - described()


def document(registered: Iterable[tuple[str, str]] | None = None) -> dict[str, Any]:
    routes = described() if registered is None else set(registered)
    paths: dict[str, dict[str, Any]] = {}
    for path, ops in PATHS.items():
        kept = {m: _with_internal(op) for m, op in ops.items() if (m.upper(), path) in routes}
        if kept:
            paths[path] = kept
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "position-manager",
            "version": "1.0.0",
            "description": "Positions and portfolio of the trading desk (SPEC §4, §5, §7). "
            "Decimals are strings; timestamps ISO 8601 UTC.",
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
        },
        "security": [{"ApiKey": []}],
    }
