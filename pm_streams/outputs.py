"""`pm-streams outputs`: the Postgres sink and the RabbitMQ republisher in their own process.

With `POSITION_MANAGER_OUTPUTS=separate` the workers only apply events, keep their
tables and answer the API; the side effects that follow every change (ledger rows,
position rows, republished events) run here, under their own GIL. Both are Kafka
consumers with their own consumer groups, so several outputs processes share the
partitions like workers do, and a worker or an outputs process can restart without
the other noticing. Kafka is the buffer between them: nothing is committed before
Postgres has stored it or RabbitMQ has confirmed it.

The process serves `GET /health` and `GET /metrics` (no key, like the worker's) on
its own port.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from mode import Service

from bridges.outbound import Republisher
from pm_streams.clock import Clock, SystemClock
from pm_streams.consumer import BatchConsumer
from pm_streams.deps import Deps
from pm_streams.domain import iso
from pm_streams.exposure import ExposureFollower
from pm_streams.metrics import Metrics
from pm_streams.runtime.heap import HeapKeeper
from pm_streams.settings import Settings
from pm_streams.stored import SharedDecode
from tables.db import Database
from tables.sink import PostgresSink
from web.errors import json_response
from web.health import KafkaCheck, PostgresCheck, health_status


class OutputsWeb(Service):
    """The outputs process's `/health` and `/metrics`."""

    def __init__(self, outputs: Outputs, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.outputs = outputs
        self.kafka_ok = KafkaCheck(outputs.settings)
        self.postgres_ok = PostgresCheck(outputs.settings)
        self.runner: web.AppRunner | None = None

    async def on_start(self) -> None:
        app = web.Application()
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        s = self.outputs.settings
        await web.TCPSite(self.runner, s.web_bind, s.port).start()

    async def on_stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        await self.kafka_ok.close()
        await self.postgres_ok.close()

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        text = self.outputs.metrics.render()
        return web.Response(text=text, content_type="text/plain", charset="utf-8")

    async def health(self, request: web.Request) -> web.StreamResponse:
        o = self.outputs
        db = await self.postgres_ok()
        channel = o.republisher.channel
        queue = channel is not None and not channel.is_closed
        kafka = await self.kafka_ok()
        status = health_status(kafka=kafka, others=(db, queue))
        body = {
            "status": status,
            "service": "position-manager-outputs",
            "database_connected": db,
            "queue_connected": queue,
            "kafka_connected": kafka,
            "consumers": {c.name: _consumer_state(c) for c in (o.sink, o.republisher)},
            "timestamp": iso(datetime.now(UTC)),
        }
        return json_response(body, 503 if status == "unhealthy" else 200)


def _consumer_state(consumer: BatchConsumer) -> dict[str, Any]:
    handled = consumer.last_handled_ms
    return {
        "records": consumer.metrics.value("pm_consumer_records_total", consumer=consumer.name),
        "newest_handled_at": (
            iso(datetime.fromtimestamp(handled / 1000, UTC)) if handled else None
        ),
    }


@dataclass(frozen=True)
class Outputs:
    """Everything an outputs process owns, wired once."""

    settings: Settings
    metrics: Metrics
    db: Database
    sink: PostgresSink
    republisher: Republisher
    exposure: ExposureFollower

    @property
    def services(self) -> tuple[Service, ...]:
        return (
            self.db, self.exposure, self.sink, self.republisher, OutputsWeb(self),
            HeapKeeper(self.metrics),
        )  # fmt: skip


def build_outputs(settings: Settings, *, clock: Clock | None = None) -> Outputs:
    deps = Deps(settings, Metrics.of_service(), clock or SystemClock())
    db = Database(settings)
    follower = ExposureFollower(settings)
    decode = SharedDecode()  # the sink's and the republisher's changelog records
    return Outputs(
        settings=settings,
        metrics=deps.metrics,
        db=db,
        sink=PostgresSink(deps, db, follower.exposure, decode),
        republisher=Republisher(deps, follower.exposure, decode),
        exposure=follower,
    )
