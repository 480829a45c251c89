"""Snapshot and validation endpoints (SPEC §6, §7).

POST validate / snapshot run on the worker that actively owns the asset (forwarded
there otherwise: the command reads the live table and sends its change through the
asset's partition). GET snapshots reads Postgres and is answered by any worker.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from aiohttp import web

from pm_streams.context import Service
from pm_streams.logs import new_trace_id
from pm_streams.names import POSITIONS_TABLE
from web.endpoints import Endpoints
from web.errors import ApiError, json_response
from web.params import parse_asset, parse_bool, parse_int, parse_leg_mode
from web.routing import Router

MAX_LIMIT = 1000
MAX_OFFSET = 10_000_000


def register(
    service: Service,
    endpoints: Endpoints,
    router: Router,
    total_exposure: Callable[[web.Request], Awaitable[Decimal]],
) -> None:
    """`total_exposure`: the live portfolio total (asked of its owner), for snapshots."""
    commands = Commands(service, router, total_exposure)
    endpoints.add("POST", "/api/v1/positions/{asset}/validate", commands.validate)
    endpoints.add("POST", "/api/v1/positions/{asset}/snapshot", commands.snapshot)
    endpoints.add("GET", "/api/v1/positions/{asset}/snapshots", commands.snapshots)


def _trace(request: web.Request) -> str:
    return request.headers.get("X-Trace-Id") or new_trace_id()


class Commands:
    def __init__(
        self,
        service: Service,
        router: Router,
        total_exposure: Callable[[web.Request], Awaitable[Decimal]],
    ) -> None:
        self.service = service
        self.router = router
        self.total_exposure = total_exposure

    def _asset(self, request: web.Request) -> str:
        return parse_asset(request.match_info["asset"])

    async def validate(self, request: web.Request) -> web.StreamResponse:
        asset = self._asset(request)
        mode = parse_leg_mode(request)
        fix = parse_bool(request, "fix_discrepancies", True)
        dest = self.router.owner(POSITIONS_TABLE, asset)
        if dest is not None:
            return await self.router.forward(dest, request)
        result = await self.service.validator.validate(
            asset, mode, fix=fix, reason="request", trace_id=_trace(request)
        )
        if result is None:
            raise ApiError(404, "not_found", f"no {mode} position for {asset}")
        return json_response(result)

    async def snapshot(self, request: web.Request) -> web.StreamResponse:
        from tables.snapshots import Unavailable

        asset = self._asset(request)
        mode = parse_leg_mode(request)
        dest = self.router.owner(POSITIONS_TABLE, asset)
        if dest is not None:
            return await self.router.forward(dest, request)
        leg = self.service.snapshots.live.leg(asset, mode)
        if leg is None:
            raise ApiError(404, "not_found", f"no {mode} position for {asset}")
        try:
            exposure = await self.total_exposure(request)
            snapshot = await self.service.snapshots.take(leg, _trace(request), exposure=exposure)
        except (Unavailable, TimeoutError) as exc:
            raise ApiError(503, "unavailable", str(exc) or "dependency timed out") from None
        return json_response(snapshot, 201)

    async def snapshots(self, request: web.Request) -> web.StreamResponse:
        from tables.snapshots import Unavailable

        asset = self._asset(request)
        mode = parse_leg_mode(request)
        limit = parse_int(request, "limit", 100, 1, MAX_LIMIT)
        offset = parse_int(request, "offset", 0, 0, MAX_OFFSET)
        try:
            rows, total = await self.service.snapshots.page(asset, mode, limit, offset)
        except Unavailable as exc:
            raise ApiError(503, "unavailable", str(exc), {"Retry-After": "1"}) from None
        body: dict[str, Any] = {
            "snapshots": rows,
            "count": len(rows),
            "total": total,
            "limit": limit,
            "offset": offset,
        }
        return json_response(body)
