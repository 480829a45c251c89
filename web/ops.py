"""The operational endpoints: /health, /livez, /readyz, /metrics and the API's own
description (OpenAPI document and Swagger UI). None needs an API key."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from aiohttp import web

from pm_streams.context import Service
from pm_streams.domain import MODES, iso
from web.docs import DocsPage
from web.errors import json_response
from web.health import KafkaCheck, PostgresCheck, Readiness, health_status
from web.openapi import document
from web.routing import Router


class Operations:
    def __init__(
        self,
        service: Service,
        router: Router,
        registered_routes: Callable[[web.Application], set[tuple[str, str]]],
    ) -> None:
        self.service = service
        self.router = router
        self.registered_routes = registered_routes
        self.kafka_ok = KafkaCheck(service.settings)
        self.postgres_ok = PostgresCheck(service.settings)
        self.readiness = Readiness(service.app, self.kafka_ok)
        self.docs = DocsPage()
        self.positions_changelog = service.settings.kafka.positions_changelog

    async def openapi(self, request: web.Request) -> web.StreamResponse:
        return json_response(document(self.registered_routes(request.app)))

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        return web.Response(
            text=self.service.metrics.render(), content_type="text/plain", charset="utf-8"
        )

    async def livez(self, request: web.Request) -> web.StreamResponse:
        return json_response({"status": "alive"})

    async def readyz(self, request: web.Request) -> web.StreamResponse:
        ready, reason = await self.readiness.check()
        return json_response(
            {"status": "ready" if ready else "not_ready", "reason": reason}, 200 if ready else 503
        )

    async def health(self, request: web.Request) -> web.StreamResponse:
        service = self.service
        db = await self.postgres_ok()
        queue = service.bridge.connected
        kafka = await self.kafka_ok()
        status = health_status(kafka=kafka, others=(db, queue))
        body = {
            "status": status,
            "service": "position-manager",
            "database_connected": db,
            "queue_connected": queue,
            "kafka_connected": kafka,
            "positions_count": len(service.positions),  # no scan of the table
            "partitions_ready": self.router.ready(),
            "partitions_owned": self.router.active_count(self.positions_changelog),
            "portfolio_owner": service.portfolio.owner(),
            "validation": service.validator.summary(),
            "modes": list(MODES),
            "timestamp": iso(datetime.now(UTC)),
        }
        return json_response(body, 503 if status == "unhealthy" else 200)
