"""Small builders shared by the domain unit tests."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from decimal import Decimal

from pm_streams.domain import (
    Book,
    Effect,
    EngineConfig,
    Event,
    ExchangeUpdate,
    Fill,
    Note,
    PriceUpdate,
    Publish,
    apply,
)

NOW = datetime(2025, 1, 15, 10, 0, tzinfo=UTC)
CFG = EngineConfig()
ASSET = "BTCUSDT"


def D(x: str | int) -> Decimal:
    return Decimal(str(x))


def id_factory(prefix: str = "pos") -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"{prefix}-{next(counter)}"


_fill_ids = itertools.count(1)


def fill(
    q: str,
    p: str = "0",
    fee: str = "0",
    *,
    mode: str = "one-way",
    fid: str | None = None,
    funding: bool = False,
    asset: str = ASSET,
    trace: str = "trace",
) -> Fill:
    return Fill(
        asset=asset,
        mode=mode,
        quantity=D(q),
        price=D(p),
        fee=D(fee),
        fill_id=fid or f"fill-{next(_fill_ids)}",
        order_id=None,
        executed_at=None,
        trace_id=trace,
        is_funding=funding,
    )


def push(
    size: str | None = None,
    avg: str | None = None,
    *,
    upnl: str | None = None,
    rpnl: str | None = None,
    mark: str | None = None,
    seq: int | None = None,
    ms: int | None = None,
    mode: str = "one-way",
    asset: str = ASSET,
    trace: str = "ws-trace",
) -> ExchangeUpdate:
    def dec(x: str | None) -> Decimal | None:
        return None if x is None else D(x)

    return ExchangeUpdate(
        asset=asset,
        mode=mode,
        size=dec(size),
        avg_price=dec(avg),
        unrealized_pnl=dec(upnl),
        realized_pnl=dec(rpnl),
        mark_price=dec(mark),
        seq=seq,
        updated_ms=ms,
        trace_id=trace,
    )


def price(mark: str, asset: str = ASSET) -> PriceUpdate:
    return PriceUpdate(asset=asset, mark_price=D(mark), trace_id="px")


class Runner:
    """Applies events one after the other, keeping every effect."""

    def __init__(self, cfg: EngineConfig = CFG, book: Book | None = None) -> None:
        self.cfg = cfg
        self.book = book
        self.new_id = id_factory()
        self.effects: list[Effect] = []
        self.last: tuple[Effect, ...] = ()

    def __call__(self, *events: Event, now: datetime = NOW) -> tuple[Effect, ...]:
        out: list[Effect] = []
        for ev in events:
            new, effects = apply(self.book, ev, now, self.cfg, new_id=self.new_id)
            if new is not self.book:
                assert new.effects == effects
            self.book = new
            out.extend(effects)
        self.last = tuple(out)
        self.effects.extend(out)
        return self.last

    def leg(self, mode: str = "one-way"):  # type: ignore[no-untyped-def]
        assert self.book is not None
        p = self.book.leg(mode)
        assert p is not None
        return p


def open_at(size: str, avg: str, *, mode: str = "one-way", runner: Runner | None = None) -> Runner:
    """A runner whose position was opened by one fee-less fill."""
    r = runner or Runner()
    r(fill(size, avg, mode=mode))
    return r


def kinds(effects: Iterable[Effect]) -> list[str]:
    out = []
    for e in effects:
        if isinstance(e, Publish):
            out.append(f"publish:{e.event_type}:{e.update_source}")
        elif isinstance(e, Note):
            out.append(f"note:{e.kind}")
        else:
            out.append(type(e).__name__)
    return out
