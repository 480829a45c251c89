"""`POSITION_MANAGER_STORE=rocksdb://`: a worker restarts onto its non-empty RocksDB
store (after SIGTERM and after SIGKILL) and answers the same positions."""

from __future__ import annotations

import signal
from decimal import Decimal

import pytest

from tests.support.rabbit import fill
from tests.support.worker import Deployment, WorkerProcess, publish

pytestmark = pytest.mark.e2e


async def test_worker_restarts_onto_its_rocksdb_store(
    deployment: Deployment, workers: list[WorkerProcess]
) -> None:
    deployment.extra_env["POSITION_MANAGER_STORE"] = "rocksdb://"
    worker = WorkerProcess(deployment).start()
    workers.append(worker)
    await worker.wait_healthy()
    await publish(
        deployment.order_queue,
        [fill(f"r-{i}", "BUY", "1", str(100 + i), asset=a)
         for i in range(5) for a in ("BTCUSDT", "ETHUSDT")],
    )  # fmt: skip
    await worker.wait_versions({"BTCUSDT": 5, "ETHUSDT": 5}, timeout=60)
    assert worker.stop() == 0

    stores = list((deployment.tmp / "data").rglob("*.db"))
    assert stores, "no RocksDB store was written"
    assert any(any(p.iterdir()) for p in stores if p.is_dir())

    worker = WorkerProcess(deployment, port=worker.port).start()
    workers.append(worker)
    await worker.wait_healthy()
    body = await worker.wait_for(
        "/api/v1/positions/BTCUSDT", lambda st, b: st == 200 and b["version"] == 5
    )
    assert body["size"] == "5" and Decimal(body["average_entry_price"]) == 102

    await publish(deployment.order_queue, [fill("r-k", "SELL", "2", "110", asset="ETHUSDT")])
    await worker.wait_versions({"ETHUSDT": 6}, timeout=60)
    assert worker.signal(signal.SIGKILL) == -signal.SIGKILL
    worker = WorkerProcess(deployment, port=worker.port).start()
    workers.append(worker)
    await worker.wait_healthy()
    body = await worker.wait_for(
        "/api/v1/positions/ETHUSDT", lambda st, b: st == 200 and b["version"] == 6
    )
    assert body["size"] == "3"
    await publish(deployment.order_queue, [fill("r-k", "SELL", "2", "110", asset="ETHUSDT")])
    await publish(deployment.order_queue, [fill("r-z", "BUY", "1", "90", asset="ETHUSDT")])
    body = await worker.wait_for(
        "/api/v1/positions/ETHUSDT", lambda st, b: st == 200 and b["version"] == 7
    )
    assert body["size"] == "4"  # the re-sent r-k was a duplicate
