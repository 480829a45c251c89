"""The REST API as aiohttp handlers on Faust's own web server (SPEC §7)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from aiohttp import web

from pm_streams.domain import MODES, Book, features, hedge_view, position_to_dict
from web.auth import auth_middleware
from web.errors import ApiError, bad_parameter, error_middleware, json_response
from web.health import KafkaCheck
from web.routing import Router

if TYPE_CHECKING:
    from pm_streams.app import Service

ASSET = re.compile(r"^[A-Z0-9]{2,20}$")
API_MODES = ("one-way", "hedge", "hedge-long", "hedge-short")


def parse_asset(raw: str) -> str:
    if not ASSET.match(raw):
        raise bad_parameter("asset", "must match ^[A-Z0-9]{2,20}$")
    return raw


def parse_mode(request: web.Request) -> str:
    mode = request.query.get("mode", "one-way")
    if mode not in API_MODES:
        raise bad_parameter("mode", f"must be one of {', '.join(API_MODES)}")
    return mode


def register(service: Service) -> None:
    web_app: web.Application = service.app.web.web_app  # type: ignore[attr-defined]
    web_app.middlewares.append(error_middleware)
    web_app.middlewares.append(auth_middleware(service.settings, service.metrics))
    handlers = Handlers(service)
    web_app.router.add_get("/health", handlers.health)
    web_app.router.add_get("/metrics", handlers.metrics)
    web_app.router.add_get("/api/v1/positions/{asset}", handlers.position)


class Handlers:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.router = Router(service.app)
        self.kafka_ok = KafkaCheck(service.settings)

    def book(self, asset: str) -> Book | None:
        return self.service.books.decode(asset, self.service.positions.get(asset))

    def total_exposure(self) -> Decimal:
        return Decimal(0)

    async def position(self, request: web.Request) -> web.StreamResponse:
        asset = parse_asset(request.match_info["asset"])
        mode = parse_mode(request)
        dest = self.router.owner(asset)
        if dest is not None:
            return await self.router.forward(dest, request)
        book = self.book(asset)
        now = self.service.clock.now()
        exposure = self.total_exposure()
        if mode == "hedge":
            legs = [leg for leg in (book.legs if book else ()) if leg.mode != "one-way"]
            if not legs:
                raise ApiError(404, "not_found", f"no hedge position for {asset}")
            by_mode = {leg.mode: features(leg, now, exposure) for leg in legs}
            return json_response(hedge_view(legs, features_by_mode=by_mode))
        leg = book.leg(mode) if book else None
        if leg is None:
            raise ApiError(404, "not_found", f"no {mode} position for {asset}")
        return json_response(position_to_dict(leg, features=features(leg, now, exposure)))

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        return web.Response(
            text=self.service.metrics.render(), content_type="text/plain", charset="utf-8"
        )

    async def health(self, request: web.Request) -> web.StreamResponse:
        service = self.service
        db = await service.db.ping()
        queue = service.bridge.connected
        kafka = await self.kafka_ok()
        checks = (db, queue, kafka)
        status = "healthy" if all(checks) else ("unhealthy" if not kafka else "degraded")
        body = {
            "status": status,
            "service": "position-manager",
            "database_connected": db,
            "queue_connected": queue,
            "kafka_connected": kafka,
            "positions_count": sum(1 for _ in service.positions),
            "modes": list(MODES),
            "timestamp": datetime.now(UTC).isoformat(),
        }
        return json_response(body, 503 if status == "unhealthy" else 200)
