"""The tickers fetcher and the price refresher against a real local HTTP server that
plays the exchange (no HTTP mocks): slow, failing, garbage, unknown symbol, then ok."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from pm_streams.deps import Deps
from pm_streams.domain import Event, Position, PriceUpdate, apply
from pm_streams.metrics import Metrics
from pm_streams.prices import (
    Fetched,
    PriceRefresher,
    RetryPolicy,
    TickerClient,
    _GiveUp,
    _Retry,
    is_stale,
    parse_mark_price,
)
from pm_streams.settings import Settings
from tests.support.exchange import FakeExchange, Garbage, Price, Slow, Status, Unknown
from tests.support.worker import free_port
from tests.unit.helpers import CFG, NOW, fill

FAST = RetryPolicy(timeout=0.2, backoff=(0.05, 0.1, 0.2))


@pytest.fixture
async def exchange() -> AsyncIterator[FakeExchange]:
    ex = await FakeExchange(prices={"BTCUSDT": "51500.25"}).start()
    yield ex
    await ex.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def client(exchange: FakeExchange, session: aiohttp.ClientSession, **kw: Any) -> TickerClient:
    return TickerClient(exchange.url, session, kw.pop("policy", FAST), **kw)


def gaps(exchange: FakeExchange, symbol: str) -> list[float]:
    times = [r.at for r in exchange.of(symbol)]
    return [b - a for a, b in itertools.pairwise(times)]


# ------------------------------------------------------------------ production defaults


def test_production_policy_is_5s_timeout_and_1_2_4_backoff() -> None:
    policy = RetryPolicy()
    assert policy.timeout == 5.0
    assert tuple(policy.backoff) == (1.0, 2.0, 4.0)
    assert policy.attempts == 4  # the first try and 3 retries


def test_refresher_checks_every_min_30s_half_threshold() -> None:
    live = FakeLive([])
    slow = PriceRefresher(Deps(Settings(), Metrics(), FixedClock()), live)
    assert slow.check_every == 30.0 and slow.threshold == 300.0
    fast = PriceRefresher(
        Deps(Settings(price_staleness_threshold=10), Metrics(), FixedClock()), live
    )
    assert fast.check_every == 5.0
    assert slow.policy == RetryPolicy()


# ------------------------------------------------------------------ parsing


def test_parse_mark_price_keeps_the_string_exact() -> None:
    from tests.support.exchange import ticker_body

    price = parse_mark_price(ticker_body("BTCUSDT", "51500.123456789012345"), "BTCUSDT")
    assert price == Decimal("51500.123456789012345")
    assert isinstance(price, Decimal)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"not json", _Retry),
        (b"[]", _Retry),
        (b'{"retCode":0,"result":{}}', _Retry),
        (b'{"retCode":0,"result":{"list":[{"symbol":"BTCUSDT"}]}}', _Retry),
        (b'{"retCode":0,"result":{"list":[{"symbol":"BTCUSDT","markPrice":51500}]}}', _Retry),
        (b'{"retCode":0,"result":{"list":[{"symbol":"BTCUSDT","markPrice":"abc"}]}}', _Retry),
        (b'{"retCode":0,"result":{"list":[{"symbol":"BTCUSDT","markPrice":"NaN"}]}}', _Retry),
        (b'{"retCode":0,"result":{"list":[{"symbol":"BTCUSDT","markPrice":"-1"}]}}', _Retry),
        (b'{"retCode":0,"result":{"list":[{"symbol":"ETHUSDT","markPrice":"1"}]}}', _Retry),
        (b'{"retCode":0,"result":{"list":[]}}', _GiveUp),
        (b'{"retCode":10001,"retMsg":"params error: symbol invalid","result":{}}', _GiveUp),
    ],
)
def test_parse_mark_price_rejects(body: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_mark_price(body, "BTCUSDT")


# ------------------------------------------------------------------ fetcher over HTTP


async def test_ok_first_try_asks_linear_category(
    exchange: FakeExchange, session: aiohttp.ClientSession
) -> None:
    got = await client(exchange, session).fetch("BTCUSDT")
    assert got == Fetched("BTCUSDT", Decimal("51500.25"), 1)
    [req] = exchange.requests
    assert (req.symbol, req.category) == ("BTCUSDT", "linear")


async def test_failing_500_is_retried_with_backoff_then_ok(
    exchange: FakeExchange, session: aiohttp.ClientSession
) -> None:
    exchange.script["BTCUSDT"] = [Status(500), Status(503), Status(429)]
    metrics = Metrics()
    with capture_logs() as logs:
        got = await client(exchange, session, metrics=metrics).fetch("BTCUSDT", "tr-1")
    assert got.price == Decimal("51500.25") and got.attempts == 4
    waits = gaps(exchange, "BTCUSDT")
    assert len(waits) == 3
    # each wait is at least the backoff step (1 s, 2 s, 4 s in production, scaled here)
    for wait, step in zip(waits, FAST.backoff, strict=True):
        assert step <= wait < step + 0.15, waits
    attempts = [e for e in logs if e["event"] == "price_fetch"]
    assert [(e["attempt"], e["status"], e["outcome"]) for e in attempts] == [
        (1, 500, "bad_answer"),
        (2, 503, "bad_answer"),
        (3, 429, "bad_answer"),
        (4, 200, "ok"),
    ]
    assert all(e["symbol"] == "BTCUSDT" and e["latency_ms"] >= 0 for e in attempts)
    assert metrics.value("pm_price_fetches_total", result="ok") == 1


async def test_slow_answer_times_out_and_is_retried(
    exchange: FakeExchange, session: aiohttp.ClientSession
) -> None:
    exchange.script["BTCUSDT"] = [Slow(1.0), Slow(1.0), Price("50000.5")]
    loop = asyncio.get_running_loop()
    started = loop.time()
    with capture_logs() as logs:
        got = await client(exchange, session).fetch("BTCUSDT")
    took = loop.time() - started
    assert got.price == Decimal("50000.5") and got.attempts == 3
    # two timeouts of 0.2 s plus backoffs of 0.05 s and 0.1 s, not the 1 s of the server
    assert 0.55 <= took < 0.9, took
    outcomes = [e["outcome"] for e in logs if e["event"] == "price_fetch"]
    assert outcomes == ["timeout", "timeout", "ok"]


async def test_always_failing_gives_up_after_three_retries_with_no_price(
    exchange: FakeExchange, session: aiohttp.ClientSession
) -> None:
    exchange.script["BTCUSDT"] = [Status(500)] * 10
    with capture_logs() as logs:
        got = await client(exchange, session).fetch("BTCUSDT")
    assert got.price is None and got.attempts == 4 and not got.permanent
    assert len(exchange.of("BTCUSDT")) == 4
    assert any(e["event"] == "price_fetch_gave_up" for e in logs)


async def test_garbage_body_is_retried_then_given_up(
    exchange: FakeExchange, session: aiohttp.ClientSession
) -> None:
    exchange.script["BTCUSDT"] = [Garbage(), Garbage(b'{"result":{"list":[{"x":1}]}}')] * 2
    got = await client(exchange, session).fetch("BTCUSDT")
    assert got.price is None and got.attempts == 4
    assert len(exchange.of("BTCUSDT")) == 4


async def test_garbage_then_ok(exchange: FakeExchange, session: aiohttp.ClientSession) -> None:
    exchange.script["BTCUSDT"] = [Garbage()]
    got = await client(exchange, session).fetch("BTCUSDT")
    assert got.price == Decimal("51500.25") and got.attempts == 2


@pytest.mark.parametrize("reply", [Unknown(), Status(404), Status(400)])
async def test_unknown_symbol_is_not_retried(
    exchange: FakeExchange, session: aiohttp.ClientSession, reply: Any
) -> None:
    exchange.script["NOPEUSDT"] = [reply]
    with capture_logs() as logs:
        got = await client(exchange, session).fetch("NOPEUSDT")
    assert got.price is None and got.permanent and got.attempts == 1
    assert len(exchange.of("NOPEUSDT")) == 1
    [entry] = [e for e in logs if e["event"] == "price_fetch"]
    assert entry["outcome"] == "rejected"


async def test_server_down_is_retried_then_given_up(session: aiohttp.ClientSession) -> None:
    dead = TickerClient(f"http://127.0.0.1:{free_port()}", session, FAST)
    with capture_logs() as logs:
        got = await dead.fetch("BTCUSDT")
    assert got.price is None and got.attempts == 4 and not got.permanent
    outcomes = [e["outcome"] for e in logs if e["event"] == "price_fetch"]
    assert outcomes == ["connection_error"] * 4


# ------------------------------------------------------------------ refresher


class FixedClock:
    def __init__(self) -> None:
        self.at = NOW

    def now(self) -> Any:
        return self.at


class FakeLive:
    """Stands in for `tables.live.LivePositions`: owned legs in, command events out."""

    def __init__(self, legs: list[Position]) -> None:
        self.legs = legs
        self.sent: list[Event] = []

    def owned_open_legs(self) -> list[Position]:
        return [leg for leg in self.legs if leg.is_open]

    async def send(self, event: Event, timeout: float = 10.0) -> None:
        self.sent.append(event)


def open_leg(asset: str, **changes: Any) -> Position:
    book, _ = apply(None, fill("1", "50000", asset=asset), NOW, CFG, new_id=lambda: "p-" + asset)
    return replace(book.legs[0], **changes)


async def refresher(
    exchange: FakeExchange, live: FakeLive, clock: FixedClock, threshold: float = 60.0
) -> PriceRefresher:
    settings = Settings(price_api_url=exchange.url, price_staleness_threshold=threshold)
    svc = PriceRefresher(Deps(settings, Metrics(), clock), live, policy=FAST, check_every=0.05)
    await svc.start()
    return svc


async def until(predicate: Any, timeout: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not met"
        await asyncio.sleep(0.01)


def test_is_stale() -> None:
    leg = open_leg("BTCUSDT")
    assert is_stale(leg, NOW, 300)  # no price yet
    priced = replace(leg, current_price=Decimal(1), last_price_at=NOW)
    assert not is_stale(priced, NOW + timedelta(seconds=300), 300)
    assert is_stale(priced, NOW + timedelta(seconds=301), 300)


async def test_refresher_sends_price_updates_for_stale_owned_legs_only(
    exchange: FakeExchange,
) -> None:
    exchange.prices["ETHUSDT"] = "3000.5"
    clock = FixedClock()
    fresh = open_leg("SOLUSDT", current_price=Decimal(100), last_price_at=NOW)
    live = FakeLive(
        [
            open_leg("BTCUSDT"),  # never priced
            open_leg(
                "ETHUSDT", current_price=Decimal(2900), last_price_at=NOW - timedelta(hours=1)
            ),
            fresh,
        ]
    )
    svc = await refresher(exchange, live, clock)
    try:
        await until(lambda: len(live.sent) == 2)
        await asyncio.sleep(0.2)  # several more checks: nothing asked twice
    finally:
        await svc.stop()
    sent = {e.asset: e for e in live.sent}
    assert set(sent) == {"BTCUSDT", "ETHUSDT"}
    btc = sent["BTCUSDT"]
    assert isinstance(btc, PriceUpdate) and btc.mark_price == Decimal("51500.25")
    assert sent["ETHUSDT"].mark_price == Decimal("3000.5")  # type: ignore[union-attr]
    assert btc.trace_id
    assert [r.symbol for r in exchange.requests].count("BTCUSDT") == 1
    assert "SOLUSDT" not in {r.symbol for r in exchange.requests}


async def test_refresher_keeps_one_fetch_in_flight_per_asset(exchange: FakeExchange) -> None:
    exchange.script["BTCUSDT"] = [Slow(0.15, "60000")]  # slower than three checks
    live = FakeLive([open_leg("BTCUSDT")])
    svc = await refresher(exchange, live, FixedClock())
    try:
        await until(lambda: len(live.sent) == 1)
    finally:
        await svc.stop()
    assert len(exchange.of("BTCUSDT")) == 1
    assert live.sent[0].mark_price == Decimal("60000")  # type: ignore[union-attr]


async def test_refresher_keeps_last_price_when_exchange_fails_and_retries_later(
    exchange: FakeExchange,
) -> None:
    exchange.script["BTCUSDT"] = [Status(500)] * 4  # one whole fetch fails
    live = FakeLive([open_leg("BTCUSDT", current_price=Decimal(1), last_price_at=NOW)])
    clock = FixedClock()
    clock.at = NOW + timedelta(seconds=120)
    svc = await refresher(exchange, live, clock)
    try:
        # A transient failure: asked again at the next check, which succeeds.
        await until(lambda: len(live.sent) == 1)
    finally:
        await svc.stop()
    # The whole first fetch (1 try + 3 retries) failed and sent nothing: the only update
    # comes from the fifth request, the first that succeeded.
    assert len(exchange.of("BTCUSDT")) >= 5
    assert len(live.sent) == 1
    assert live.sent[0].mark_price == Decimal("51500.25")  # type: ignore[union-attr]


async def test_refresher_does_not_hammer_an_unknown_symbol(exchange: FakeExchange) -> None:
    live = FakeLive([open_leg("NOPEUSDT")])
    svc = await refresher(exchange, live, FixedClock())
    try:
        await until(lambda: len(exchange.of("NOPEUSDT")) == 1)
        await asyncio.sleep(0.3)
    finally:
        await svc.stop()
    assert len(exchange.of("NOPEUSDT")) == 1
    assert live.sent == []


async def test_refresher_stops_with_a_fetch_in_flight(exchange: FakeExchange) -> None:
    exchange.script["BTCUSDT"] = [Slow(0.15)] * 4
    live = FakeLive([open_leg("BTCUSDT")])
    svc = await refresher(exchange, live, FixedClock())
    await until(lambda: len(exchange.requests) == 1)
    await asyncio.wait_for(svc.stop(), 2.0)
    assert live.sent == []
