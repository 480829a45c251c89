"""`pm-streams demo`: a realistic sample of a desk's input, streamed to a running
deployment, then checked and summarized through the REST API.

The sample: a few hot assets take most of the fills and a long tail the rest, prices
random-walk on each asset's tick, every fill pays a taker fee, one position flips from
long to short, the exchange gateway pushes mark prices (with the size the desk
expects), and one funding settlement is paid. The demo keeps its own exact running
sizes and, at the end, waits until the API shows every one of them.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import aiohttp
from tqdm import tqdm

from bridges.client import InputPublisher, Message, fill_message, position_message

TAKER_FEE = Decimal("0.00055")
FUNDING_RATE = Decimal("0.0001")
HOT = (("BTCUSDT", "65000", "0.1", "0.001"), ("ETHUSDT", "3400", "0.01", "0.01"),
       ("SOLUSDT", "150", "0.001", "0.1"))  # fmt: skip
"""(asset, start price, tick, lot) of the hot book."""
TAIL = ("XRPUSDT", "DOGEUSDT", "ADAUSDT", "AVAXUSDT", "LINKUSDT", "DOTUSDT", "LTCUSDT",
        "NEARUSDT", "ATOMUSDT", "ARBUSDT", "OPUSDT", "APTUSDT", "SUIUSDT", "INJUSDT")  # fmt: skip


@dataclass
class Instrument:
    asset: str
    price: Decimal
    tick: Decimal
    lot: Decimal
    size: Decimal = Decimal(0)

    def step_price(self, rng: random.Random) -> Decimal:
        """Move the price by up to ±0.2 %, on the tick."""
        move = self.price * Decimal(rng.randint(-20, 20)) / Decimal(10_000)
        self.price = max(self.tick, (self.price + move).quantize(self.tick))
        return self.price


def instruments(count: int, rng: random.Random) -> list[Instrument]:
    out = [Instrument(a, Decimal(p), Decimal(t), Decimal(lot)) for a, p, t, lot in HOT[:count]]
    for asset in TAIL[: max(0, count - len(HOT))]:
        price = Decimal(rng.randint(100, 5000)) / Decimal(100)
        out.append(Instrument(asset, price, Decimal("0.0001"), Decimal("1")))
    return out


def sample(
    fills: int, assets: int, seed: int, start: dict[str, Decimal] | None = None
) -> tuple[list[tuple[str, Message]], dict[str, Decimal]]:
    """(kind, message) pairs: `fills` fills (one a flip, one a funding settlement) and
    an exchange push after every fifth fill; and the size each asset ends at, from
    its `start` size (what the deployment already holds)."""
    rng = random.Random(seed)
    book = instruments(assets, rng)
    for inst in book:
        inst.size = (start or {}).get(inst.asset, Decimal(0))
    hot = book[: min(len(HOT), len(book))]
    flip_at, funding_at = fills * 6 // 10, fills * 8 // 10
    out: list[tuple[str, Message]] = []
    for i in range(fills):
        inst = rng.choice(hot) if rng.random() < 0.7 else rng.choice(book)
        price = inst.step_price(rng)
        qty = inst.lot * rng.randint(1, 20)
        side = "BUY" if rng.random() < 0.55 else "SELL"
        if i == flip_at:  # long -> short (or short -> long) in one fill
            inst = hot[0]
            price = inst.price
            side = "SELL" if inst.size >= 0 else "BUY"
            qty = abs(inst.size) + inst.lot * 5
        if i == funding_at:
            inst = hot[0]
            paid = (inst.size * inst.price * FUNDING_RATE).quantize(Decimal("0.00000001"))
            out.append(("order_executed", fill_message(
                asset=inst.asset, side="BUY", qty="0", price=str(inst.price),
                fee=str(paid), exec_type="Funding",
            )))  # fmt: skip
            continue
        fee = (qty * price * TAKER_FEE).quantize(Decimal("0.00000001"))
        inst.size += qty if side == "BUY" else -qty
        out.append(("order_executed", fill_message(
            asset=inst.asset, side=side, qty=str(qty), price=str(price), fee=str(fee)
        )))  # fmt: skip
        if i % 5 == 4:
            out.append(("position", exchange_push(inst, rng)))
    touched = {m["asset"] for k, m in out if k == "order_executed"}
    return out, {inst.asset: inst.size for inst in book if inst.asset in touched}


def exchange_push(inst: Instrument, rng: random.Random) -> Message:
    mark = inst.price + inst.tick * rng.randint(-3, 3)
    side = "Buy" if inst.size > 0 else "Sell" if inst.size < 0 else ""
    return position_message(
        asset=inst.asset, side=side, size=str(abs(inst.size)), mark_price=str(mark)
    )


class Api:
    """The few REST calls the demo makes."""

    def __init__(self, session: aiohttp.ClientSession, url: str, key: str) -> None:
        self.session, self.url, self.headers = session, url.rstrip("/"), {"X-API-Key": key}

    async def get(self, path: str) -> Any:
        async with self.session.get(self.url + path, headers=self.headers) as resp:
            if resp.status != 200:
                raise RuntimeError(f"GET {path}: HTTP {resp.status} {await resp.text()}")
            return await resp.json()

    async def sizes(self) -> dict[str, Decimal]:
        body = await self.get("/api/v1/positions?include_closed=true&mode=one-way")
        return {p["asset"]: Decimal(p["size"]) for p in body["positions"]}


async def run_demo(
    publisher: InputPublisher,
    api: Api,
    *,
    fills: int,
    assets: int,
    rate: float,
    seed: int,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Stream the sample, wait until the API shows every expected size, and return the
    portfolio."""
    messages, want = sample(fills, assets, seed, start=await api.sizes())
    started = time.monotonic()
    with tqdm(total=len(messages), unit="msg", desc="publishing") as bar:
        for n, (kind, message) in enumerate(messages):
            await publisher.publish(kind, message)
            bar.update(1)
            ahead = started + (n + 1) / rate - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
    deadline = time.monotonic() + timeout
    while True:
        seen = await api.sizes()
        missing = {a: (str(s), str(seen.get(a))) for a, s in want.items() if seen.get(a) != s}
        if not missing:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"positions not at their expected sizes after {timeout}s: {missing}")
        await asyncio.sleep(0.2)
    portfolio: dict[str, Any] = await api.get("/api/v1/portfolio")
    return portfolio
