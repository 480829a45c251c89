"""Wire forms: exact round trips of table records and input events; the API dict."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Context, Decimal

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pm_streams.domain import (
    Book,
    Correction,
    Event,
    ExchangeUpdate,
    Fill,
    LedgerEntry,
    Note,
    Position,
    PriceUpdate,
    Publish,
    ScheduleValidation,
    SnapshotTaken,
    decimal_text,
    event_from_bytes,
    event_to_bytes,
    features,
    iso,
    position_to_dict,
)
from pm_streams.stored import Stored, record_floor, stored_from_bytes, stored_to_bytes
from tests.unit.helpers import NOW, D, Runner, fill, price, push

EVENTS: list[Event] = [
    Fill("BTCUSDT", "one-way", D("-0.5"), D("50000.00"), D("25.50"), "e-1", "o-1", NOW, "t"),
    Fill("BTCUSDT", "hedge-long", D("0"), D("0"), D("-1.2"), "f", None, None, "t", True),
    ExchangeUpdate(
        "ETHUSDT", "hedge-short", D("-2"), D("3000.5"), D("-1"), D("2"), D("3001"), 7, 17, "t"
    ),
    ExchangeUpdate("ETHUSDT", "one-way", None, None, None, None, None, None, None, "t"),
    PriceUpdate("SOLUSDT", D("101.25"), "px"),
    Correction("BTCUSDT", "one-way", D("1.8"), None, "v", "size_discrepancy"),
    Correction("BTCUSDT", "one-way", None, D("49000"), "v", "avg"),
    SnapshotTaken("BTCUSDT", "one-way", NOW + timedelta(microseconds=123), "s"),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_event_round_trip(event: Event) -> None:
    data = event_to_bytes(event)
    assert event_from_bytes(data) == event
    assert "type" in orjson.loads(data)


def test_event_wire_form_is_readable() -> None:
    obj = orjson.loads(event_to_bytes(EVENTS[0]))
    assert obj == {
        "type": "fill",
        "asset": "BTCUSDT",
        "mode": "one-way",
        "quantity": "-0.5",
        "price": "50000.00",
        "fee": "25.50",
        "fill_id": "e-1",
        "order_id": "o-1",
        "executed_at": "2025-01-15T10:00:00Z",
        "trace_id": "t",
        "is_funding": False,
    }


def test_unknown_event_type() -> None:
    with pytest.raises(ValueError):
        event_from_bytes(b'{"type": "teleport"}')
    with pytest.raises(ValueError):
        event_from_bytes(b"[1]")


def _busy_book() -> Book:
    r = Runner()
    r(fill("1", "100", mode="hedge-long", fid="a,b"), fill("-3", "101", mode="hedge-short"))
    r(price("100.123456789"), push("2", "100", mode="hedge-long", seq=3, ms=99, mark="99"))
    r(fill("2", "97.1", mode="hedge-long"))  # 3 units: a 50-digit average
    assert r.book is not None
    extra = (
        Note("size_discrepancy", (("size", "1"), ("exchange_size", "2"))),
        ScheduleValidation("BTCUSDT", "hedge-long", 10.0, "size_discrepancy"),
        Publish("position_closed", "hedge-short", "validation", "t"),
    )
    return Book(r.book.asset, r.book.legs, r.book.fill_ids, r.book.effects + extra)


def book_to_bytes(book: Book, offset: int = 12345, floor: int | None = None) -> bytes:
    return stored_to_bytes(Stored(book, offset), floor)


def book_from_bytes(raw: bytes) -> Book:
    return stored_from_bytes(raw).book


def test_book_round_trip_exact() -> None:
    book = _busy_book()
    assert any(isinstance(e, LedgerEntry) for e in book.effects)
    stored = stored_from_bytes(book_to_bytes(book))
    assert stored == Stored(book, 12345)
    again = stored.book
    for a, b in zip(again.legs, book.legs, strict=True):
        assert str(a.average_entry_price) == str(b.average_entry_price)  # not rounded
    assert len(str(book.leg("hedge-long").average_entry_price).replace(".", "")) > 40  # type: ignore[union-attr]
    assert book_to_bytes(again) == book_to_bytes(book)


def test_a_record_carries_its_write_cycle_floor() -> None:
    book = _busy_book()
    stamped = book_to_bytes(book, floor=12345 - 7)
    assert record_floor(stamped) == 12345 - 7
    assert stored_from_bytes(stamped) == Stored(book, 12345)  # the floor is not kept
    assert record_floor(book_to_bytes(book)) == 12345  # records written before


def test_book_round_trip_empty_and_odd_ids() -> None:
    for ids in [(), ("",), ("a,b", ""), ("x\x1ey", "é", "a" * 200)]:
        book = Book("BTCUSDT", (), ids)
        assert book_from_bytes(book_to_bytes(book)) == book


def test_book_round_trip_keeps_non_utc_instants() -> None:
    tz = timezone(timedelta(hours=3))
    p = Position(
        id="p",
        asset="XRPUSDT",
        mode="one-way",
        size=D("-0"),
        average_entry_price=D("0E-8"),
        current_price=None,
        unrealized_pnl=D("1E+2"),
        realized_pnl=D("-0.00000001"),
        total_fees=D("0"),
        version=7,
        created_at=datetime(2025, 1, 1, 12, tzinfo=tz),
        opened_at=None,
        last_updated=datetime(2025, 1, 1, 9, 0, 0, 1, tzinfo=UTC),
    )
    again = book_from_bytes(book_to_bytes(Book("XRPUSDT", (p,), ())))
    assert again.legs[0] == p
    assert again.legs[0].created_at == p.created_at


def test_book_rejects_unknown_version() -> None:
    with pytest.raises(ValueError):
        stored_from_bytes(b'{"v": 99}')


def test_position_to_dict() -> None:
    r = Runner()
    r(fill("1.0", "48000.00", "1"), fill("0.5", "50000.00"), price("51000"))
    p = r.leg()
    d = position_to_dict(p)
    assert set(d) == {
        "id",
        "asset",
        "mode",
        "size",
        "side",
        "average_entry_price",
        "current_price",
        "unrealized_pnl",
        "realized_pnl",
        "total_fees",
        "long_size",
        "short_size",
        "version",
        "created_at",
        "opened_at",
        "last_updated",
        "closed_at",
        "last_snapshot_at",
        "last_price_at",
        "exchange_size",
        "exchange_avg_price",
        "funding_pnl",
    }
    assert d["side"] == "long" and d["long_size"] == "1.5" and d["short_size"] == "0"
    assert d["size"] == "1.5" and d["current_price"] == "51000"
    assert d["created_at"] == "2025-01-15T10:00:00Z" and d["closed_at"] is None
    assert Decimal(d["average_entry_price"]).quantize(Decimal("0.01")) == D("48666.67")
    assert position_to_dict(p, places=2)["average_entry_price"] == "48666.67"
    orjson.dumps(d)  # JSON-ready as is

    f = features(p, NOW, D("76500"))
    d = position_to_dict(p, features=f)
    assert d["time_held_minutes"] == 0
    assert Decimal(d["position_size_norm"]) == 1
    assert isinstance(d["unrealized_pnl_pct"], str)


def test_position_to_dict_plain_numbers() -> None:
    p = Position(
        id="p",
        asset="XRPUSDT",
        mode="hedge-short",
        size=D("-1E+2"),
        average_entry_price=D("5E-7"),
        current_price=D("0.00"),
        unrealized_pnl=D("-0"),
        realized_pnl=D("0"),
        total_fees=D("0"),
        version=1,
        created_at=NOW,
        opened_at=NOW,
        last_updated=NOW,
    )
    d = position_to_dict(p)
    assert d["size"] == "-100" and d["average_entry_price"] == "0.0000005"
    assert d["unrealized_pnl"] == "0" and d["current_price"] == "0"
    assert d["side"] == "short" and d["short_size"] == "100"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("50000.00", "50000"),
        ("5E+4", "50000"),
        ("-0", "0"),
        ("-0.000", "0"),
        ("1E-18", "0.000000000000000001"),
        ("0.0000000000000000005", "0"),  # half-even at the 18th place: 0.5e-18 -> 0
        ("0.0000000000000000015", "0.000000000000000002"),
        ("0.0000000000000000025", "0.000000000000000002"),
        ("-1.50000000000000000049", "-1.5"),
        ("48666.666666666666666666666666666666666666666666667", "48666.666666666666666667"),
        ("999999999999999999.999999999999999999", "999999999999999999.999999999999999999"),
        ("7000000000000", "7000000000000"),
        ("0.0000000035", "0.0000000035"),
    ],
)
def test_output_decimals_follow_one_rule(value: str, text: str) -> None:
    assert decimal_text(Decimal(value)) == text


def _rule(d: Decimal) -> str:
    """SPEC §4 rev 2 spelt out: at most 18 places, half-even; no `-0`; plain, no
    trailing zeros."""
    if d.as_tuple().exponent < -18:  # type: ignore[operator]
        d = d.quantize(Decimal("1e-18"), rounding=ROUND_HALF_EVEN, context=Context(prec=200))
    if not d:
        return "0"
    return format(d.normalize(Context(prec=200)), "f")


@given(
    st.decimals(allow_nan=False, allow_infinity=False)
    | st.integers(-(10**40), 10**40).map(lambda i: Decimal(i).scaleb(-36))
    | st.integers(-(10**30), 10**30).map(lambda i: Decimal(i).scaleb(-19))
    | st.integers(-(10**6), 10**6).map(lambda i: Decimal(i).scaleb(30))
    | st.sampled_from(["1E+150", "-7E+120", "1.000E+3", "-0", "0E+5", "0E-40"]).map(Decimal)
)
def test_the_output_text_follows_the_rule(value: Decimal) -> None:
    assert decimal_text(value) == _rule(value)


@given(st.integers(-(10**30), 10**30), st.integers(-40, 20), st.integers(0, 12))
def test_equal_values_in_other_spellings_get_the_same_text_in_any_order(
    digits: int, exponent: int, pad: int
) -> None:
    """The output texts are remembered by value (`output.TEXT_CACHE`): a value spelt
    with more zeros, or normalized, after or before its other spelling, gets the rule's
    text, and so does its negation."""
    value = Decimal(digits).scaleb(exponent)
    padded = value.quantize(Decimal(1).scaleb(exponent - pad), context=Context(prec=200))
    normal = value.normalize(Context(prec=200))
    assert padded == value == normal
    for d in (value, padded, normal, -padded, -value, padded, value):
        assert decimal_text(d) == _rule(d)


def test_equal_instants_in_any_zone_get_the_same_time_text_in_any_order() -> None:
    utc = datetime(2026, 12, 4, 9, 30, 15, 250_000, tzinfo=UTC)
    east = utc.astimezone(timezone(timedelta(hours=2)))
    naive = datetime(2026, 12, 4, 11, 30, 15, 250_000)  # read as UTC: another instant
    assert iso(east) == "2026-12-04T09:30:15.250000Z"
    assert iso(utc) == "2026-12-04T09:30:15.250000Z"
    assert iso(naive) == "2026-12-04T11:30:15.250000Z"
    assert iso(utc.replace(microsecond=0)) == "2026-12-04T09:30:15Z"
    assert iso(None) is None


def test_a_record_written_before_funding_pnl_reads_as_zero_funding() -> None:
    r = Runner()
    r(fill("1", "100"))
    raw = orjson.loads(book_to_bytes(r.book))  # type: ignore[arg-type]
    for leg in raw["legs"]:
        del leg["funding_pnl"]
    again = book_from_bytes(orjson.dumps(raw))
    assert again.legs[0].funding_pnl == 0
