"""Property tests of the engine and the codec (hypothesis)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from pm_streams.domain import (
    Book,
    Correction,
    EngineConfig,
    Event,
    Fill,
    Position,
    apply,
    event_from_bytes,
    event_to_bytes,
)
from pm_streams.domain.portfolio import contribution, exposure_of
from pm_streams.stored import Stored, stored_from_bytes, stored_to_bytes
from tests.support.naive import naive
from tests.unit.helpers import ASSET, CFG, NOW, id_factory, price, push

settings.register_profile("domain", max_examples=200, deadline=None)
settings.load_profile("domain")

TOL = Fraction(1, 10**25)

quantities = (
    st.integers(min_value=-50_000, max_value=50_000)
    .filter(bool)
    .map(lambda n: Decimal(n).scaleb(-4))
)
prices = st.integers(min_value=1, max_value=10_000_000).map(lambda n: Decimal(n).scaleb(-2))
fees = st.integers(min_value=-100, max_value=2_000).map(lambda n: Decimal(n).scaleb(-2))


@st.composite
def trades(draw: st.DrawFn, mode: str = "one-way", funding: bool = True) -> list[Fill]:
    n = draw(st.integers(min_value=1, max_value=40))
    out = []
    for i in range(n):
        is_funding = funding and draw(st.integers(0, 9)) == 0
        out.append(
            Fill(
                asset=ASSET,
                mode=mode,
                quantity=Decimal(0) if is_funding else draw(quantities),
                price=Decimal(0) if is_funding else draw(prices),
                fee=draw(fees),
                fill_id=f"{mode}-{i}",
                order_id=None,
                executed_at=None,
                trace_id=f"t{i}",
                is_funding=is_funding,
            )
        )
    return out


def run(events: list[Event], book: Book | None = None, cfg: EngineConfig = CFG) -> Book | None:
    new_id = id_factory()
    for i, ev in enumerate(events):
        book, _ = apply(book, ev, NOW + timedelta(seconds=i), cfg, new_id=new_id)
    return book


def close(a: Decimal, b: Fraction) -> bool:
    return abs(Fraction(a) - b) <= TOL


@given(trades())
def test_fills_match_naive_recomputation(fills: list[Fill]) -> None:
    book = run(list(fills))
    assert book is not None
    p = book.leg("one-way")
    assert p is not None
    size, avg, realized, paid = naive(fills)
    assert p.size == sum((f.quantity for f in fills), Decimal(0))  # exact
    assert Fraction(p.size) == size
    if size:
        assert close(p.average_entry_price, avg)
    assert close(p.realized_pnl, realized)
    assert p.total_fees == sum((f.fee for f in fills), Decimal(0))
    assert Fraction(p.total_fees) == paid
    assert p.version == len(fills)
    traded = any(not f.is_funding for f in fills)
    assert (p.closed_at is not None) == (traded and p.size == 0)
    assert (p.opened_at is not None) == traded


@given(trades(funding=False), prices)
def test_cash_flow_identity_without_fees(fills: list[Fill], mark: Decimal) -> None:
    """Realized + unrealized at any price = cash paid and received + value held."""
    fills = [
        Fill(f.asset, f.mode, f.quantity, f.price, Decimal(0), f.fill_id, None, None, "t")
        for f in fills
    ]
    book = run([*fills, price(str(mark))])
    assert book is not None
    p = book.leg("one-way")
    assert p is not None
    cash = -sum((Fraction(f.quantity) * Fraction(f.price) for f in fills), Fraction(0))
    value = Fraction(p.size) * Fraction(mark)
    total = Fraction(p.realized_pnl) + Fraction(p.unrealized_pnl if p.size else 0)
    assert abs(total - (cash + value)) <= TOL * 10**6


@given(trades(), prices)
def test_realized_plus_unrealized_is_the_cash_result(fills: list[Fill], mark: Decimal) -> None:
    """SPEC §4.1 rev 2: with every fee (and funding) charged to realized when paid,
    realized + unrealized at any mark = cash paid and received + value held - fees."""
    book = run([*fills, price(str(mark))])
    assert book is not None
    p = book.leg("one-way")
    assert p is not None
    cash = -sum((Fraction(f.quantity) * Fraction(f.price) for f in fills), Fraction(0))
    fees = sum((Fraction(f.fee) for f in fills), Fraction(0))
    value = Fraction(p.size) * Fraction(mark)
    total = Fraction(p.realized_pnl) + Fraction(p.unrealized_pnl if p.size else 0)
    assert abs(total - (cash + value - fees)) <= TOL * 10**6
    funding = sum((Fraction(f.fee) for f in fills if f.is_funding), Fraction(0))
    assert Fraction(p.funding_pnl) == -funding


@given(trades(), st.data())
def test_replaying_a_prefix_changes_nothing(fills: list[Fill], data: st.DataObject) -> None:
    once = run(list(fills))
    cut = data.draw(st.integers(min_value=0, max_value=len(fills)))
    book = once
    for f in fills[:cut]:  # replay: every fill is a duplicate
        new, effects = apply(book, f, NOW, CFG, new_id=id_factory("other"))
        assert new is book
        assert [e.kind for e in effects] == ["duplicate_fill"]  # type: ignore[union-attr]
    doubled: Book | None = None  # each fill delivered twice in a row
    new_id = id_factory()
    for i, f in enumerate(fills):
        for _ in (0, 1):
            doubled, _ = apply(doubled, f, NOW + timedelta(seconds=i), CFG, new_id=new_id)
    assert doubled is not None and once is not None
    assert doubled.legs == once.legs
    assert doubled.fill_ids == once.fill_ids


@given(trades(), st.integers(min_value=1, max_value=8))
def test_fill_id_window_is_bounded(fills: list[Fill], cap: int) -> None:
    book = run(list(fills), cfg=EngineConfig(fill_id_capacity=cap))
    assert book is not None
    assert book.fill_ids == tuple(f.fill_id for f in fills)[-cap:]


@given(trades(mode="hedge-long", funding=False), trades(mode="hedge-short", funding=False))
def test_hedge_legs_never_change_side(long_fills: list[Fill], short_fills: list[Fill]) -> None:
    events: list[Event] = [f for pair in zip(long_fills, short_fills, strict=False) for f in pair]
    book: Book | None = None
    new_id = id_factory()
    for ev in events:
        book, _ = apply(book, ev, NOW, CFG, new_id=new_id)
        assert book is not None
        long_leg, short_leg = book.leg("hedge-long"), book.leg("hedge-short")
        assert long_leg is None or long_leg.size >= 0
        assert short_leg is None or short_leg.size <= 0


# --------------------------------------------------------------------------- codec

optional_decimals = st.none() | st.decimals(
    min_value=-(10**9), max_value=10**9, places=8, allow_nan=False, allow_infinity=False
)
exchange_pushes = st.builds(
    lambda size, avg, upnl, mark, seq: push(
        None if size is None else str(size),
        None if avg is None else str(abs(avg)),
        upnl=None if upnl is None else str(upnl),
        mark=None if mark is None or mark == 0 else str(abs(mark)),
        seq=seq,
    ),
    optional_decimals,
    optional_decimals,
    optional_decimals,
    optional_decimals,
    st.none() | st.integers(min_value=0, max_value=100),
)
corrections = st.builds(
    lambda size, avg: Correction(ASSET, "one-way", size, avg, "v", "test"),
    optional_decimals,
    st.none() | prices,
)
events = st.lists(
    st.one_of(
        trades().map(lambda fs: fs[0]),
        exchange_pushes,
        prices.map(lambda p: price(str(p))),
        corrections,
    ),
    min_size=1,
    max_size=30,
).map(lambda evs: [_unique(ev, i) for i, ev in enumerate(evs)])


def _unique(ev: Event, i: int) -> Event:
    if isinstance(ev, Fill):
        return Fill(
            ev.asset,
            ev.mode,
            ev.quantity,
            ev.price,
            ev.fee,
            f"u{i}",
            "o",
            NOW,
            ev.trace_id,
            ev.is_funding,
        )
    return ev


@given(events)
def test_codec_round_trip_of_random_books(evs: list[Event]) -> None:
    book: Book | None = None
    new_id = id_factory()
    for i, ev in enumerate(evs):
        assert event_from_bytes(event_to_bytes(ev)) == ev
        book, _ = apply(book, ev, NOW + timedelta(milliseconds=i), CFG, new_id=new_id)
        assert stored_from_bytes(stored_to_bytes(Stored(book, i))) == Stored(book, i)


@given(events)
def test_the_outputs_exposure_is_the_portfolios(evs: list[Event]) -> None:
    """`exposure_of` (the outputs' share of the total) equals the exposure the portfolio
    agent counts for the same book, after every change."""
    book: Book | None = None
    new_id = id_factory()
    for i, ev in enumerate(evs):
        book, _ = apply(book, ev, NOW + timedelta(milliseconds=i), CFG, new_id=new_id)
        assert book is not None
        assert exposure_of(book) == contribution(book).exposure


@given(events)
def test_apply_is_deterministic_and_pure(evs: list[Event]) -> None:
    first = run(list(evs))
    second = run(list(evs))
    assert first == second
    if first is not None:
        for p in first.legs:
            assert isinstance(p, Position)
            assert p.version >= 1
