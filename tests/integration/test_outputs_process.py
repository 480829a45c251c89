"""POSITION_MANAGER_OUTPUTS=separate: the worker applies and answers, `pm-streams outputs`
(its own process) writes Postgres and republishes, and catches up on what it missed."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import pytest

from tests.support.rabbit import fill_stream, read_queue, recompute
from tests.support.worker import Deployment, WorkerProcess, publish

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

DSN = "postgresql://position_manager:position_manager@127.0.0.1:5432/position_manager"


async def _rows(deployment: Deployment) -> dict[str, int]:
    conn = await asyncpg.connect(DSN, server_settings={"search_path": deployment.schema})
    try:
        rows = await conn.fetch("SELECT asset, version FROM positions")
    finally:
        await conn.close()
    return {r["asset"]: r["version"] for r in rows}


async def _published(deployment: Deployment, want: set[tuple[str, int]]) -> set[tuple[str, int]]:
    seen: set[tuple[str, int]] = set()
    deadline = time.monotonic() + 60
    while not want <= seen and time.monotonic() < deadline:
        for kind in ("position_updated", "position_closed"):
            got = await read_queue(f"{deployment.output_prefix}.{kind}")
            seen |= {(m.body["asset"], m.body["version"]) for m in got}  # type: ignore[index]
        await asyncio.sleep(0.3)
    return seen


async def test_worker_leaves_outputs_to_the_outputs_process(
    tmp_path: Any, workers: list[WorkerProcess]
) -> None:
    deployment = Deployment(tmp_path, extra_env={"POSITION_MANAGER_OUTPUTS": "separate"})
    worker = WorkerProcess(deployment).start()
    workers.append(worker)
    await worker.wait_healthy()
    fills = fill_stream(["SEPAUSDT", "SEPBUSDT"], 40, tag="sep")
    await publish(deployment.order_queue, fills)
    expected = recompute(fills)
    versions = {a: b.legs[0].version for a, b in expected.items()}
    await worker.wait_versions(versions, timeout=60)
    # The worker applied everything; it writes no position row itself.
    await asyncio.sleep(2)
    assert await _rows(deployment) == {}

    outputs = WorkerProcess(deployment, command="outputs").start()
    workers.append(outputs)
    health = await outputs.wait_healthy()
    assert health["service"] == "position-manager-outputs"
    assert health["database_connected"] and health["queue_connected"]

    deadline = time.monotonic() + 60
    while (rows := await _rows(deployment)) != versions:
        assert time.monotonic() < deadline, f"sink behind: {rows} != {versions}"
        await asyncio.sleep(0.3)
    want = {(a, v) for a, last in versions.items() for v in range(1, last + 1)}
    assert await _published(deployment, want) >= want

    status, text = await outputs.get("/metrics")
    assert status == 200
    assert 'pm_consumer_records_total{consumer="sink"}' in text
    assert outputs.stop() == 0  # SIGTERM: clean stop
