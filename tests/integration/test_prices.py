"""SPEC §4.3 through a real worker: a position opened by a fill gets its mark price
from a local server playing the exchange, and the price is refreshed once stale."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from tests.support.exchange import FakeExchange, Status
from tests.support.rabbit import fill
from tests.support.worker import Deployment, WorkerProcess, publish

pytestmark = pytest.mark.integration


@pytest.fixture
async def exchange() -> AsyncIterator[FakeExchange]:
    ex = await FakeExchange().start()
    yield ex
    await ex.stop()


async def test_fill_gets_mark_price_and_unrealized_pnl_from_the_exchange(
    deployment: Deployment, workers: list[WorkerProcess], exchange: FakeExchange
) -> None:
    exchange.prices["BTCUSDT"] = "51500.5"
    exchange.script["BTCUSDT"] = [Status(500)]  # the first try fails: retried after 1 s
    exchange.prices["ETHUSDT"] = "2950"
    deployment.extra_env.update(
        POSITION_MANAGER_PRICE_API_URL=exchange.url,
        POSITION_MANAGER_PRICE_STALENESS_THRESHOLD="2",
    )
    worker = WorkerProcess(deployment).start()
    workers.append(worker)
    await worker.wait_healthy()

    await publish(
        deployment.order_queue,
        [
            fill("BTCUSDT-1", "BUY", "0.5", "50000", asset="BTCUSDT"),
            fill("ETHUSDT-1", "SELL", "2", "3000", asset="ETHUSDT"),
            fill("NOPEUSDT-1", "BUY", "3", "10", asset="NOPEUSDT"),  # the exchange does not know it
        ],
    )

    def priced(mark: str) -> Any:
        return lambda status, body: status == 200 and body.get("current_price") == mark

    btc = await worker.wait_for("/api/v1/positions/BTCUSDT", priced("51500.5"), timeout=30)
    assert Decimal(btc["unrealized_pnl"]) == (Decimal("51500.5") - Decimal("50000")) * Decimal(
        "0.5"
    )
    assert Decimal(btc["size"]) == Decimal("0.5")
    eth = await worker.wait_for("/api/v1/positions/ETHUSDT", priced("2950"), timeout=30)
    assert Decimal(eth["unrealized_pnl"]) == (Decimal("2950") - Decimal("3000")) * Decimal("-2")
    btc_tries = exchange.of("BTCUSDT")
    assert len(btc_tries) >= 2 and btc_tries[1].at - btc_tries[0].at >= 1.0  # the 1 s backoff
    assert {r.category for r in exchange.requests} == {"linear"}

    # The unknown symbol keeps its (missing) price.
    status, nope = await worker.get("/api/v1/positions/NOPEUSDT")
    assert status == 200 and nope["current_price"] is None

    # Once stale (2 s), the price is fetched again; a new mark moves the PnL.
    exchange.prices["BTCUSDT"] = "49000"
    btc = await worker.wait_for("/api/v1/positions/BTCUSDT", priced("49000"), timeout=30)
    assert Decimal(btc["unrealized_pnl"]) == Decimal("-500.0")
    assert btc["version"] >= 3  # open, price, price
    # ... and is asked at most once per staleness threshold, not at every 1 s check.
    nopes = exchange.of("NOPEUSDT")
    assert nopes and len(nopes) <= 1 + (time.monotonic() - nopes[0].at) / 2
