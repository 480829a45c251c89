"""Real dependency checks for /health: each one talks to its service, with a timeout."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import AIOKafkaClient

from pm_streams.settings import Settings


def health_status(*, kafka: bool, others: tuple[bool, ...]) -> str:
    """healthy: every dependency answers; unhealthy: Kafka (the source of truth) does
    not; degraded: Kafka does, something else does not."""
    if not kafka:
        return "unhealthy"
    return "healthy" if all(others) else "degraded"


class KafkaCheck:
    """Bootstraps a client (metadata request) at most once per `ttl` seconds."""

    def __init__(self, settings: Settings, ttl: float = 1.0) -> None:
        self.settings = settings
        self.ttl = ttl
        self._at = 0.0
        self._ok = False

    async def __call__(self) -> bool:
        now = time.monotonic()
        if now - self._at < self.ttl:
            return self._ok
        client = AIOKafkaClient(
            bootstrap_servers=self.settings.kafka_bootstrap, request_timeout_ms=2000
        )
        try:
            async with asyncio.timeout(3):
                await client.bootstrap()
            self._ok = True
        except Exception:
            self._ok = False
        finally:
            await client.close()
        self._at = time.monotonic()
        return self._ok


class Readiness:
    """`/readyz`: this worker has finished a rebalance (partitions assigned, tables
    recovered), is not in another one, and Kafka answers."""

    def __init__(self, app: Any, kafka: KafkaCheck) -> None:
        self.app = app
        self.kafka = kafka
        self.assigned = False
        app.on_rebalance_complete.connect(self._on_rebalance_complete)

    async def _on_rebalance_complete(self, sender: Any = None, **kwargs: Any) -> None:
        self.assigned = True

    async def check(self) -> tuple[bool, str]:
        """(ready, reason) — the reason says what is missing."""
        if not self.assigned:
            return False, "waiting for the first partition assignment"
        if self.app.rebalancing or self.app.in_recovery:
            return False, "rebalancing or recovering tables"
        if not await self.kafka():
            return False, "kafka unreachable"
        return True, "ready"
