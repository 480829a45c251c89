"""SPEC §4.4 rev 2: `position_updated` events and the Postgres `positions` rows carry
`position_size_norm` against the portfolio's total exposure as of the change, never a
placeholder 0."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import asyncpg
import pytest

from tests.support.rabbit import collect, fill
from tests.support.worker import Deployment, WorkerProcess, publish

pytestmark = pytest.mark.integration


async def test_events_and_rows_carry_the_share_of_the_total_exposure(
    deployment: Deployment, workers: list[WorkerProcess]
) -> None:
    worker = WorkerProcess(deployment).start()
    workers.append(worker)
    await worker.wait_healthy()
    await publish(deployment.order_queue, [fill("n-1", "BUY", "1", "100", asset="NAUSDT")])
    await worker.wait_for(
        "/api/v1/portfolio/exposure",
        lambda st, b: st == 200 and Decimal(b["total_exposure_usdt"]) == 100,
    )
    await asyncio.sleep(1.0)  # the outputs follow the portfolio's changelogs
    await publish(deployment.order_queue, [fill("n-2", "BUY", "3", "100", asset="NBUSDT")])

    events = await collect(
        f"{deployment.output_prefix}.position_updated", lambda got: len(got) >= 2
    )
    norms = {m.body["asset"]: m.body["position_size_norm"] for m in events}  # type: ignore[index]
    assert norms == {"NAUSDT": "1", "NBUSDT": "0.75"}  # 100 of 100; 300 of 400

    conn = await asyncpg.connect(
        "postgresql://position_manager:position_manager@127.0.0.1/position_manager",
        server_settings={"search_path": deployment.schema},
    )
    try:
        for _ in range(100):
            rows = await conn.fetch("SELECT asset, position_size_norm FROM positions")
            if len(rows) == 2:
                break
            await asyncio.sleep(0.2)
        assert {r["asset"]: r["position_size_norm"] for r in rows} == {
            "NAUSDT": Decimal(1),
            "NBUSDT": Decimal("0.75"),
        }
    finally:
        await conn.close()
