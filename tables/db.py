"""The Postgres connection pool as a service of the worker."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import asyncpg
from mode import Service

from pm_streams.backoff import Backoff
from pm_streams.logs import get_logger
from pm_streams.settings import Settings
from tables.migrate import apply_migrations

log = get_logger("tables.db")


async def text_numerics(conn: asyncpg.Connection) -> None:
    """Send and read `numeric` as text: a value goes as the text the API shows (or
    `str` of a Decimal) and comes back as the Decimal of Postgres's own text, exact
    both ways. asyncpg's binary numeric encoder took the digits apart per value: twice
    the sink's CPU per row of its text form (about 17 against 9 us for a position row
    of 13 numbers)."""
    await conn.set_type_codec(
        "numeric", encoder=str, decoder=Decimal, schema="pg_catalog", format="text"
    )


async def connect(settings: Settings) -> asyncpg.Connection:
    return await asyncpg.connect(
        settings.postgres_dsn,
        timeout=5,
        server_settings={"search_path": settings.postgres_schema},
    )


async def migrate(settings: Settings) -> list[int]:
    conn = await connect(settings)
    try:
        return await apply_migrations(conn, settings.postgres_schema)
    finally:
        await conn.close()


class Database(Service):
    """Owns the asyncpg pool; applies migrations at start-up (retrying until Postgres answers)."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.pool: asyncpg.Pool | None = None

    async def on_start(self) -> None:
        # Connect in the background: a worker starts (and processes positions)
        # while Postgres is down; /health says so until the pool exists.
        self.add_future(self._connect())

    async def _connect(self) -> None:
        backoff = Backoff()
        while not self.should_stop:
            try:
                applied = await migrate(self.settings)
                self.pool = await asyncpg.create_pool(
                    self.settings.postgres_dsn,
                    min_size=1,
                    max_size=4,
                    timeout=5,
                    command_timeout=10,
                    server_settings={"search_path": self.settings.postgres_schema},
                    init=text_numerics,
                )
                log.info("postgres_ready", migrations_applied=applied)
                return
            except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
                delay = backoff.failed()
                log.warning("postgres_unavailable", error=repr(exc), retry_in=delay)
                await asyncio.sleep(delay)

    async def on_stop(self) -> None:
        if self.pool is not None:
            await self.pool.close()

    async def ping(self) -> bool:
        if self.pool is None:
            return False
        try:
            async with asyncio.timeout(2):
                return bool(await self.pool.fetchval("SELECT 1") == 1)
        except Exception:
            return False
