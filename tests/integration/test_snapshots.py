"""Snapshots (SPEC §6): retention against real Postgres; on demand, periodic (no
duplicates across two workers), paging and events with real worker subprocesses."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import aiohttp
import orjson
import pytest

from pm_streams.clock import SystemClock
from pm_streams.deps import Deps
from tables.snapshots import INSERT_SNAPSHOT, Snapshots
from tests.integration.test_sink_helpers import random_events, rig, run_books
from tests.support.rabbit import fill
from tests.support.worker import API_KEY, Deployment, WorkerProcess, drain, publish

pytestmark = pytest.mark.integration


async def post(worker: WorkerProcess, path: str, **params: str) -> tuple[int, Any]:
    """POST with the API key; retried while the answer is 503 (partitions moving)."""
    deadline = time.monotonic() + 30
    while True:
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                worker.url + path,
                params=params,
                headers={"X-API-Key": API_KEY},
                timeout=aiohttp.ClientTimeout(total=30),
            ) as resp,
        ):
            status, body = resp.status, orjson.loads(await resp.read())
        if status != 503 or time.monotonic() > deadline:
            return status, body
        await asyncio.sleep(0.5)


async def test_periodic_rounds_value_exposure_from_the_stored_positions() -> None:
    """`position_size_norm` of periodic snapshots: the total exposure of the positions
    the sink stored (SPEC §5 valuation: mark price, else entry price)."""
    written, final = run_books(random_events(random.Random(5), 600, ["AAAUSDT", "BBBUSDT"]))
    want_rows = {(leg.asset, leg.mode): leg.version for b in final.values() for leg in b.legs}
    expected = sum(
        (
            abs(leg.size * (leg.current_price or leg.average_entry_price))
            for b in final.values()
            for leg in b.legs
            if leg.size != 0
        ),
        Decimal(0),
    )
    async with rig() as r:
        assert r.db is not None
        snapshots = Snapshots(Deps(r.settings, r.metrics, SystemClock()), r.db, None, None)  # type: ignore[arg-type]
        assert await snapshots.stored_exposure() == 0
        await r.produce(written)
        await r.sink()

        async def caught_up() -> bool | dict[tuple[str, str], int]:
            got = await r.versions()
            return True if got == want_rows else got

        await r.wait(caught_up)
        assert expected > 0
        assert await snapshots.stored_exposure() == expected


async def test_retention_deletes_only_what_is_older_than_the_limit() -> None:
    async with rig() as r:
        assert r.db is not None
        snapshots = Snapshots(Deps(r.settings, r.metrics, SystemClock()), r.db, None, None)  # type: ignore[arg-type]
        now = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
        ages = {"ancient": 800, "old": 366, "edge": 364, "recent": 10, "new": 0}
        for name, days in ages.items():
            await r.pool.execute(
                INSERT_SNAPSHOT,
                f"00000000-0000-0000-0000-{days:012d}",
                "11111111-1111-1111-1111-111111111111",
                "BTCUSDT",
                "one-way",
                orjson.dumps({"name": name}).decode(),
                now - timedelta(days=days),
            )
        # One a second past the limit goes, one a second inside stays.
        limit = now - timedelta(days=r.settings.snapshot_retention_days)
        for label, at in (
            ("past", limit - timedelta(seconds=1)),
            ("inside", limit + timedelta(seconds=1)),
        ):
            await r.pool.execute(
                INSERT_SNAPSHOT,
                f"00000000-0000-0000-0001-00000000000{1 if label == 'past' else 2}",
                "11111111-1111-1111-1111-111111111111",
                "BTCUSDT",
                "one-way",
                orjson.dumps({"name": label}).decode(),
                at,
            )
        assert await snapshots.cleanup(now) == 3
        left = {
            orjson.loads(row["snapshot_data"])["name"]
            for row in await r.pool.fetch("SELECT snapshot_data::text FROM position_snapshots")
        }
        assert left == {"edge", "recent", "new", "inside"}
        assert await snapshots.cleanup(now) == 0


async def test_on_demand_periodic_paging_and_events(
    deployment: Deployment, workers: list[WorkerProcess]
) -> None:
    deployment.extra_env["POSITION_MANAGER_SNAPSHOT_INTERVAL"] = "2"
    deployment.partitions = 4
    a = WorkerProcess(deployment).start()
    b = WorkerProcess(deployment).start()
    workers.extend([a, b])
    await asyncio.gather(a.wait_healthy(), b.wait_healthy())
    assets = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]
    await publish(
        deployment.order_queue,
        [fill(f"{x}-1", "BUY", "1.5", "100.25", asset=x, fee="1.5") for x in assets],
    )
    for x in assets:
        await a.wait_for(f"/api/v1/positions/{x}", lambda s, body: s == 200)

    # On demand, through either worker (forwarded to the owner): 201 and the snapshot.
    status, snap = await post(b, "/api/v1/positions/BTCUSDT/snapshot")
    assert status == 201, snap
    assert snap["asset"] == "BTCUSDT" and snap["mode"] == "one-way"
    assert snap["snapshot_data"]["size"] == "1.5"
    assert "unrealized_pnl_pct" in snap["snapshot_data"]
    assert snap["position_id"] == snap["snapshot_data"]["id"]

    # last_snapshot_at is set by the agent (serialized with updates).
    await a.wait_for(
        "/api/v1/positions/BTCUSDT", lambda s, body: s == 200 and body["last_snapshot_at"]
    )

    # Periodic: let both workers tick for a while; no leg is snapshotted twice per interval.
    started = time.monotonic()
    await asyncio.sleep(7)
    elapsed = time.monotonic() - started + 2
    for x in assets:
        status, page = await a.get(f"/api/v1/positions/{x}/snapshots", limit="1000")
        assert status == 200, page
        n = page["total"]
        assert 2 <= n <= elapsed / 1.8 + 2, (x, n)
        times = [s["created_at"] for s in page["snapshots"]]
        assert times == sorted(times, reverse=True)
    # Paging newest first with limit/offset.
    status, full = await b.get("/api/v1/positions/BTCUSDT/snapshots", limit="1000")
    status, p1 = await b.get("/api/v1/positions/BTCUSDT/snapshots", limit="2", offset="1")
    assert status == 200 and p1["limit"] == 2 and p1["offset"] == 1 and p1["count"] == 2
    assert [s["id"] for s in p1["snapshots"]] == [s["id"] for s in full["snapshots"][1:3]]

    # Parameters are validated and named.
    for params, code, name in (
        ({"limit": "0"}, 422, "limit"),
        ({"limit": "100000"}, 422, "limit"),
        ({"limit": "x"}, 400, "limit"),
        ({"offset": "-1"}, 422, "offset"),
        ({"mode": "sideways"}, 400, "mode"),
    ):
        status, body = await a.get("/api/v1/positions/BTCUSDT/snapshots", **params)
        assert status == code and name in body["error"]["message"], (params, status, body)
    status, body = await a.get("/api/v1/positions/btc/snapshots")
    assert status == 400 and "asset" in body["error"]["message"]
    status, body = await post(a, "/api/v1/positions/NOPEUSDT/snapshot")
    assert status == 404, body

    # Every snapshot was published as position_snapshot_created (via the outbox).
    queue = f"{deployment.output_prefix}.position_snapshot_created"
    deadline = time.monotonic() + 30
    events: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        events += [orjson.loads(m.body) for m in await drain(queue)]
        if any(e["snapshot_id"] == snap["id"] for e in events):
            break
        await asyncio.sleep(0.5)
    mine = [e for e in events if e["snapshot_id"] == snap["id"]]
    assert len(mine) == 1, events[:3]
    event = mine[0]
    assert event["event_type"] == "position_snapshot_created"
    assert event["event_id"] and event["trace_id"] and event["timestamp"]
    assert event["asset"] == "BTCUSDT" and event["size"] == "1.5"
    assert event["snapshot_data"] == snap["snapshot_data"]
