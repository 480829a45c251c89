"""The `portfolio_metrics` rows: closed windows of the portfolio's history (SPEC §5),
written by the portfolio agent's background writer."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

import asyncpg

from pm_streams.domain.portfolio import time_of

UPSERT_WINDOW = """
INSERT INTO portfolio_metrics (window_start, window_end, total_exposure_usdt,
    net_exposure_usdt, total_unrealized_pnl_usdt, total_realized_pnl_usdt, total_pnl_usdt,
    open_positions_count, long_positions_count, short_positions_count, calculated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT (window_start) DO UPDATE SET window_end = EXCLUDED.window_end,
    total_exposure_usdt = EXCLUDED.total_exposure_usdt,
    net_exposure_usdt = EXCLUDED.net_exposure_usdt,
    total_unrealized_pnl_usdt = EXCLUDED.total_unrealized_pnl_usdt,
    total_realized_pnl_usdt = EXCLUDED.total_realized_pnl_usdt,
    total_pnl_usdt = EXCLUDED.total_pnl_usdt,
    open_positions_count = EXCLUDED.open_positions_count,
    long_positions_count = EXCLUDED.long_positions_count,
    short_positions_count = EXCLUDED.short_positions_count,
    calculated_at = EXCLUDED.calculated_at
"""


async def upsert_windows(pool: asyncpg.Pool, rows: Iterable[Mapping[str, Any]]) -> None:
    """Upsert window rows (`domain.portfolio.window_row`), 10 s at most."""
    async with asyncio.timeout(10):
        await pool.executemany(
            UPSERT_WINDOW,
            [
                (
                    time_of(r["window_start"]),
                    time_of(r["window_end"]),
                    Decimal(r["total_exposure_usdt"]),
                    Decimal(r["net_exposure_usdt"]),
                    Decimal(r["total_unrealized_pnl_usdt"]),
                    Decimal(r["total_realized_pnl_usdt"]),
                    Decimal(r["total_pnl_usdt"]),
                    r["open_positions_count"],
                    r["long_positions_count"],
                    r["short_positions_count"],
                    time_of(r["calculated_at"]) or time_of(r["window_end"]),
                )
                for r in rows
            ],
        )
