"""Portfolio math (SPEC §5): contributions, incremental totals, replay/duplicate guards."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from fractions import Fraction

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pm_streams.domain import UNDECODABLE, Event, apply
from pm_streams.domain.portfolio import (
    Contribution,
    Totals,
    contribution,
    contributions_from_bytes,
    contributions_to_bytes,
    decide,
    exposure_from_bytes,
    totals_of,
)
from pm_streams.domain.portfolio_views import portfolio_event, portfolio_view
from tests.unit.helpers import CFG, NOW, D, Runner, fill, id_factory, price, push


def book_of(asset: str, *events):  # type: ignore[no-untyped-def]
    r = Runner()
    for e in events:
        r(e)
    assert r.book is not None
    return r.book


def test_tc009_total_exposure_of_two_positions() -> None:
    btc = contribution(book_of("BTCUSDT", fill("1.0", "49000"), price("50000")))
    eth = contribution(
        book_of("ETHUSDT", fill("10.0", "2900", asset="ETHUSDT"), price("3000", "ETHUSDT"))
    )
    t = totals_of([btc, eth])
    assert t.exposure == D("80000")
    view = portfolio_view(t, {"BTCUSDT": btc, "ETHUSDT": eth}, max_exposure=None)
    assert Decimal(view["total_exposure_usdt"]) == D("80000.00")
    assert set(view["by_asset"]) == {"BTCUSDT", "ETHUSDT"}
    assert view["open_positions_count"] == 2 and view["long_positions_count"] == 2


def test_tc010_unrealized_sum_and_realized_includes_closed() -> None:
    btc = contribution(book_of("BTCUSDT", push("1", "50000", upnl="150.00", mark="50150")))
    eth = contribution(
        book_of("ETHUSDT", push("-2", "3000", upnl="-50.00", mark="3025", asset="ETHUSDT"))
    )
    sol = contribution(
        book_of(
            "SOLUSDT",
            fill("10", "100", asset="SOLUSDT"),
            fill("-10", "110", asset="SOLUSDT"),
        )
    )
    t = totals_of([btc, eth, sol])
    assert t.unrealized == D("100.00")
    assert t.realized == D("100")  # the closed SOL position still counts
    assert t.open_count == 2 and t.long_count == 1 and t.short_count == 1
    assert t.net == D("50150") - D("6050")
    assert t.exposure == D("50150") + D("6050")


def test_price_falls_back_to_entry_and_is_flagged() -> None:
    c = contribution(book_of("BTCUSDT", fill("2", "100")))
    assert c.exposure == D("200") and c.price_fallback


def test_incremental_equals_recomputation_and_replays_are_ignored() -> None:
    r = Runner()
    totals = Totals()
    table: dict[str, Contribution] = {}
    for offset, ev in enumerate((fill("1", "100"), price("110"), fill("-0.5", "120"), price("90"))):
        r(ev)
        assert r.book is not None
        c = contribution(r.book)
        d = decide(totals, table.get(c.asset), c, offset=offset, now=NOW, max_exposure=None)
        assert d.totals is not None and d.write_contribution
        totals, table[c.asset] = d.totals, c
        # The same message again (a replay of the offset) changes nothing.
        again = decide(totals, table[c.asset], c, offset=offset, now=NOW, max_exposure=None)
        assert again.totals is None and not again.write_contribution
        assert again.kind == "duplicate"
    assert totals.exposure == totals_of(table.values()).exposure == D("45")
    assert totals.realized == D("10")


def test_replay_after_lost_contribution_write_repairs_without_double_count() -> None:
    c1 = contribution(book_of("BTCUSDT", fill("1", "100")))
    t1 = decide(Totals(), None, c1, offset=7, now=NOW, max_exposure=None).totals
    assert t1 is not None
    # Totals written, the contribution write lost: the replay only repairs.
    d = decide(t1, None, c1, offset=7, now=NOW, max_exposure=None)
    assert d.totals is None and d.write_contribution and d.kind == "repaired"


def test_an_older_version_never_moves_an_asset_back() -> None:
    r = Runner()
    r(fill("1", "100"))
    assert r.book is not None
    old = contribution(r.book)
    r(fill("1", "100"))
    assert r.book is not None
    new = contribution(r.book)
    t = decide(Totals(), None, new, offset=1, now=NOW, max_exposure=None).totals
    assert t is not None
    d = decide(t, new, old, offset=2, now=NOW, max_exposure=None)
    assert d.totals is None and d.kind == "stale"


def test_limit_crossing_is_flagged_once() -> None:
    limit = D("1000")
    r = Runner()
    totals, prev, crossings = Totals(), None, 0
    for i, ev in enumerate(
        (fill("5", "100"), fill("6", "100"), fill("1", "100"), fill("-10", "100"), fill("9", "100"))
    ):
        r(ev)
        assert r.book is not None
        c = contribution(r.book)
        d = decide(totals, prev, c, offset=i, now=NOW, max_exposure=limit)
        assert d.totals is not None
        crossings += d.crossed_limit
        totals, prev = d.totals, c
    # 500 -> 1100 (cross) -> 1200 -> 200 -> 1100 (cross again)
    assert crossings == 2 and totals.limit_exceeded


def test_codecs_round_trip_and_event_ids_are_deterministic() -> None:
    c = contribution(book_of("BTCUSDT", fill("1.5", "48666.666666666666666666666667")))
    assert Contribution.from_bytes(c.to_bytes()) == c
    asset, exposure = exposure_from_bytes(c.to_bytes())
    assert asset == "BTCUSDT" and exposure == c.exposure
    assert str(exposure) == str(Contribution.from_bytes(c.to_bytes()).exposure)
    for bad in (
        b"[]",
        b"{",
        b'{"asset": "BTCUSDT"}',
        b'{"asset": "X", "exposure": 5}',
        b'{"asset": "X", "exposure": "x"}',
    ):
        with pytest.raises(UNDECODABLE):
            exposure_from_bytes(bad)
    t = totals_of([c])
    t = decide(Totals(), None, c, offset=3, now=NOW, max_exposure=None).totals
    assert t is not None
    assert Totals.from_bytes(t.to_bytes()) == t
    e1 = portfolio_event("portfolio_updated", t, NOW, None)
    e2 = portfolio_event("portfolio_updated", t, NOW + timedelta(seconds=5), None)
    assert e1 == e2 and e1["event_id"] == "portfolio:1:portfolio_updated"
    assert e1["trace_id"] == t.trace_id and e1["event_type"] == "portfolio_updated"


def test_a_record_carries_a_batch_of_contributions_and_reads_the_one_object_form() -> None:
    cs = [
        contribution(book_of("BTCUSDT", fill("1", "100"))),
        contribution(book_of("ETHUSDT", fill("-2", "10"))),
    ]
    assert contributions_from_bytes(contributions_to_bytes(cs)) == cs
    assert contributions_from_bytes(cs[0].to_bytes()) == cs[:1]  # records before batching


def test_each_contribution_of_a_record_counts_once_and_a_replay_of_it_none() -> None:
    cs = [contribution(book_of(a, fill("1", "100"))) for a in ("AAUSDT", "BBUSDT", "CCUSDT")]
    totals, table = Totals(), {}
    for index, c in enumerate(cs):  # one record at offset 5
        d = decide(totals, None, c, offset=5, index=index, now=NOW, max_exposure=None)
        assert d.totals is not None and d.kind == "applied", index
        totals, table[c.asset] = d.totals, c
    assert totals.exposure == D("300") and (totals.last_offset, totals.last_index) == (5, 2)
    restored = Totals.from_bytes(totals.to_bytes())
    assert restored == totals
    for index, c in enumerate(cs):  # the record replayed after a restart
        again = decide(
            restored, table[c.asset], c, offset=5, index=index, now=NOW, max_exposure=None
        )
        assert again.totals is None and again.kind == "duplicate"
    # A totals record written before `last_index` existed reads as index 0.
    old = orjson.loads(totals.to_bytes())
    del old["last_index"]
    assert Totals.from_bytes(orjson.dumps(old)).last_index == 0


sizes = st.decimals(min_value=-50, max_value=50, places=3, allow_nan=False).filter(lambda d: d != 0)
prices = st.decimals(min_value=1, max_value=1000, places=2, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["AAUSDT", "BBUSDT", "CCUSDT"]), sizes, prices)))
def test_incremental_totals_match_recomputation(steps: list[tuple[str, Decimal, Decimal]]) -> None:
    runners: dict[str, Runner] = {}
    table: dict[str, Contribution] = {}
    totals = Totals()
    for i, (asset, q, p) in enumerate(steps):
        r = runners.setdefault(asset, Runner())
        r(fill(str(q), str(p), asset=asset))
        assert r.book is not None
        c = contribution(r.book)
        d = decide(totals, table.get(asset), c, offset=i, now=NOW, max_exposure=None)
        assert d.totals is not None
        totals, table[asset] = d.totals, c
    fresh = totals_of(table.values())
    assert (totals.exposure, totals.net, totals.unrealized, totals.realized) == (
        fresh.exposure,
        fresh.net,
        fresh.unrealized,
        fresh.realized,
    )
    assert (totals.open_count, totals.long_count, totals.short_count) == (
        fresh.open_count,
        fresh.long_count,
        fresh.short_count,
    )


def test_the_largest_accepted_values_never_overflow_the_portfolio_math() -> None:
    """|size| and price just below 10^18 with 18 places (the bridge's bounds): the
    contribution and the totals are computed without a Decimal signal."""
    big = "999999999999999999.999999999999999999"
    books = [
        book_of("BTCUSDT", fill(big, big), price(big)),
        book_of("ETHUSDT", fill("-" + big, "0.000000000000000001"), price(big)),
    ]
    totals = Totals()
    for offset, book in enumerate(books):
        c = contribution(book)
        assert c.exposure > Decimal("9.99e35")
        totals = totals.apply(None, c, offset=offset, now=NOW)
    exact = sum((Fraction(contribution(b).exposure) for b in books), Fraction(0))
    assert Fraction(totals.exposure) == exact


def test_exposure_as_of_a_change_replaces_the_assets_known_contribution() -> None:
    from pm_streams.exposure import Exposure

    btc = book_of("BTCUSDT", fill("1", "100"))  # exposure 100 (entry price)
    eth = book_of("ETHUSDT", fill("3", "100", asset="ETHUSDT"))  # exposure 300
    exposure = Exposure()
    assert exposure.as_of(btc) == 100  # nothing known yet: the change alone
    exposure.take_contribution(contribution(btc).to_bytes())
    assert exposure.as_of(eth) == 400
    bigger = book_of("BTCUSDT", fill("1", "100"), fill("1", "100"))
    assert exposure.as_of(bigger) == 200  # BTC's known 100 replaced by its new 200
    # ETH's contribution known before or after its change: the same total either way,
    # never ETH twice (the portfolio's totals record could be read before it).
    assert exposure.as_of(eth) == 400
    exposure.take_contribution(contribution(eth).to_bytes())
    assert exposure.as_of(eth) == 400
    assert exposure.total == 400


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["AUSDT", "BUSDT", "CUSDT"]), st.integers(0, 10**6)),
        max_size=30,
    )
)
def test_the_known_total_is_the_sum_of_each_assets_latest_contribution(
    changes: list[tuple[str, int]],
) -> None:
    from pm_streams.exposure import Exposure

    exposure = Exposure()
    latest: dict[str, int] = {}
    for asset, size in changes:
        book = book_of(asset, fill(str(size), "1.5", asset=asset)) if size else None
        c = contribution(book) if book else None
        if c is not None:
            exposure.take_contribution(c.to_bytes())
            latest[asset] = size
    assert exposure.total == sum(Decimal(v) * Decimal("1.5") for v in latest.values())


def _reference_contribution(book):  # type: ignore[no-untyped-def]
    """The contribution as first written: operators under `localcontext`, exposure in a
    loop of its own; `contribution` must give exactly this."""
    from decimal import localcontext

    from pm_streams.domain.legs import AGGREGATE_CONTEXT
    from pm_streams.domain.portfolio import SCALE, ZERO

    with localcontext(AGGREGATE_CONTEXT):
        net = unrealized = realized = size = exposure = ZERO
        counts = [0, 0, 0]
        fallback = False
        for leg in book.legs:
            realized += leg.realized_pnl
            if leg.size == 0:
                continue
            p = leg.current_price
            if p is None:
                p, fallback = leg.average_entry_price, True
            net += leg.size * p
            exposure += abs(leg.size) * p
            unrealized += leg.unrealized_pnl
            size += leg.size
            counts[0] += 1
            counts[1 if leg.size > 0 else 2] += 1
        fixed = [
            x.quantize(SCALE).normalize() if x else ZERO
            for x in (exposure, net, unrealized, realized)
        ]
    return (
        *fixed,
        size,
        *counts,
        fallback,
        sum(leg.version for leg in book.legs),
        max(leg.last_updated for leg in book.legs),
    )


leg_events = st.one_of(
    st.tuples(
        st.just("fill"), st.sampled_from(["one-way", "hedge-long", "hedge-short"]), sizes, prices
    ),
    st.tuples(
        st.just("push"), st.sampled_from(["one-way", "hedge-long", "hedge-short"]), sizes, prices
    ),
    st.tuples(st.just("price"), st.just("one-way"), sizes, prices),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(leg_events, min_size=1, max_size=12))
def test_a_contribution_is_exactly_the_reference_sum_over_the_legs(events) -> None:  # type: ignore[no-untyped-def]
    """Hedge legs, fills, exchange pushes (PnL, marks) and price updates in any order."""
    book = None
    new_id = id_factory()
    for kind, mode, q, p in events:
        q = abs(q) if mode == "hedge-long" else -abs(q) if mode == "hedge-short" else q
        if kind == "fill":
            event: Event = fill(str(q), str(p), "0.01", mode=mode)
        elif kind == "push":
            event = push(str(q), str(p), upnl=str(q * 3), rpnl="-1.5", mark=str(p + 1), mode=mode)
        else:
            event = price(str(p))
        book, _ = apply(book, event, NOW, CFG, new_id=new_id)
    if book is None or not book.legs:
        return
    c = contribution(book)
    raw = c.to_bytes()
    asset, exposure = exposure_from_bytes(raw)  # what the exposure follower reads
    assert asset == c.asset and exposure == c.exposure
    assert str(exposure) == str(Contribution.from_bytes(raw).exposure)  # digit for digit
    got = (
        c.exposure,
        c.net,
        c.unrealized,
        c.realized,
        c.size,
        c.open_count,
        c.long_count,
        c.short_count,
        c.price_fallback,
        c.version,
        c.at,
    )
    want = _reference_contribution(book)
    assert got == want
    assert [str(x) for x in got[:5]] == [str(x) for x in want[:5]]  # digit for digit
