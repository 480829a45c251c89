"""Two workers, one killed with SIGKILL mid-stream and restarted: the final positions
equal an independent recomputation of the same fills: nothing lost, nothing twice."""

from __future__ import annotations

import asyncio
import random
import signal
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest

from pm_streams.domain import Fill, parse_order_executed
from tests.support.naive import naive
from tests.support.worker import Deployment, WorkerProcess, publish

pytestmark = pytest.mark.integration

ASSETS = [f"A{i}USDT" for i in range(10)]
FILLS_PER_ASSET = 300
TOL = Fraction(1, 10**18)  # the API shows at most 18 places (SPEC §4 rev 2)


def random_fills(rng: random.Random) -> list[dict[str, Any]]:
    messages = []
    for n in range(FILLS_PER_ASSET):
        for asset in ASSETS:
            qty = Decimal(rng.randint(1, 5000)) / 1000
            price = Decimal(rng.randint(900_000, 1_100_000)) / 100
            messages.append(
                {
                    "event_type": "order_executed",
                    "order_id": f"o-{asset}-{n}",
                    "execution_id": f"x-{asset}-{n}",
                    "asset": asset,
                    "side": rng.choice(["BUY", "SELL"]),
                    "execution_price": str(price),
                    "execution_quantity": str(qty),
                    "execution_fees": str(
                        (qty * price * Decimal("0.0004")).quantize(Decimal("0.01"))
                    ),
                    "mode": "one-way",
                    "trace_id": f"t-{asset}-{n}",
                }
            )
    return messages


def expected(messages: list[dict[str, Any]]) -> dict[str, tuple[Fraction, ...]]:
    by_asset: dict[str, list[Fill]] = {a: [] for a in ASSETS}
    for m in messages:
        fill = parse_order_executed(m, new_trace_id=lambda: "x")
        by_asset[fill.asset].append(fill)
    return {a: naive(fills) for a, fills in by_asset.items()}


async def wait_versions(worker: WorkerProcess, want: int, timeout: float) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    seen: dict[str, Any] = {}
    while asyncio.get_running_loop().time() < deadline:
        for asset in ASSETS:
            if seen.get(asset, {}).get("version") == want:
                continue
            status, body = await worker.get(f"/api/v1/positions/{asset}")
            if status == 200:
                seen[asset] = body
        if all(seen.get(a, {}).get("version") == want for a in ASSETS):
            return seen
        await asyncio.sleep(0.5)
    versions = {a: seen.get(a, {}).get("version") for a in ASSETS}
    raise AssertionError(f"versions not reached {want}: {versions}\n{worker.tail()}")


async def test_sigkill_mid_stream_loses_nothing_and_applies_nothing_twice(
    deployment: Deployment, workers: list[WorkerProcess]
) -> None:
    deployment.partitions = 8
    a = WorkerProcess(deployment).start()
    b = WorkerProcess(deployment).start()
    workers += [a, b]
    await a.wait_healthy()
    await b.wait_healthy()

    messages = random_fills(random.Random(7))
    third = len(messages) // 3
    await publish(deployment.order_queue, messages[:third])
    assert b.signal(signal.SIGKILL) == -signal.SIGKILL  # mid-stream: a backlog is in flight
    await publish(deployment.order_queue, messages[third : 2 * third])
    b = WorkerProcess(deployment, port=b.port).start()
    workers.append(b)
    await publish(deployment.order_queue, messages[2 * third :])

    final = await wait_versions(a, FILLS_PER_ASSET, timeout=180)
    want = expected(messages)
    for asset, body in final.items():
        size, avg, realized, paid = want[asset]
        assert Fraction(Decimal(body["size"])) == size, asset
        assert abs(Fraction(Decimal(body["average_entry_price"])) - avg) < TOL, asset
        assert abs(Fraction(Decimal(body["realized_pnl"])) - realized) < TOL, asset
        assert Fraction(Decimal(body["total_fees"])) == paid, asset
    # The restarted worker answers the same (routed or owned) once it has rejoined.
    await b.wait_healthy()
    again = await wait_versions(b, FILLS_PER_ASSET, timeout=60)
    assert {a: v["size"] for a, v in again.items()} == {a: v["size"] for a, v in final.items()}
