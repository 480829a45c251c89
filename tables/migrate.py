"""Versioned SQL migrations, applied idempotently under an advisory lock.

Files `migrations/NNNN_name.sql` are applied in order, each in its own transaction,
and recorded in `schema_migrations`. Several workers starting at once serialize on
the advisory lock, so each file runs exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import asyncpg

from pm_streams.logs import get_logger

log = get_logger("tables.migrate")
_LOCK_ID = 4_800_001


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    found = []
    for entry in resources.files("tables.migrations").iterdir():
        if entry.name.endswith(".sql"):
            number, _, rest = entry.name.partition("_")
            found.append(Migration(int(number), rest.removesuffix(".sql"), entry.read_text()))
    return sorted(found, key=lambda m: m.version)


async def apply_migrations(conn: asyncpg.Connection, schema: str = "public") -> list[int]:
    """Apply what is missing in `schema`; return the versions applied now."""
    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    await conn.execute(f'SET search_path TO "{schema}"')
    applied_now: list[int] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
            " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for migration in available():
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
            applied_now.append(migration.version)
            log.info(
                "migration_applied", version=migration.version, name=migration.name, schema=schema
            )
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    return applied_now
