"""The REST API as aiohttp handlers on Faust's own web server (SPEC §7).

Asset routes are answered by the worker owning the asset's partition, portfolio
routes by the worker owning the portfolio's single partition; any other worker
forwards once (`web.routing`). `GET /api/v1/positions` gathers from every owning
worker. Everything is read from the live tables, so an answer reflects every event
applied before it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import web
from yarl import URL

from pm_streams.context import Service
from pm_streams.domain import (
    UNDECODABLE,
    Book,
    features,
    hedge_view,
    iso,
    position_to_dict,
)
from pm_streams.names import PORTFOLIO_TOTALS_TABLE, POSITIONS_TABLE, TOTALS_KEY
from pm_streams.runtime.reads import Reader, stored
from web import commands
from web.auth import Gate
from web.endpoints import Endpoints
from web.errors import ApiError, bad_parameter, json_response
from web.ops import Operations
from web.params import (
    check_mode,
    parse_asset,
    parse_bool,
    parse_mode,
    parse_size,
    parse_time,
)
from web.routing import SCOPE, Router, is_internal

HISTORY_MAX_SPAN = timedelta(days=31)


def register(service: Service) -> None:
    web_app: web.Application = service.app.web.web_app  # type: ignore[attr-defined]
    endpoints = Endpoints(web_app, Gate(service.settings, service.metrics), service.metrics)
    handlers = Handlers(service)
    ops = Operations(service, handlers.router, registered_routes)
    add = endpoints.add
    add("GET", "/health", ops.health, public=True)
    add("GET", "/livez", ops.livez, public=True)
    add("GET", "/readyz", ops.readyz, public=True)
    add("GET", "/metrics", ops.metrics, public=True)
    add("GET", "/api/v1/openapi.json", ops.openapi, public=True)
    add("GET", "/api/v1/docs", ops.docs.page, public=True)
    add("GET", "/api/v1/docs/{file}", ops.docs.asset, public=True)
    add("GET", "/api/v1/positions", handlers.positions)
    add("GET", "/api/v1/positions/{asset}", handlers.position)
    add("GET", "/api/v1/portfolio", handlers.portfolio)
    add("GET", "/api/v1/portfolio/exposure", handlers.exposure)
    add("GET", "/api/v1/portfolio/pnl", handlers.pnl)
    add("GET", "/api/v1/portfolio/history", handlers.history)
    commands.register(
        service, endpoints, handlers.router, handlers.total_exposure
    )  # validate, snapshot(s): web/commands.py
    endpoints.finish()
    web_app.on_cleanup.append(lambda _app: handlers.router.close())
    web_app.on_cleanup.append(lambda _app: ops.kafka_ok.close())
    web_app.on_cleanup.append(lambda _app: ops.postgres_ok.close())


class Handlers:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.live = service.portfolio
        self.router = Router(service.app, service.settings)
        self.positions_changelog = service.settings.kafka.positions_changelog
        # (asset, mode) -> (assignment, stored record, stored totals record (or
        # `_REMOTE`), total exposure, valid until (epoch s), JSON): a position's answer
        # changes only with its owner, its record, the exposure, or the minute.
        self._rendered: dict[tuple[str, str], tuple[object, Any, Any, Decimal, float, bytes]] = {}
        self._positions = Reader(service.positions)

    # ------------------------------------------------------------------ helpers

    def book(self, asset: str) -> Book | None:
        return self.service.books.readable(asset, stored(self.service.positions, asset))

    async def total_exposure(self, request: web.Request) -> Decimal:
        """The live total exposure, from the portfolio's owner (SPEC §4.4); never from
        a request header (SPEC §7 rev 2)."""
        dest = self.router.owner(PORTFOLIO_TOTALS_TABLE, TOTALS_KEY)
        if dest is None:
            exposure: Decimal = self.live.totals().exposure
            return exposure
        return await self.remote_exposure(dest, request)

    async def remote_exposure(self, dest: URL, request: web.Request) -> Decimal:
        body = await self.router.fetch_json(dest, request, "/api/v1/portfolio/exposure")
        return Decimal(body["total_exposure_usdt"])

    def leg_views(
        self,
        book: Book,
        mode: str | None,
        exposure: Decimal,
        now: datetime,
        include_closed: bool,
    ) -> list[dict[str, Any]]:
        if mode == "hedge":
            legs = [leg for leg in book.legs if leg.mode != "one-way"]
            if not legs or (not include_closed and all(leg.size == 0 for leg in legs)):
                return []
            by_mode = {leg.mode: features(leg, now, exposure) for leg in legs}
            return [hedge_view(legs, features_by_mode=by_mode)]
        return [
            position_to_dict(leg, features=features(leg, now, exposure))
            for leg in book.legs
            if (mode is None or leg.mode == mode) and (include_closed or leg.size != 0)
        ]

    def local_positions(
        self,
        asset: str | None,
        mode: str | None,
        size_min: Decimal | None,
        size_max: Decimal | None,
        include_closed: bool,
        exposure: Decimal,
    ) -> list[dict[str, Any]]:
        """Positions of the assets this worker owns (standby copies left out)."""
        table = self.service.positions
        assets = [asset] if asset is not None else list(table.keys())
        now = self.service.clock.now()
        out: list[dict[str, Any]] = []
        for a in assets:
            if not self.router.owns(POSITIONS_TABLE, a):
                continue
            book = self.book(a)
            if book is None:
                continue
            for view in self.leg_views(book, mode, exposure, now, include_closed):
                size = abs(Decimal(view["size"]))
                if size_min is not None and size < size_min:
                    continue
                if size_max is not None and size > size_max:
                    continue
                out.append(view)
        return out

    async def gather_positions(
        self,
        request: web.Request,
        *,
        asset: str | None,
        mode: str | None,
        size_min: Decimal | None,
        size_max: Decimal | None,
        include_closed: bool,
        exposure: Decimal,
    ) -> list[dict[str, Any]]:
        local = self.local_positions(asset, mode, size_min, size_max, include_closed, exposure)
        if is_internal(request, self.router.token) and request.headers.get(SCOPE) == "local":
            return local
        params = {"include_closed": "true" if include_closed else "false"}
        if asset is not None:
            params["asset"] = asset
        if mode is not None:
            params["mode"] = mode
        if size_min is not None:
            params["size_min"] = str(size_min)
        if size_max is not None:
            params["size_max"] = str(size_max)
        parts = await self.router.gather(
            request,
            self.positions_changelog,
            {"positions": local},
            "/api/v1/positions",
            params,
        )
        merged = [p for part in parts for p in part["positions"]]
        merged.sort(key=lambda p: (p["asset"], p["mode"]))
        return merged

    def portfolio_owner(self) -> Any:
        return self.router.owner(PORTFOLIO_TOTALS_TABLE, TOTALS_KEY)

    # ------------------------------------------------------------------ positions

    async def positions(self, request: web.Request) -> web.StreamResponse:
        raw_asset = request.query.get("asset")
        asset = None if raw_asset is None else parse_asset(raw_asset)
        mode = parse_mode(request, default=None)
        size_min = parse_size(request, "size_min")
        size_max = parse_size(request, "size_max")
        if size_min is not None and size_max is not None and size_min > size_max:
            raise bad_parameter("size_min", "must not exceed size_max", status=422)
        include_closed = parse_bool(request, "include_closed", False)
        exposure = await self.total_exposure(request)
        positions = await self.gather_positions(
            request,
            asset=asset,
            mode=mode,
            size_min=size_min,
            size_max=size_max,
            include_closed=include_closed,
            exposure=exposure,
        )
        return json_response({"positions": positions, "count": len(positions)})

    async def position(self, request: web.Request) -> web.StreamResponse:
        asset = request.match_info["asset"]
        mode = request.query.get("mode", "one-way") if request.query_string else "one-way"
        hit = self._rendered.get((asset, mode))
        if hit is None:  # a rendered answer's asset and mode were valid
            parse_asset(asset)
            check_mode(mode)
        router = self.router
        assignment = router.assignment()  # 503 while partitions are being reassigned
        if (
            hit is not None
            and hit[0] is assignment  # so this worker still owns the asset and the totals
            and hit[1] is self._positions.get(asset)
            and hit[2] is self.live.totals_record()
            and self.service.clock.timestamp() < hit[4]
        ):
            return _raw_json(hit[5])
        dest = router.owner(POSITIONS_TABLE, asset)
        if dest is not None:
            return await router.forward(dest, request)
        # A single position's request is never a fan-out part: no passed-along total.
        totals_owner = router.owner(PORTFOLIO_TOTALS_TABLE, TOTALS_KEY)
        if totals_owner is None:
            totals_raw: object = self.live.totals_record()
            exposure: Decimal = self.live.totals().exposure
        else:
            totals_raw = _REMOTE
            exposure = await self.remote_exposure(totals_owner, request)
        raw = self._positions.get(asset)
        clock = self.service.clock
        if hit is not None and hit[1] is raw and hit[3] == exposure and clock.timestamp() < hit[4]:
            until, body = hit[4], hit[5]  # the same record and exposure: the same answer
        else:
            now = clock.now()
            try:
                book = self.service.books.decode(asset, raw)
            except UNDECODABLE:
                # The agent dead-letters the asset's events meanwhile (engine errors).
                msg = f"{asset}: stored by a newer version"
                raise ApiError(503, "unreadable_record", msg) from None
            views = self.leg_views(book, mode, exposure, now, True) if book else []
            if not views or book is None:
                raise ApiError(404, "not_found", f"no {mode} position for {asset}")
            until, body = _held_changes_at(book, now).timestamp(), orjson.dumps(views[0])
        if len(self._rendered) > 20_000:
            self._rendered.clear()
        self._rendered[(asset, mode)] = (assignment, raw, totals_raw, exposure, until, body)
        return _raw_json(body)

    # ------------------------------------------------------------------ portfolio

    async def portfolio(self, request: web.Request) -> web.StreamResponse:
        raw_asset = request.query.get("asset")
        asset = None if raw_asset is None else parse_asset(raw_asset)
        include_positions = parse_bool(request, "include_positions", False)
        dest = self.portfolio_owner()
        if dest is not None:
            return await self.router.forward(dest, request)
        if asset is None and not include_positions:
            return _raw_json(self.live.rendered("portfolio"))
        body = self.live.view(asset)
        if include_positions:
            body["positions"] = await self.gather_positions(
                request,
                asset=asset,
                mode=None,
                size_min=None,
                size_max=None,
                include_closed=False,
                exposure=self.live.totals().exposure,
            )
        return json_response(body)

    async def exposure(self, request: web.Request) -> web.StreamResponse:
        dest = self.portfolio_owner()
        if dest is not None:
            return await self.router.forward(dest, request)
        return _raw_json(self.live.rendered("exposure"))

    async def pnl(self, request: web.Request) -> web.StreamResponse:
        dest = self.portfolio_owner()
        if dest is not None:
            return await self.router.forward(dest, request)
        return _raw_json(self.live.rendered("pnl"))

    async def history(self, request: web.Request) -> web.StreamResponse:
        now = self.service.clock.now()
        ttl = timedelta(seconds=self.service.settings.metrics_cache_ttl)
        start = parse_time(request, "from", now - ttl)
        end = parse_time(request, "to", now)
        if start > end:
            raise bad_parameter("from", "must not be after to", status=422)
        if end - start > max(HISTORY_MAX_SPAN, ttl):
            raise bad_parameter("from", "the range may span at most 31 days", status=422)
        dest = self.portfolio_owner()
        if dest is not None:
            return await self.router.forward(dest, request)
        window = self.service.settings.portfolio_window
        windows = self.live.windows(start.timestamp(), end.timestamp())
        return json_response(
            {
                "windows": windows,
                "count": len(windows),
                "window_seconds": window,
                "from": iso(start),
                "to": iso(end),
            }
        )


_REMOTE = object()
"""Stands for the totals record in a rendered answer whose exposure came from another
worker: never the stored record, so such an answer is checked against the exposure."""
_MINUTE = timedelta(minutes=1)
_FOREVER = datetime.max.replace(tzinfo=UTC)


def _held_changes_at(book: Book, now: datetime) -> datetime:
    """When the next `time_held_minutes` of any open leg ticks over."""
    until = _FOREVER
    for leg in book.legs:
        if leg.size != 0 and leg.opened_at is not None:
            held = max(0, (now - leg.opened_at) // _MINUTE)
            until = min(until, leg.opened_at + (held + 1) * _MINUTE)
    return until


def _raw_json(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="application/json")


def registered_routes(web_app: web.Application) -> set[tuple[str, str]]:
    """(METHOD, path template) of every route registered on the web app."""
    out = set()
    for route in web_app.router.routes():
        if route.method in ("HEAD", "OPTIONS", "*"):
            continue
        resource = route.resource
        if resource is None:
            continue
        out.add((route.method, resource.canonical))
    return out
