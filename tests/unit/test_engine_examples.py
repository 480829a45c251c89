"""SPEC §4 worked examples and the seed's test cases, to the cent."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from pm_streams.domain import (
    Book,
    Correction,
    EngineConfig,
    LedgerEntry,
    Note,
    Publish,
    ScheduleValidation,
    SnapshotTaken,
    apply,
    features,
    hedge_view,
    needs_write,
    position_to_dict,
)
from tests.unit.helpers import (
    ASSET,
    CFG,
    NOW,
    D,
    Runner,
    fill,
    id_factory,
    kinds,
    open_at,
    price,
    push,
)

CENT = Decimal("0.01")
LATER = NOW + timedelta(minutes=5)


# --------------------------------------------------------------------------- §4.1 fills


def test_open_from_nothing() -> None:
    r = Runner()
    effects = r(fill("1.0", "48000", "4.80", trace="t-open"))
    p = r.leg()
    assert p.id == "pos-1"
    assert (p.size, p.average_entry_price, p.side) == (D("1.0"), D("48000"), "long")
    assert p.realized_pnl == D("-4.80") and p.total_fees == D("4.80")  # paid now (rev 2)
    assert p.version == 1
    assert p.created_at == p.opened_at == p.last_updated == NOW
    assert p.closed_at is None and p.current_price is None
    assert kinds(effects) == ["LedgerEntry", "publish:position_updated:order_execution"]
    ledger = effects[0]
    assert isinstance(ledger, LedgerEntry) and ledger.position_id == p.id
    assert effects[1] == Publish("position_updated", "one-way", "order_execution", "t-open")


def test_increase_weighted_average_tc004() -> None:
    r = open_at("1.0", "48000.00")
    effects = r(fill("0.5", "50000.00", "25.00"), now=LATER)
    p = r.leg()
    assert p.size == D("1.5")
    assert p.average_entry_price.quantize(CENT) == D("48666.67")
    # stored exactly, not rounded: 73000 / 1.5
    assert abs(p.average_entry_price * D("1.5") - D("73000")) < D("1e-40")
    assert p.realized_pnl == D("-25.00")  # the increase's fee, paid now (rev 2)
    assert p.total_fees == D("25.00")
    assert p.version == 2
    assert p.opened_at == NOW and p.last_updated == LATER
    assert kinds(effects) == ["LedgerEntry", "publish:position_updated:order_execution"]


def test_reduce_realizes_pnl_tc005() -> None:
    r = open_at("2.0", "50000.00")
    r(price("51000.00"))
    assert r.leg().unrealized_pnl == D("2000")
    effects = r(fill("-0.5", "51000.00", "25.50"))
    p = r.leg()
    assert p.size == D("1.5")
    assert p.realized_pnl == D("474.50")
    assert p.average_entry_price == D("50000")
    assert p.total_fees == D("25.50")
    assert p.unrealized_pnl == D("1500")  # recomputed for the remaining 1.5
    assert kinds(effects) == ["LedgerEntry", "publish:position_updated:order_execution"]


def test_reduce_short_position() -> None:
    r = open_at("-2", "100")
    r(fill("1", "90", "1"))
    p = r.leg()
    assert p.size == D("-1") and p.side == "short"
    assert p.realized_pnl == D("9")  # (90 - 100) * 1 * -1 - 1
    assert p.long_size == 0 and p.short_size == D("1")


def test_exact_close_tc006() -> None:
    r = open_at("1.0", "50000.00")
    r(price("50500"))
    effects = r(fill("-1.0", "51000.00", "51.00", trace="t-close"), now=LATER)
    p = r.leg()
    assert p.size == 0 and p.side == "flat" and not p.is_open
    assert p.realized_pnl == D("949.00")
    assert p.unrealized_pnl == 0
    assert p.closed_at == LATER
    assert p.average_entry_price == D("50000")  # kept for history
    assert effects[-1] == Publish("position_closed", "one-way", "order_execution", "t-close")
    assert kinds(effects) == ["LedgerEntry", "publish:position_closed:order_execution"]
    assert position_to_dict(p)["size"] in ("0", "0.0")


def test_reopen_keeps_id_and_clears_closed_at() -> None:
    r = open_at("1", "100")
    first_id = r.leg().id
    r(fill("-1", "110"))
    assert r.leg().closed_at == NOW
    r(fill("2", "120"), now=LATER)
    p = r.leg()
    assert p.id == first_id
    assert p.closed_at is None and p.opened_at == LATER
    assert p.average_entry_price == D("120")  # a fresh basis, not mixed with the old one
    assert p.realized_pnl == D("10")
    assert p.version == 3


def test_flip_long_to_short_spec_example() -> None:
    r = open_at("100", "50")
    effects = r(fill("-150", "55", trace="t-flip"), now=LATER)
    p = r.leg()
    assert p.realized_pnl == D("500")
    assert (p.size, p.average_entry_price) == (D("-50"), D("55"))
    assert p.side == "short" and p.short_size == D("50")
    assert p.opened_at == LATER and p.closed_at is None
    assert kinds(effects) == [
        "LedgerEntry",
        "publish:position_closed:order_execution",
        "publish:position_updated:order_execution",
    ]


def test_flip_charges_the_whole_fee() -> None:
    r = open_at("100", "50")
    r(fill("-150", "55", "15"))
    p = r.leg()
    assert p.realized_pnl == D("485")  # 500 - 15: the whole fee is paid now (rev 2)
    assert p.total_fees == D("15")
    assert (p.size, p.average_entry_price) == (D("-50"), D("55"))
    r2 = open_at("1", "10")
    r2(fill("-4", "10", "1"))
    p2 = r2.leg()
    assert p2.realized_pnl == D("-1")
    assert p2.total_fees == D("1")
    assert p2.size == D("-3")


def test_flip_short_to_long() -> None:
    r = open_at("-2", "100")
    r(fill("3", "80"))
    p = r.leg()
    assert p.realized_pnl == D("40")
    assert (p.size, p.average_entry_price) == (D("1"), D("80"))


def test_unrealized_after_fill_uses_current_price() -> None:
    r = open_at("1", "100")
    r(price("110"))
    r(fill("1", "120"))
    p = r.leg()
    assert p.average_entry_price == D("110")
    assert p.unrealized_pnl == D("0")  # (110 - 110) * 2
    r(fill("-3", "105"))  # flip to short 1 @ 105
    p = r.leg()
    assert p.unrealized_pnl == D("-5")  # (110 - 105) * -1


def test_unrealized_unchanged_without_price() -> None:
    r = open_at("1", "100")
    r(fill("1", "120"))
    assert r.leg().unrealized_pnl == 0
    assert r.leg().current_price is None


def test_funding_paid_and_received() -> None:
    r = open_at("1", "50000")
    effects = r(fill("0", "0", "1.25", funding=True))
    p = r.leg()
    assert (p.size, p.average_entry_price) == (D("1"), D("50000"))
    assert p.realized_pnl == D("-1.25") and p.total_fees == D("1.25")
    assert kinds(effects) == ["LedgerEntry", "publish:position_updated:order_execution"]
    r(fill("0", "0", "-0.75", funding=True))
    p = r.leg()
    assert p.realized_pnl == D("-0.50") and p.total_fees == D("0.50")
    assert p.version == 3


def test_version_bumps_on_every_applied_change() -> None:
    r = open_at("1", "100")
    r(fill("1", "100"), fill("-1", "100"), price("101"), push("1", mark="102"))
    assert r.leg().version == 5


# --------------------------------------------------------------------------- duplicates


def test_duplicate_fill_is_ignored() -> None:
    r = open_at("1", "100")
    f = fill("0.5", "110", "1", fid="exec-1")
    r(f)
    before = r.book
    new, effects = apply(before, f, LATER, CFG, new_id=id_factory())
    assert new is before
    assert [type(e) for e in effects] == [Note]
    assert effects[0].kind == "duplicate_fill"  # type: ignore[union-attr]
    assert ("fill_id", "exec-1") in effects[0].fields  # type: ignore[union-attr]


def test_duplicate_detected_across_modes_of_the_asset() -> None:
    r = Runner()
    r(fill("1", "100", mode="hedge-long", fid="x"))
    before = r.book
    effects = r(fill("-1", "100", mode="hedge-short", fid="x"))
    assert r.book is before and kinds(effects) == ["note:duplicate_fill"]


def test_fill_ids_are_bounded_oldest_dropped() -> None:
    r = Runner(EngineConfig(fill_id_capacity=3))
    for i in range(5):
        r(fill("1", "100", fid=f"f{i}"))
    assert r.book is not None and r.book.fill_ids == ("f2", "f3", "f4")
    assert kinds(r(fill("1", "100", fid="f4"))) == ["note:duplicate_fill"]
    # outside the window a fill id is no longer known (the store's offset guards replays)
    assert "LedgerEntry" in kinds(r(fill("1", "100", fid="f0")))


def test_a_long_fill_id_window_keeps_its_newest_ids() -> None:
    r = Runner()
    for i in range(300):
        r(fill("1", "100", fid=f"id-{i}"))
    assert r.book is not None
    assert len(r.book.fill_ids) == 256 and r.book.fill_ids[-1] == "id-299"
    before = r.book
    assert kinds(r(fill("1", "100", fid="id-150"))) == ["note:duplicate_fill"]
    assert r.book is before
    assert "LedgerEntry" in kinds(r(fill("1", "100", fid="id-10")))
    # the old book object still answers the same (books are values)
    again, _ = apply(before, fill("1", "100", fid="id-299"), NOW, CFG, new_id=id_factory())
    assert again is before
    fresh, _ = apply(before, fill("1", "100", fid="id-300"), NOW, CFG, new_id=id_factory())
    assert fresh is not before


# --------------------------------------------------------------------------- §4.2 exchange


def test_create_from_exchange_tc001() -> None:
    r = Runner()
    effects = r(push("1.5", "50000.00", upnl="150.00", trace="test-trace-001"))
    p = r.leg()
    assert (p.size, p.average_entry_price, p.unrealized_pnl) == (
        D("1.5"),
        D("50000.00"),
        D("150.00"),
    )
    d = position_to_dict(p)  # output decimals: trailing zeros stripped (rev 2)
    assert d["size"] == "1.5" and d["average_entry_price"] == "50000"
    assert d["unrealized_pnl"] == "150"
    assert p.exchange_size == D("1.5") and p.exchange_avg_price == D("50000.00")
    assert p.version == 1 and p.opened_at == NOW
    assert effects == (Publish("position_updated", "one-way", "websocket", "test-trace-001"),)
    f = features(p, NOW, D("75000"))
    assert f["unrealized_pnl_pct"] == D("0.2")  # 150 / 75000 * 100
    assert f["position_size_norm"] == 1  # no price: falls back to the entry price


def test_create_short_from_exchange_with_mark() -> None:
    r = Runner()
    r(push("-2", "100", mark="90"))
    p = r.leg()
    assert p.size == D("-2") and p.current_price == D("90") and p.last_price_at == NOW
    assert p.unrealized_pnl == D("20")  # (90 - 100) * -2


def test_update_existing_tc002_size_not_overwritten() -> None:
    r = open_at("1.0", "48000.00")
    effects = r(push("2.0", "49000.00", upnl="200.00", trace="test-trace-002"), now=LATER)
    p = r.leg()
    assert p.size == D("1.0")  # fills own the size (SPEC §4.2)
    assert p.exchange_size == D("2.0")
    assert p.average_entry_price == D("49000.00")  # 2.1% > 0.1%: the exchange's wins
    assert p.unrealized_pnl == D("200.00")
    assert p.last_updated == LATER and p.version == 2
    assert kinds(effects) == [
        "note:avg_price_replaced",
        "note:size_discrepancy",
        "ScheduleValidation",
        "publish:position_updated:websocket",
    ]
    sched = [e for e in effects if isinstance(e, ScheduleValidation)]
    assert sched == [ScheduleValidation(ASSET, "one-way", 10.0, "size_discrepancy")]


def test_size_discrepancy_then_correction_tc003() -> None:
    r = open_at("1.5", "50000.00")
    effects = r(push("1.8", "50000.00", upnl="180.00", trace="test-trace-003"))
    p = r.leg()
    assert p.size == D("1.5") and p.exchange_size == D("1.8")
    assert p.unrealized_pnl == D("180.00")
    assert "note:size_discrepancy" in kinds(effects)
    assert ScheduleValidation(ASSET, "one-way", 10.0, "size_discrepancy") in effects
    # after the grace period validation adopts the exchange's size
    effects = r(Correction(ASSET, "one-way", D("1.8"), None, "val-1", "size_discrepancy"))
    p = r.leg()
    assert p.size == D("1.8") and p.version == 3
    assert kinds(effects) == ["note:position_corrected", "publish:position_updated:validation"]


def test_discrepancy_threshold_is_strict() -> None:
    r = open_at("1.5", "50000")
    effects = r(push("1.5001", "50000"))  # |diff| == threshold: not a discrepancy
    assert "note:size_discrepancy" not in kinds(effects)
    effects = r(push("1.50011", "50000"))
    assert "note:size_discrepancy" in kinds(effects)


def test_fill_in_flight_tc007() -> None:
    r = open_at("1.0", "50000.00")
    effects = r(push("1.2", "50000.00"))
    assert "ScheduleValidation" in kinds(effects)
    r(fill("0.3", "50000.00"))
    p = r.leg()
    assert p.size == D("1.3")  # the fill, not the exchange, sets the size
    assert p.average_entry_price == D("50000.00")
    assert p.exchange_size == D("1.2")
    # the exchange catches up: no discrepancy any more
    effects = r(push("1.3", "50000.00"))
    assert "note:size_discrepancy" not in kinds(effects)


@pytest.mark.parametrize(
    ("ws_avg", "use_ws", "expected"),
    [
        ("50050.00", True, "50000.00"),  # d = 0.001, not above the threshold: kept (TC-008)
        ("50050.01", True, "50050.01"),  # above: replaced
        ("49949.99", True, "49949.99"),
        ("50050.01", False, "50000.00"),  # USE_WS_AVG_PRICE=false
    ],
)
def test_avg_price_threshold_tc008(ws_avg: str, use_ws: bool, expected: str) -> None:
    r = open_at("1.0", "50000.00", runner=Runner(EngineConfig(use_ws_avg_price=use_ws)))
    effects = r(push("1.0", ws_avg, trace="test-trace-008"))
    p = r.leg()
    assert p.average_entry_price == D(expected)
    assert p.exchange_avg_price == D(ws_avg)  # always recorded
    replaced = "note:avg_price_replaced" in kinds(effects)
    assert replaced == (D(expected) != D("50000"))


def test_zero_avg_from_exchange_is_ignored() -> None:
    r = open_at("1", "100")
    r(push("1", "0"))
    assert r.leg().average_entry_price == D("100")


def test_exchange_pnl_and_mark() -> None:
    r = open_at("2", "100")
    r(push("2", mark="105", rpnl="-3"), now=LATER)
    p = r.leg()
    assert p.current_price == D("105") and p.last_price_at == LATER
    assert p.unrealized_pnl == D("10")  # computed: no unrealisedPnl in the push
    assert p.realized_pnl == D("-3")
    r(push("2", mark="106", upnl="11.5"))
    assert r.leg().unrealized_pnl == D("11.5")  # the exchange's value wins


def test_stale_by_seq_and_time() -> None:
    r = open_at("1", "100")
    r(push("1", upnl="5", seq=10, ms=1000))
    before = r.book
    for stale in (
        push("1", upnl="6", seq=9, ms=2000),
        push("1", upnl="6", ms=999),
        push("1", upnl="6", seq=11, ms=999),
    ):
        assert kinds(r(stale)) == ["note:stale_event"]
        assert r.book is before
    r(push("1", upnl="7", ms=1000))  # same ms, no seq: not older
    assert r.leg().unrealized_pnl == D("7")
    r(push("1", upnl="7.5", seq=10, ms=1000))  # the same seq is not older either (rev 2)
    assert r.leg().unrealized_pnl == D("7.5")
    assert kinds(r(push("1", upnl="7.5", seq=10))) == ["note:noop"]  # and may be a no-op
    r(push("1", upnl="8", seq=11))
    p = r.leg()
    assert (p.unrealized_pnl, p.exchange_seq, p.exchange_updated_ms) == (D("8"), 11, 1000)


def test_repeated_push_is_a_noop_and_seq_not_recorded() -> None:
    r = open_at("1", "100")
    r(push("1", "100", upnl="5", mark="105", seq=1))
    before = r.book
    version = r.leg().version
    effects = r(push("1", "100.0", upnl="5.00", mark="105", seq=2), now=LATER)
    assert kinds(effects) == ["note:noop"]
    assert r.book is before
    assert r.leg().version == version and r.leg().exchange_seq == 1


def test_flat_push_for_unknown_leg_creates_nothing() -> None:
    new, effects = apply(None, push("0"), NOW, CFG, new_id=id_factory())
    assert kinds(effects) == ["note:noop"]
    assert not new.legs and not needs_write(None, new)


def test_exchange_update_after_close_reports_discrepancy() -> None:
    r = open_at("1", "100")
    r(fill("-1", "100"))
    effects = r(push("0.5", "100"))
    assert "ScheduleValidation" in kinds(effects)
    assert r.leg().size == 0 and r.leg().average_entry_price == D("100")


# --------------------------------------------------------------------------- prices


def test_price_update_recomputes_every_open_leg() -> None:
    r = Runner()
    r(fill("2", "100", mode="hedge-long"), fill("-1", "110", mode="hedge-short"))
    effects = r(price("105"), now=LATER)
    long_leg, short_leg = r.leg("hedge-long"), r.leg("hedge-short")
    assert long_leg.unrealized_pnl == D("10") and short_leg.unrealized_pnl == D("5")
    assert long_leg.last_price_at == LATER == short_leg.last_price_at
    assert kinds(effects) == ["publish:position_updated:websocket"] * 2
    before = r.book
    assert kinds(r(price("105.0"))) == ["note:noop"]
    assert r.book is before


def test_price_update_skips_closed_legs() -> None:
    r = open_at("1", "100")
    r(fill("-1", "101"))
    before = r.book
    assert kinds(r(price("120"))) == ["note:noop"]
    assert r.book is before


def test_price_update_without_book_writes_nothing() -> None:
    new, effects = apply(None, price("1"), NOW, CFG, new_id=id_factory())
    assert kinds(effects) == ["note:noop"] and not needs_write(None, new)


def test_new_leg_inherits_the_asset_price() -> None:
    r = Runner()
    r(fill("1", "100", mode="hedge-long"), price("104"))
    r(fill("-1", "103", mode="hedge-short"))
    p = r.leg("hedge-short")
    assert p.current_price == D("104") and p.unrealized_pnl == D("-1")


# --------------------------------------------------------------------------- validation


def test_correction_to_zero_closes() -> None:
    r = open_at("1", "100")
    effects = r(Correction(ASSET, "one-way", D("0"), None, "val", "exchange flat"), now=LATER)
    p = r.leg()
    assert p.size == 0 and p.closed_at == LATER and p.unrealized_pnl == 0
    assert kinds(effects) == ["note:position_corrected", "publish:position_closed:validation"]


def test_correction_avg_only_and_noop() -> None:
    r = open_at("1", "100")
    r(price("110"))
    r(Correction(ASSET, "one-way", None, D("105"), "val", "avg"))
    p = r.leg()
    assert p.average_entry_price == D("105") and p.unrealized_pnl == D("5")
    before = r.book
    assert kinds(r(Correction(ASSET, "one-way", D("1"), D("105"), "v", "same"))) == ["note:noop"]
    assert r.book is before


def test_correction_creates_a_missing_position() -> None:
    r = Runner()
    effects = r(Correction(ASSET, "one-way", D("2"), D("50"), "val", "exchange has it"))
    p = r.leg()
    assert (p.size, p.average_entry_price, p.version) == (D("2"), D("50"), 1)
    assert p.opened_at == NOW
    assert kinds(effects) == ["note:position_corrected", "publish:position_updated:validation"]


def test_correction_reopens_a_closed_position() -> None:
    r = open_at("1", "100")
    r(fill("-1", "100"))
    r(Correction(ASSET, "one-way", D("0.5"), D("99"), "val", "exchange"), now=LATER)
    p = r.leg()
    assert p.closed_at is None and p.opened_at == LATER and p.size == D("0.5")


def test_snapshot_taken_sets_time_without_version() -> None:
    r = open_at("1", "100")
    before = r.book
    effects = r(SnapshotTaken(ASSET, "one-way", LATER, "snap"))
    assert effects == ()
    assert r.book is not before
    p = r.leg()
    assert p.last_snapshot_at == LATER and p.version == 1
    assert kinds(r(SnapshotTaken(ASSET, "hedge-long", LATER, "snap"))) == ["note:noop"]


# --------------------------------------------------------------------------- hedge


def test_hedge_legs_are_independent() -> None:
    r = Runner()
    r(fill("1", "100", mode="hedge-long"))
    r(fill("-2", "110", mode="hedge-short"))
    r(fill("-2", "120", mode="hedge-short"))  # SELL on the short leg increases it
    long_leg, short_leg = r.leg("hedge-long"), r.leg("hedge-short")
    assert (long_leg.size, long_leg.long_size, long_leg.short_size) == (D("1"), D("1"), 0)
    assert (short_leg.size, short_leg.short_size) == (D("-4"), D("4"))
    assert short_leg.average_entry_price == D("115")
    assert long_leg.id != short_leg.id
    assert r.book is not None and [p.mode for p in r.book.legs] == ["hedge-long", "hedge-short"]
    r(fill("-0.5", "130", mode="hedge-long"))  # SELL on the long leg reduces it
    assert r.leg("hedge-long").realized_pnl == D("15")
    r(fill("1", "100", mode="hedge-short"))  # BUY on the short leg reduces it
    assert r.leg("hedge-short").realized_pnl == D("15")
    view = hedge_view(r.book.legs)
    assert view["size"] == "-2.5"  # long 0.5 - short 3
    assert (view["long_size"], view["short_size"]) == ("0.5", "3")
    assert D(view["realized_pnl"]) == 30
    assert [leg["mode"] for leg in view["legs"]] == ["hedge-long", "hedge-short"]


def test_hedge_overclose_closes_leg_and_ignores_rest() -> None:
    r = Runner()
    r(fill("1", "100", mode="hedge-long"))
    effects = r(fill("-3", "110", "3", mode="hedge-long"))
    p = r.leg("hedge-long")
    assert p.size == 0 and p.closed_at == NOW
    assert p.realized_pnl == D("7")  # (110 - 100) * 1 - the whole fee
    assert p.total_fees == D("3")
    assert kinds(effects) == [
        "LedgerEntry",
        "note:hedge_overclose",
        "publish:position_closed:order_execution",
    ]
    note = effects[1]
    assert isinstance(note, Note) and note.get("applied") == "-1"
    # a reduce of an empty hedge leg changes nothing but the fee
    effects = r(fill("-1", "110", "1", mode="hedge-long"))
    p = r.leg("hedge-long")
    assert p.size == 0 and p.realized_pnl == D("6") and p.total_fees == D("4")
    assert "note:hedge_overclose" in kinds(effects)


def test_hedge_short_overclose() -> None:
    r = Runner()
    r(fill("-1", "100", mode="hedge-short"))
    r(fill("5", "90", mode="hedge-short"))
    p = r.leg("hedge-short")
    assert p.size == 0 and p.realized_pnl == D("10")


# --------------------------------------------------------------------------- features §4.4


def test_take_profit_feature_tc017() -> None:
    r = open_at("1.0", "50000.00")
    r(price("51500.00"))
    f = features(r.leg(), NOW, D("51500"))
    assert f["unrealized_pnl_pct"] == D("3.0")


def test_position_size_norm_tc018_tc019() -> None:
    r = open_at("1.0", "50000.00")
    r(price("50000.00"))
    assert features(r.leg(), NOW, D("100000.00"))["position_size_norm"] == D("0.5")
    r(fill("1.0", "50000.00"))
    assert features(r.leg(), NOW, D("100000.00"))["position_size_norm"] == D("1.0")
    assert features(r.leg(), NOW, D("0"))["position_size_norm"] == 0


def test_time_held_and_flat_features() -> None:
    r = open_at("1", "100")
    p = r.leg()
    assert features(p, NOW + timedelta(minutes=5, seconds=59), D("1"))["time_held_minutes"] == 5
    assert features(p, NOW - timedelta(minutes=1), D("1"))["time_held_minutes"] == 0
    r(fill("-1", "100"))
    f = features(r.leg(), NOW + timedelta(hours=1), D("1"))
    assert f == {"unrealized_pnl_pct": None, "time_held_minutes": 0, "position_size_norm": 0}


def test_negative_pnl_pct_for_short() -> None:
    r = open_at("-2", "100")
    r(price("103"))
    assert features(r.leg(), NOW, D("206"))["unrealized_pnl_pct"] == D("-3")


# --------------------------------------------------------------------------- misc


def test_duplicate_ws_event_tc030_changes_once() -> None:
    r = open_at("1", "100")
    ev = push("1", "100", upnl="5", trace="dup-001")
    r(ev)
    version = r.leg().version
    assert kinds(r(ev)) == ["note:noop"]
    assert r.leg().version == version


def test_wrong_asset_is_a_programming_error() -> None:
    book = Book(asset="ETHUSDT", legs=(), fill_ids=())
    with pytest.raises(ValueError, match="ETHUSDT"):
        apply(book, fill("1", "1"), NOW, CFG, new_id=id_factory())


def test_unknown_mode_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="mode"):
        apply(None, fill("1", "1", mode="hedge"), NOW, CFG, new_id=id_factory())


def test_engine_config_validation() -> None:
    with pytest.raises(ValueError):
        EngineConfig(fill_id_capacity=0)
    with pytest.raises(ValueError):
        EngineConfig(size_validation_threshold=D("-1"))


# --------------------------------------------------------------------------- SPEC rev 2


def test_rev2_worked_example_fees_in_realized() -> None:
    r = Runner()
    r(fill("2", "100", "0.2"), fill("-2", "110", "0.22"))
    p = r.leg()
    assert p.realized_pnl == D("19.58")  # 20 - 0.2 - 0.22
    assert p.total_fees == D("0.42") and p.size == 0


def test_rev2_second_worked_example_holds_with_a_fee_less_open() -> None:
    r = open_at("2.0", "50000")
    r(fill("-0.5", "51000", "25.50"))
    assert (r.leg().size, r.leg().realized_pnl) == (D("1.5"), D("474.50"))


def test_funding_is_realized_and_reported_apart() -> None:
    r = open_at("1", "100")
    r(fill("0", fee="1.25", funding=True), fill("0", fee="-0.40", funding=True))
    p = r.leg()
    assert p.funding_pnl == D("-0.85")  # paid 1.25, received 0.40
    assert p.realized_pnl == D("-0.85") and p.total_fees == D("0.85")
    assert position_to_dict(p)["funding_pnl"] == "-0.85"
