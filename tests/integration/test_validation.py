"""Validation (SPEC §6) with real worker subprocesses, Kafka, RabbitMQ and Postgres:
a seeded discrepancy is detected and fixed through the position's own partition; a
missing exchange report is never read as flat; the size-discrepancy grace validation
adopts the exchange size once the grace has passed."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from pm_streams.settings import Settings
from tests.integration.test_snapshots import post
from tests.support.rabbit import fill
from tests.support.worker import Deployment, WorkerProcess, publish

pytestmark = pytest.mark.integration

EXEC_MS = 1736935800000  # 2025-01-15T10:10:00Z, the fills' executed_at


def exchange(asset: str, side: str, size: str, avg: str, seq: int) -> dict[str, Any]:
    return {
        "event_type": "position",
        "trace_id": f"ws-{asset}-{seq}",
        "data": {
            "symbol": asset,
            "side": side,
            "size": size,
            "avgPrice": avg,
            "markPrice": avg,
            "positionIdx": 0,
            "seq": seq,
            "updatedTime": str(EXEC_MS + 60_000 * seq),
        },
    }


async def pg(deployment: Deployment) -> asyncpg.Connection:
    return await asyncpg.connect(
        Settings().postgres_dsn, server_settings={"search_path": deployment.schema}
    )


async def ledger_rows(deployment: Deployment, asset: str) -> int:
    conn = await pg(deployment)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM position_fills WHERE asset=$1", asset))
    finally:
        await conn.close()


async def wait_ledger(deployment: Deployment, asset: str, n: int) -> None:
    for _ in range(150):
        if await ledger_rows(deployment, asset) >= n:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"ledger of {asset} never reached {n} rows")


async def test_seeded_discrepancy_detected_and_fixed_missing_report_never_flat(
    deployment: Deployment, workers: list[WorkerProcess]
) -> None:
    deployment.extra_env["POSITION_MANAGER_SIZE_RECONCILE_GRACE"] = "600"
    worker = WorkerProcess(deployment).start()
    workers.append(worker)
    await worker.wait_healthy()

    eth = fill("ETHUSDT-1", "BUY", "2.0", "3000", asset="ETHUSDT", fee="1.5")
    eth["execution_fees"] = "0"
    await publish(
        deployment.order_queue,
        [eth, fill("SOLUSDT-1", "BUY", "3", "150", asset="SOLUSDT", fee="1.5")],
    )
    await worker.wait_for("/api/v1/positions/SOLUSDT", lambda s, b: s == 200)
    await publish(deployment.position_queue, [exchange("ETHUSDT", "Buy", "2.5", "3000", 1)])
    before = await worker.wait_for(
        "/api/v1/positions/ETHUSDT", lambda s, b: s == 200 and b["exchange_size"] == "2.5"
    )
    assert before["size"] == "2"  # trailing zeros stripped (SPEC §4 rev 2)
    await wait_ledger(deployment, "ETHUSDT", 1)

    # Detected, not fixed.
    status, result = await post(
        worker, "/api/v1/positions/ETHUSDT/validate", fix_discrepancies="false"
    )
    assert status == 200, result
    assert result["is_valid"] is False and result["fixed"] is False
    assert result["ledger_checked"] is True
    assert {"field": "size", "stored": "2.0", "expected": "2.5", "source": "exchange"} in result[
        "discrepancies"
    ]
    assert not [d for d in result["discrepancies"] if d["source"] == "ledger"]
    assert result["updated_position"]["version"] == before["version"]

    # Seed a ledger discrepancy: the fill row disappears from Postgres.
    conn = await pg(deployment)
    try:
        await conn.execute("DELETE FROM position_fills WHERE asset = 'ETHUSDT'")
    finally:
        await conn.close()
    status, result = await post(
        worker, "/api/v1/positions/ETHUSDT/validate", fix_discrepancies="false"
    )
    assert {"field": "size", "stored": "2.0", "expected": "0", "source": "ledger"} in result[
        "discrepancies"
    ], result

    # Fixed (default): the exchange's size wins, as an applied change (version bump).
    status, result = await post(worker, "/api/v1/positions/ETHUSDT/validate")
    assert status == 200 and result["fixed"] is True, result
    assert result["updated_position"]["size"] == "2.5"
    assert result["updated_position"]["version"] == before["version"] + 1
    body = await worker.wait_for("/api/v1/positions/ETHUSDT", lambda s, b: s == 200)
    assert body["size"] == "2.5"
    # The correction is in the ledger as an adjustment: the ledger explains the state again.
    await wait_ledger(deployment, "ETHUSDT", 1)
    status, result = await post(worker, "/api/v1/positions/ETHUSDT/validate")
    assert result["is_valid"] is True and result["discrepancies"] == [], result

    # No exchange report: nothing is read as flat, nothing is fixed.
    status, result = await post(worker, "/api/v1/positions/SOLUSDT/validate")
    assert status == 200 and result["is_valid"] is True, result
    assert result["exchange_checked"] is False and "no exchange report" in result["error_message"]
    conn = await pg(deployment)
    try:
        await conn.execute("DELETE FROM position_fills WHERE asset = 'SOLUSDT'")
    finally:
        await conn.close()
    status, result = await post(worker, "/api/v1/positions/SOLUSDT/validate")
    assert result["is_valid"] is False and result["fixed"] is False, result
    assert {(d["field"], d["source"]) for d in result["discrepancies"]} == {
        ("size", "ledger"),
        ("total_fees", "ledger"),
    }
    body = await worker.wait_for("/api/v1/positions/SOLUSDT", lambda s, b: s == 200)
    assert body["size"] == "3" and body["version"] == 1

    # Errors name the parameter; unknown position is 404.
    status, body = await post(
        worker, "/api/v1/positions/SOLUSDT/validate", fix_discrepancies="maybe"
    )
    assert status == 400 and "fix_discrepancies" in body["error"]["message"]
    status, body = await post(worker, "/api/v1/positions/NOPEUSDT/validate")
    assert status == 404

    # Counters in /health and /metrics.
    status, health = await worker.get("/health")
    v = health["validation"]
    assert v["validations"] >= 6 and v["discrepancies"] >= 4 and v["fixes"] == 1, v
    status, text = await worker.get("/metrics")
    assert "pm_validation_fixes_total 1" in text
    assert 'pm_consumer_lag_seconds{consumer="sink"}' in text


async def test_grace_validation_adopts_exchange_size(
    deployment: Deployment, workers: list[WorkerProcess]
) -> None:
    deployment.extra_env["POSITION_MANAGER_SIZE_RECONCILE_GRACE"] = "2"
    worker = WorkerProcess(deployment).start()
    workers.append(worker)
    await worker.wait_healthy()
    await publish(
        deployment.order_queue,
        [fill("BTCUSDT-1", "BUY", "1.0", "50000", asset="BTCUSDT", fee="1.5")],
    )
    await worker.wait_for("/api/v1/positions/BTCUSDT", lambda s, b: s == 200)
    # The exchange reports 1.3: a fill in flight explains it within the grace...
    await publish(deployment.position_queue, [exchange("BTCUSDT", "Buy", "1.3", "50000", 1)])
    await publish(
        deployment.order_queue,
        [fill("BTCUSDT-2", "BUY", "0.3", "50000", asset="BTCUSDT", fee="1.5")],
    )
    body = await worker.wait_for(
        "/api/v1/positions/BTCUSDT", lambda s, b: s == 200 and b["size"] == "1.3"
    )
    version = body["version"]
    # ... then 1.8, which nothing explains: adopted after the grace (TC-003).
    await publish(deployment.position_queue, [exchange("BTCUSDT", "Buy", "1.8", "50000", 2)])
    body = await worker.wait_for(
        "/api/v1/positions/BTCUSDT", lambda s, b: s == 200 and b["exchange_size"] == "1.8"
    )
    assert body["size"] == "1.3"
    body = await worker.wait_for(
        "/api/v1/positions/BTCUSDT", lambda s, b: s == 200 and b["size"] == "1.8", timeout=30
    )
    assert body["version"] == version + 2  # the exchange push, then the correction
    # The validator counts the fix once it has seen the correction's version in the
    # table, a moment after the API shows it.
    health = await worker.wait_for("/health", lambda s, b: b["validation"]["fixes"] >= 1)
    await asyncio.sleep(1)
    _status, health = await worker.get("/health")
    assert health["validation"]["fixes"] == 1, health
