"""Postgres connections follow `POSTGRES_SSLMODE` (the Debian cluster of scripts/services
offers TLS; the postgres image of docker-compose does not)."""

from __future__ import annotations

import pytest

from pm_streams.settings import Settings
from tables.db import connect

pytestmark = pytest.mark.integration


async def _tls(sslmode: str) -> tuple[bool, bool]:
    """(whether a connection made with `sslmode` is encrypted, whether the server offers TLS)."""
    conn = await connect(Settings.from_env({"POSTGRES_SSLMODE": sslmode}))
    try:
        tls = await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        return bool(tls), await conn.fetchval("SHOW ssl") == "on"
    finally:
        await conn.close()


async def test_connections_follow_the_sslmode() -> None:
    tls, offered = await _tls("disable")
    assert tls is False
    tls, _ = await _tls("prefer")
    assert tls is offered
    if offered:  # the Debian cluster: TLS when required
        assert (await _tls("require"))[0] is True
