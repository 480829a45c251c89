"""Two (then three) real workers: every route answers the same from either worker, a
request during a rebalance gets 503 + Retry-After or the right answer (never a wrong
one), and a key's rate limit is not double counted when a request is forwarded."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import aiohttp
import orjson
import pytest

from tests.support.worker import API_KEY, Deployment, WorkerProcess, publish

pytestmark = pytest.mark.integration

ASSETS = [f"T{i}USDT" for i in range(12)]
TIGHT_KEY = "tight-two-workers-key"


def ws(asset: str, size: str, mark: str) -> dict[str, Any]:
    return {
        "event_type": "position",
        "data": {
            "symbol": asset,
            "side": "Buy",
            "size": size,
            "avgPrice": "100",
            "markPrice": mark,
            "unrealisedPnl": str((Decimal(mark) - 100) * Decimal(size)),
            "realisedPnl": "1",
            "mode": "one-way",
        },
    }


async def get(
    session: aiohttp.ClientSession, worker: WorkerProcess, path: str, key: str = API_KEY, **q: str
) -> tuple[int, Any, Any]:
    async with session.get(
        worker.url + path,
        params=q,
        headers={"X-API-Key": key},
        timeout=aiohttp.ClientTimeout(total=15),
    ) as resp:
        raw = await resp.read()
        return resp.status, orjson.loads(raw), resp.headers


def strip(body: Any) -> Any:
    """Drop the one field that depends on the second of the request."""
    if isinstance(body, dict):
        return {k: strip(v) for k, v in body.items() if k != "time_held_minutes"}
    if isinstance(body, list):
        return [strip(v) for v in body]
    return body


async def settled(workers: list[WorkerProcess], n_assets: int) -> None:
    """Every worker owns partitions and sees every asset through the API."""
    for w in workers:
        await w.wait_for("/health", lambda s, b: s == 200 and b["partitions_owned"] > 0, timeout=90)
    for w in workers:
        await w.wait_for(
            "/api/v1/positions", lambda s, b: s == 200 and b["count"] == n_assets, timeout=60
        )


async def test_two_workers_answer_the_same_and_rebalance_never_lies(
    deployment: Deployment, workers: list[WorkerProcess]
) -> None:
    deployment.extra_env["POSITION_MANAGER_API_KEYS"] = f"tight:{TIGHT_KEY}:5"
    # 6 partitions: a third worker must take partitions from both (faust's assignor is
    # sticky with capacity ceil(partitions / workers)), so ownership really moves.
    deployment.partitions = 6
    a = WorkerProcess(deployment).start()
    workers.append(a)
    await a.wait_healthy()
    sizes = {asset: str(i + 1) for i, asset in enumerate(ASSETS)}
    await publish(deployment.position_queue, [ws(x, sizes[x], "110") for x in ASSETS])
    b = WorkerProcess(deployment).start()
    workers.append(b)
    await b.wait_healthy()
    await settled([a, b], len(ASSETS))
    total = sum(Decimal(s) * 110 for s in sizes.values())
    await a.wait_for(
        "/api/v1/portfolio/exposure",
        lambda s, body: s == 200 and Decimal(body["total_exposure_usdt"]) == total,
    )

    paths: list[tuple[str, dict[str, str]]] = [
        ("/api/v1/positions", {}),
        ("/api/v1/positions", {"size_min": "3", "size_max": "7"}),
        ("/api/v1/portfolio", {"include_positions": "true"}),
        ("/api/v1/portfolio/exposure", {}),
        ("/api/v1/portfolio/pnl", {}),
        (
            "/api/v1/portfolio/history",
            {"from": "2020-01-01T00:00:00Z", "to": "2020-01-05T00:00:00Z"},
        ),
        *[(f"/api/v1/positions/{x}", {}) for x in ASSETS],
        *[(f"/api/v1/positions/{x}/snapshots", {}) for x in ASSETS[:3]],
    ]
    async with aiohttp.ClientSession() as s:
        for path, q in paths:
            sa, ba, _ = await get(s, a, path, **q)
            sb, bb, _ = await get(s, b, path, **q)
            assert sa == sb == 200, (path, sa, sb, ba, bb)
            assert strip(ba) == strip(bb), path
        _, listing, _ = await get(s, a, "/api/v1/positions")
        assert {p["asset"]: p["size"] for p in listing["positions"]} == sizes
        health_a = (await get(s, a, "/health"))[1]
        health_b = (await get(s, b, "/health"))[1]
        assert health_a["partitions_owned"] + health_b["partitions_owned"] == deployment.partitions
        assert health_a["portfolio_owner"] != health_b["portfolio_owner"]

        # Rate limits hold per key and a forwarded request is counted once.
        statuses = []
        for x in ASSETS[:7]:
            status, _, headers = await get(s, a, f"/api/v1/positions/{x}", key=TIGHT_KEY)
            statuses.append(status)
        assert statuses == [200] * 5 + [429] * 2
        assert int(headers["Retry-After"]) >= 1

        # A third worker joins, then leaves: requests keep coming to both old workers.
        stop = asyncio.Event()
        seen: dict[int, int] = {}
        wrong: list[Any] = []

        async def hammer(worker: WorkerProcess) -> None:
            i = 0
            while not stop.is_set():
                asset = ASSETS[i % len(ASSETS)]
                i += 1
                try:
                    status, body, headers = await get(s, worker, f"/api/v1/positions/{asset}")
                except (aiohttp.ClientError, TimeoutError) as exc:
                    wrong.append(("transport", repr(exc)))
                    continue
                seen[status] = seen.get(status, 0) + 1
                if status == 200:
                    if body["size"] != sizes[asset]:
                        wrong.append((asset, body))
                elif status == 503:
                    if "Retry-After" not in headers:
                        wrong.append(("503 without Retry-After", body))
                else:
                    wrong.append((status, body))
                await asyncio.sleep(0.005)

        tasks = [asyncio.create_task(hammer(w)) for w in (a, b)]
        c = WorkerProcess(deployment).start()
        workers.append(c)
        await c.wait_healthy()
        await settled([a, b, c], len(ASSETS))
        assert c.stop() == 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            h = [(await get(s, w, "/health"))[1] for w in (a, b)]
            if sum(x["partitions_owned"] for x in h) == deployment.partitions and all(
                x["partitions_ready"] for x in h
            ):
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(1)
        stop.set()
        await asyncio.gather(*tasks)
        assert not wrong, wrong[:5]
        assert seen.get(200, 0) > 50, seen
        # After the rebalances both workers still agree.
        for path, q in paths[:6]:
            sa, ba, _ = await get(s, a, path, **q)
            sb, bb, _ = await get(s, b, path, **q)
            assert sa == sb == 200 and strip(ba) == strip(bb), path
    print("statuses during rebalances:", seen)
