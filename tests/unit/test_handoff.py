"""`pm_streams.handoff.Handoff`, and the round trips it relies on: decoding the bytes an
event or a contributions record was encoded to gives the object back, digit for digit."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from datetime import UTC, datetime
from decimal import Decimal

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from pm_streams.domain import Fill, decimal_text, decode_json, event_from_bytes, event_to_bytes
from pm_streams.domain.parse import parse_order_executed
from pm_streams.domain.portfolio import (
    Contribution,
    _s,
    contribution,
    contributions_from_bytes,
    contributions_to_bytes,
)
from pm_streams.handoff import Handoff
from tests.unit.helpers import fill, price, push
from tests.unit.test_portfolio import book_of


def test_an_object_is_taken_once_by_equal_bytes_and_the_oldest_go_first() -> None:
    h: Handoff[str] = Handoff(capacity=3)
    for i in range(5):
        h.put(f"r{i}".encode(), f"o{i}")
    assert len(h) == 3
    assert h.take(b"r0") is None and h.take(b"r1") is None  # pushed out
    assert h.take(bytes(bytearray(b"r3"))) == "o3"  # equal bytes, another object
    assert h.take(b"r3") is None  # once
    assert h.take(b"r4") == "o4" and h.take(b"r2") == "o2" and len(h) == 0


def _same(a: object, b: object, spell: Callable[[Decimal], str] = str) -> None:
    """Equal field by field, each Decimal spelt the same by `spell`."""
    assert type(a) is type(b)
    for f in fields(a):  # type: ignore[arg-type]
        x, y = getattr(a, f.name), getattr(b, f.name)
        assert x == y, f.name
        if isinstance(x, Decimal):
            assert spell(x) == spell(y), f.name
        if isinstance(x, datetime):
            assert x.utcoffset() == y.utcoffset(), f.name


numbers = st.one_of(
    st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("1e12"), places=8).map(str),
    st.sampled_from(["1E+2", "0.0100", "5e-3", "100.000000000000000000", "12345678.9"]),
)


@settings(max_examples=200, deadline=None)
@given(
    qty=numbers,
    px=numbers,
    fee=numbers,
    as_number=st.booleans(),
    side=st.sampled_from(["BUY", "SELL", "buy"]),
    at=st.sampled_from(["2026-12-03T10:10:00Z", "2026-12-03T12:10:00.123456+02:00", None]),
)
def test_a_parsed_fill_comes_back_from_its_bytes_digit_for_digit(
    qty: str, px: str, fee: str, as_number: bool, side: str, at: str | None
) -> None:
    body = {"asset": "BTCUSDT", "side": side, "execution_id": "e-1", "trace_id": "t-1"}
    body.update(execution_quantity=qty, execution_price=px, execution_fees=fee)
    if at is not None:
        body["executed_at"] = at
    raw = orjson.dumps(body)
    if as_number:  # JSON numbers, read as the Decimal of their own text
        raw = raw.replace(f'"{px}"'.encode(), px.encode())
    event = parse_order_executed(decode_json(raw), new_trace_id=lambda: "new")
    assert isinstance(event, Fill)
    data = event_to_bytes(event)
    back = event_from_bytes(data)
    _same(back, event)
    assert event_to_bytes(back) == data


def test_contributions_come_back_from_their_record_digit_for_digit() -> None:
    books = [
        book_of("BTCUSDT", fill("1.50", "49000.10"), price("50000")),
        book_of("ETHUSDT", push("-2", "3000.5", upnl="-1.25", mark="3001", rpnl="100")),
        book_of("SOLUSDT", fill("1000", "0.001"), fill("-1000", "0.002")),
    ]
    taken = [contribution(b) for b in books]
    raw = contributions_to_bytes(taken)
    back = contributions_from_bytes(raw)
    # A contribution is spelt in full (`_s`) wherever it goes (records, totals) and
    # shown as `decimal_text`: the exponent of its Decimal never reaches a reader.
    for a, b in zip(back, taken, strict=True):
        _same(a, b, _s)
        _same(a, b, decimal_text)
    assert contributions_to_bytes(back) == raw
    assert all(isinstance(c, Contribution) and c.at.tzinfo is UTC for c in back)
