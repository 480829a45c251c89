"""/health's dependency checks under a flood: one check a second however many callers,
on a Postgres connection of their own (not the sink's pool) that is made again after it
is killed."""

from __future__ import annotations

import asyncio

import asyncpg

from pm_streams.settings import Settings
from web.health import KafkaCheck, PostgresCheck


async def _backends(admin: asyncpg.Connection, pid: int) -> int:
    return int(await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid))


async def test_a_flood_of_checks_shares_one_check_and_one_connection() -> None:
    settings = Settings()
    check = PostgresCheck(settings, ttl=1.0)
    admin = await asyncpg.connect(settings.postgres_dsn)
    try:
        before = await admin.fetchval("SELECT count(*) FROM pg_stat_activity")
        assert all(await asyncio.gather(*(check() for _ in range(200))))
        conn = check._conn
        assert conn is not None
        pid = conn.get_server_pid()
        during = await admin.fetchval("SELECT count(*) FROM pg_stat_activity")
        assert during == before + 1  # one connection for 200 concurrent callers
        await asyncio.sleep(1.1)
        assert await check() and check._conn is conn  # the next second: the same connection
        # Killed under it: the next check finds it closed and connects again.
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
        await asyncio.sleep(1.1)
        assert await _backends(admin, pid) == 0
        assert await check() and check._conn is not None and check._conn is not conn
    finally:
        await check.close()
        await admin.close()


async def test_concurrent_kafka_checks_share_one_client() -> None:
    check = KafkaCheck(Settings(), ttl=60.0)
    try:
        assert all(await asyncio.gather(*(check() for _ in range(100))))
        client = check._client
        assert client is not None
        assert all(await asyncio.gather(*(check() for _ in range(100))))
        assert check._client is client
    finally:
        await check.close()
