"""TC-027 as the SPEC decides it: with Postgres unreachable the live API still answers
(positions and portfolio come from the Kafka-backed tables), `/health` says
`database_connected: false` (degraded, 200), and only answers that need Postgres
(snapshots) get 503 with Retry-After."""

from __future__ import annotations

import aiohttp
import pytest

from tests.support.worker import API_KEY, Deployment, WorkerProcess, free_port, publish

pytestmark = pytest.mark.integration


async def test_tc027_database_down(deployment: Deployment, workers: list[WorkerProcess]) -> None:
    # A port nothing listens on: Postgres is "down" for this worker only (the shared
    # Postgres keeps serving everyone else's tests).
    deployment.extra_env["POSTGRES_PORT"] = str(free_port())
    worker = WorkerProcess(deployment).start()
    workers.append(worker)
    health = await worker.wait_for(
        "/health", lambda s, b: s == 200 and b.get("kafka_connected") and b.get("queue_connected")
    )
    assert health["database_connected"] is False and health["status"] == "degraded"
    await publish(
        deployment.position_queue,
        [
            {
                "event_type": "position",
                "data": {
                    "symbol": "BTCUSDT",
                    "side": "Buy",
                    "size": "1.0",
                    "avgPrice": "50000",
                    "markPrice": "50000",
                    "mode": "one-way",
                },
            }
        ],
    )
    body = await worker.wait_for("/api/v1/positions", lambda s, b: s == 200 and b["count"] == 1)
    assert body["positions"][0]["size"] == "1"
    body = await worker.wait_for(
        "/api/v1/portfolio", lambda s, b: s == 200 and b["open_positions_count"] == 1
    )
    assert body["total_exposure_usdt"] == "50000"
    async with aiohttp.ClientSession() as s:
        for method, path in (
            ("GET", "/api/v1/positions/BTCUSDT/snapshots"),
            ("POST", "/api/v1/positions/BTCUSDT/snapshot"),
        ):
            async with s.request(method, worker.url + path, headers={"X-API-Key": API_KEY}) as resp:
                assert resp.status == 503, (path, await resp.text())
                assert (await resp.json())["error"]["code"] == "unavailable"
    assert "postgres_unavailable" in worker.log_path.read_text()
