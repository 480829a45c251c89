"""Real dependency checks for /health: each one talks to its service, with a timeout."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
from aiokafka import AIOKafkaClient

from pm_streams.runtime import ownership
from pm_streams.settings import Settings


def health_status(*, kafka: bool, others: tuple[bool, ...]) -> str:
    """healthy: every dependency answers; unhealthy: Kafka (the source of truth) does
    not; degraded: Kafka does, something else does not."""
    if not kafka:
        return "unhealthy"
    return "healthy" if all(others) else "degraded"


class _CachedCheck:
    """A dependency check run at most once per `ttl` seconds; concurrent callers share
    the check in flight (a `/health` flood costs one check a second)."""

    def __init__(self, settings: Settings, ttl: float = 1.0) -> None:
        self.settings = settings
        self.ttl = ttl
        self._at = 0.0
        self._ok = False
        self._lock = asyncio.Lock()

    async def __call__(self) -> bool:
        if time.monotonic() - self._at < self.ttl:
            return self._ok
        async with self._lock:
            if time.monotonic() - self._at < self.ttl:
                return self._ok  # checked while this call waited
            self._ok = await self._check()
            self._at = time.monotonic()
            return self._ok

    async def _check(self) -> bool:
        raise NotImplementedError


class KafkaCheck(_CachedCheck):
    """A metadata request on one client kept for the process (no connection per call)."""

    _client: AIOKafkaClient | None = None

    async def _check(self) -> bool:
        try:
            async with asyncio.timeout(3):
                if self._client is None:
                    client = AIOKafkaClient(
                        bootstrap_servers=self.settings.kafka_bootstrap, request_timeout_ms=2000
                    )
                    await client.bootstrap()
                    self._client = client
                else:
                    await self._client.fetch_all_metadata()
            return True
        except Exception:
            if self._client is not None:
                client, self._client = self._client, None
                await client.close()
            return False

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


class PostgresCheck(_CachedCheck):
    """`SELECT 1` on a connection of its own: not the sink's pool, which a `/health`
    flood must not starve."""

    _conn: Any = None

    async def _check(self) -> bool:
        try:
            async with asyncio.timeout(3):
                if self._conn is None or self._conn.is_closed():
                    self._conn = await asyncpg.connect(self.settings.postgres_dsn, timeout=2)
                return bool(await self._conn.fetchval("SELECT 1") == 1)
        except Exception:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.terminate()
            return False

    async def close(self) -> None:
        if self._conn is not None and not self._conn.is_closed():
            await self._conn.close()


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
        if ownership.reassigning(self.app):
            return False, "rebalancing or recovering tables"
        if not await self.kafka():
            return False, "kafka unreachable"
        return True, "ready"
