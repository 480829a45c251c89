"""Throughput of the pure domain core (no Kafka): `python bench/bench_apply.py [N]`.

Prints events/s for
  * apply: the engine alone;
  * hot path: event decode + apply + book encode (what the agent does per event, the
    book itself being cached decoded);
  * cold path: event decode + book decode + apply + book encode.
The mix over 8 assets: 60% fills (a fill id each; books hold 256 ids), 25% exchange
pushes (half of them repeats = no-ops), 15% price updates.
"""

from __future__ import annotations

import random
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from pm_streams.domain import (
    Book,
    EngineConfig,
    Event,
    ExchangeUpdate,
    Fill,
    PriceUpdate,
    apply,
    event_from_bytes,
    event_to_bytes,
)
from pm_streams.stored import Stored, stored_from_bytes, stored_to_bytes

ASSETS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT", "ADAUSDT", "BNBUSDT", "LTCUSDT")


def asset_names(count: int) -> tuple[str, ...]:
    """The first `count` of the mix's assets (8 named ones, then A9USDT, A10USDT, ...)."""
    extra = tuple(f"A{i}USDT" for i in range(len(ASSETS) + 1, count + 1))
    return (ASSETS + extra)[:count]


def make_events(n: int, seed: int = 7, assets: int = len(ASSETS)) -> list[Event]:
    names = asset_names(assets)
    rnd = random.Random(seed)
    prices = {a: Decimal(rnd.randint(1, 60000)) for a in names}
    seqs = dict.fromkeys(names, 0)
    last_push: dict[str, ExchangeUpdate] = {}
    base = datetime(2025, 1, 15, tzinfo=UTC)
    out: list[Event] = []
    for i in range(n):
        asset = rnd.choice(names)
        r = rnd.random()
        drift = Decimal(rnd.randint(-50, 50)) / 100
        prices[asset] = max(Decimal(1), prices[asset] + drift)
        price = prices[asset]
        if r < 0.60:
            qty = Decimal(rnd.randint(1, 1000)) / 1000 * rnd.choice((1, -1))
            out.append(
                Fill(
                    asset=asset,
                    mode="one-way",
                    quantity=qty,
                    price=price,
                    fee=Decimal("0.0006") * abs(qty) * price,
                    fill_id=str(uuid.UUID(int=rnd.getrandbits(128))),
                    order_id=f"o-{i}",
                    executed_at=base + timedelta(milliseconds=i),
                    trace_id=f"t-{i}",
                )
            )
        elif r < 0.85:
            seqs[asset] += 1
            prev = last_push.get(asset)
            if prev is not None and rnd.random() < 0.5:
                ev = replace(prev, seq=seqs[asset])
            else:
                ev = ExchangeUpdate(
                    asset=asset,
                    mode="one-way",
                    size=Decimal(rnd.randint(0, 5000)) / 1000,
                    avg_price=price,
                    unrealized_pnl=Decimal(rnd.randint(-10000, 10000)) / 100,
                    realized_pnl=None,
                    mark_price=price,
                    seq=seqs[asset],
                    updated_ms=1736899200000 + i,
                    trace_id=f"t-{i}",
                )
            last_push[asset] = ev
            out.append(ev)
        else:
            out.append(PriceUpdate(asset=asset, mark_price=price, trace_id=f"t-{i}"))
    return out


def run(
    label: str,
    events: list[Event],
    step: Callable[[dict[str, Book], dict[str, bytes], Event, bytes, datetime], None],
    payloads: list[bytes],
) -> None:
    books: dict[str, Book] = {}
    stored: dict[str, bytes] = {}
    now = datetime(2025, 1, 15, 12, tzinfo=UTC)
    t0 = time.perf_counter()
    for ev, payload in zip(events, payloads, strict=True):
        step(books, stored, ev, payload, now)
    dt = time.perf_counter() - t0
    print(f"{label:<58} {len(events) / dt:>12,.0f} events/s  ({dt:.2f} s)")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    cfg = EngineConfig()
    events = make_events(n)
    payloads = [event_to_bytes(e) for e in events]
    ids = iter(range(10**9))

    def new_id() -> str:
        return f"p-{next(ids)}"

    def pure(
        books: dict[str, Book], stored: dict[str, bytes], ev: Event, _: bytes, now: datetime
    ) -> None:
        new, _effects = apply(books.get(ev.asset), ev, now, cfg, new_id=new_id)
        books[ev.asset] = new

    def hot(
        books: dict[str, Book], stored: dict[str, bytes], _: Event, payload: bytes, now: datetime
    ) -> None:
        ev = event_from_bytes(payload)
        old = books.get(ev.asset)
        new, _effects = apply(old, ev, now, cfg, new_id=new_id)
        if new is not old:
            stored[ev.asset] = stored_to_bytes(Stored(new))
            books[ev.asset] = new

    def cold(
        books: dict[str, Book], stored: dict[str, bytes], _: Event, payload: bytes, now: datetime
    ) -> None:
        ev = event_from_bytes(payload)
        raw = stored.get(ev.asset)
        old = None if raw is None else stored_from_bytes(raw).book
        new, _effects = apply(old, ev, now, cfg, new_id=new_id)
        if new is not old:
            stored[ev.asset] = stored_to_bytes(Stored(new))

    print(f"{n:,} events on {len(ASSETS)} assets, fill-id capacity {cfg.fill_id_capacity}")
    run("apply only", events, pure, payloads)
    run("hot path: decode event + apply + encode book", events, hot, payloads)
    run("cold path: decode event + decode book + apply + encode book", events, cold, payloads)


if __name__ == "__main__":
    main()
