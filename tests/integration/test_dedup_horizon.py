"""SPEC §4.1 rev 2 against a real worker: a fill re-sent 1,000 fills later, and one
re-sent after the worker was SIGKILLed, is a duplicate (applied once, one ledger row),
and the position's changelog record does not grow with the fills."""

from __future__ import annotations

import asyncio
import signal
from decimal import Decimal

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from tests.support.rabbit import fill
from tests.support.worker import Deployment, WorkerProcess, publish

pytestmark = pytest.mark.integration

ASSET = "DEDUPUSDT"


def buys(start: int, n: int) -> list[dict[str, str]]:
    return [
        fill(f"d-{i}", "BUY", "0.001", "100", asset=ASSET, fee="0.01")
        for i in range(start, start + n)
    ]


async def fill_ids_in_records(deployment: Deployment) -> int:
    """How many fill ids the asset's changelog records carry in all (none since the
    fill-id table: the records used to carry up to 256 each, ~11 KB)."""
    consumer = AIOKafkaConsumer(
        f"{deployment.app_id}-positions-changelog",
        bootstrap_servers="127.0.0.1:9092",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        ids = records = 0
        while True:
            batch = await consumer.getmany(timeout_ms=2000)
            if not batch:
                assert records > 0
                return ids
            for part in batch.values():
                for r in part:
                    if r.key == ASSET.encode() and r.value:
                        records += 1
                        ids += len(orjson.loads(r.value)["fill_ids"])
    finally:
        await consumer.stop()


async def test_resent_fills_are_duplicates_across_a_thousand_fills_and_a_sigkill(
    deployment: Deployment, workers: list[WorkerProcess]
) -> None:
    worker = WorkerProcess(deployment).start()
    workers.append(worker)
    await worker.wait_healthy()

    await publish(deployment.order_queue, buys(0, 1001))
    await worker.wait_versions({ASSET: 1001}, timeout=120)
    assert await fill_ids_in_records(deployment) == 0

    # The first fill again, 1,000 fills of the same asset later (an order service
    # replaying its last hour after a restart): a duplicate.
    await publish(deployment.order_queue, [*buys(0, 1), *buys(1001, 1)])
    body = await worker.wait_for(
        f"/api/v1/positions/{ASSET}", lambda st, b: st == 200 and b["version"] == 1002
    )
    assert Decimal(body["size"]) == Decimal("1.002")

    # SIGKILL, restart from the changelogs, then the whole first hundred again.
    assert worker.signal(signal.SIGKILL) == -signal.SIGKILL
    worker = WorkerProcess(deployment, port=worker.port).start()
    workers.append(worker)
    await worker.wait_healthy()
    await publish(deployment.order_queue, [*buys(0, 100), *buys(1002, 1)])
    body = await worker.wait_for(
        f"/api/v1/positions/{ASSET}", lambda st, b: st == 200 and b["version"] == 1003
    )
    assert Decimal(body["size"]) == Decimal("1.003")
    assert Decimal(body["total_fees"]) == Decimal("10.03")  # each fee paid once

    _, metrics = await worker.get("/metrics")
    (dups,) = [
        int(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith('pm_engine_notes_total{kind="duplicate_fill"}')
    ]
    assert dups >= 100  # the hundred re-sent (a replay after the kill may count again)

    conn = await asyncpg.connect(
        "postgresql://position_manager:position_manager@127.0.0.1/position_manager",
        server_settings={"search_path": deployment.schema},
    )
    try:
        for _ in range(100):
            rows = await conn.fetchval(
                "SELECT count(*) FROM position_fills WHERE asset = $1", ASSET
            )
            if rows == 1003:
                break
            await asyncio.sleep(0.2)
        assert rows == 1003
    finally:
        await conn.close()
