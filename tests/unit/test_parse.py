"""Edge validation of RabbitMQ messages (SPEC §3): every spelling, every rejection."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pm_streams.domain import (
    RejectedInput,
    decode_json,
    fields,
    parse_order_executed,
    parse_position_update,
)

D = Decimal


def new_trace() -> str:
    return "generated-trace"


def order(**overrides: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "event_type": "order_executed",
        "order_id": "order-123",
        "execution_id": "e-1",
        "asset": "BTCUSDT",
        "side": "BUY",
        "execution_price": "50000.00",
        "execution_quantity": "0.5",
        "execution_fees": "25.00",
        "mode": "one-way",
        "executed_at": "2025-01-15T10:10:00Z",
        "trace_id": "t-1",
    }
    for key, value in overrides.items():
        if value is ...:
            msg.pop(key, None)
        else:
            msg[key] = value
    return msg


def position(envelope: dict[str, Any] | None = None, **data: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "symbol": "BTCUSDT",
        "side": "Buy",
        "size": "1.5",
        "avgPrice": "50000.00",
        "unrealisedPnl": "150.00",
        "realisedPnl": "50.00",
        "cumRealisedPnl": "75.00",
        "markPrice": "50100.00",
        "positionValue": "75000.00",
        "leverage": "10",
        "mode": "one-way",
        "positionIdx": 0,
        "updatedTime": "1736935200000",
        "seq": 8172,
        "timestamp": "2025-01-15T10:00:00Z",
    }
    for key, value in data.items():
        if value is ...:
            body.pop(key, None)
        else:
            body[key] = value
    msg: dict[str, Any] = {
        "event_type": "position",
        "channel": "position",
        "trace_id": "ws-1",
        "data": body,
    }
    msg.update(envelope or {})
    return msg


def po(msg: dict[str, Any]):  # type: ignore[no-untyped-def]
    return parse_order_executed(msg, new_trace_id=new_trace)


def pp(msg: dict[str, Any]):  # type: ignore[no-untyped-def]
    return parse_position_update(msg, new_trace_id=new_trace)


def rejected(fn: Any, msg: Any) -> RejectedInput:
    with pytest.raises(RejectedInput) as info:
        fn(msg)
    return info.value


# --------------------------------------------------------------------------- errors


def test_rejected_input_shape() -> None:
    err = RejectedInput("execution_quantity", "not a number")
    assert str(err) == "field 'execution_quantity': not a number"
    assert (err.field, err.reason) == ("execution_quantity", "not a number")
    assert isinstance(err, ValueError)
    again = pickle.loads(pickle.dumps(err))
    assert (again.field, again.reason, str(again)) == (err.field, err.reason, str(err))


# --------------------------------------------------------------------------- fills


def test_order_executed_canonical() -> None:
    f = po(order())
    assert f.asset == "BTCUSDT" and f.mode == "one-way"
    assert (f.quantity, f.price, f.fee) == (D("0.5"), D("50000.00"), D("25.00"))
    assert f.fill_id == "e-1" and f.order_id == "order-123" and f.trace_id == "t-1"
    assert f.executed_at == datetime(2025, 1, 15, 10, 10, tzinfo=UTC)
    assert f.executed_at is not None and f.executed_at.tzinfo is not None
    assert not f.is_funding


@pytest.mark.parametrize("side", ["SELL", "sell", "Sell", " sell "])
def test_sell_is_negative(side: str) -> None:
    assert po(order(side=side)).quantity == D("-0.5")


@pytest.mark.parametrize("side", ["BUY", "buy", "Buy"])
def test_buy_is_positive(side: str) -> None:
    assert po(order(side=side)).quantity == D("0.5")


def test_old_spellings() -> None:
    f = po(
        order(
            event_type="position_updated_from_order",
            execution_quantity=...,
            filled_quantity="0.25",
        )
    )
    assert f.quantity == D("0.25")
    assert po(order(event_type=...)).quantity == D("0.5")


def test_execution_quantity_wins_over_filled_quantity() -> None:
    assert po(order(filled_quantity="9")).quantity == D("0.5")


def test_json_numbers_parse_through_text() -> None:
    f = po(order(execution_quantity=0.1, execution_price=50000, execution_fees=0.3))
    assert (f.quantity, f.price, f.fee) == (D("0.1"), D("50000"), D("0.3"))
    msg = orjson.loads(
        b'{"asset":"ETHUSDT","side":"SELL","execution_price":3000.10,'
        b'"execution_quantity":1.1,"execution_id":"x"}'
    )
    f = po(msg)
    assert (f.quantity, f.price, f.fee) == (D("-1.1"), D("3000.1"), D("0"))


def test_negative_fee_is_a_rebate() -> None:
    assert po(order(execution_fees="-0.5")).fee == D("-0.5")


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("execution_quantity", "abc", "not a number"),
        ("execution_quantity", "1_000", "not a number"),
        ("execution_quantity", "0x10", "not a number"),
        ("execution_quantity", True, "not a number"),
        ("execution_quantity", [1], "not a number"),
        ("execution_quantity", "NaN", "not a finite number"),
        ("execution_quantity", "Infinity", "not a finite number"),
        ("execution_quantity", "-inf", "not a finite number"),
        ("execution_quantity", float("nan"), "not a finite number"),
        ("execution_quantity", "-0.5", "must not be negative"),
        ("execution_quantity", "0", "must be positive"),
        ("execution_quantity", "0.000", "must be positive"),
        ("execution_quantity", "1e40", "out of range"),
        ("execution_quantity", ..., "missing"),
        ("execution_quantity", "", "missing"),
        ("execution_price", "fifty", "not a number"),
        ("execution_price", "-1", "must not be negative"),
        ("execution_price", "0", "must be positive"),
        ("execution_price", ..., "missing"),
        ("execution_fees", "free", "not a number"),
        ("side", ..., "missing"),
        ("side", "HOLD", "not BUY or SELL"),
        ("side", 1, "not BUY or SELL"),
        ("asset", ..., "missing"),
        ("asset", "btcusdt", "does not match ^[A-Z0-9]{2,20}$"),
        ("asset", "B", "does not match ^[A-Z0-9]{2,20}$"),
        ("asset", "BTC-USDT", "does not match ^[A-Z0-9]{2,20}$"),
        ("asset", "BTCUSDT\n", "does not match ^[A-Z0-9]{2,20}$"),
        ("asset", "A" * 21, "does not match ^[A-Z0-9]{2,20}$"),
        ("asset", 42, "not a string"),
        ("event_type", "order_cancelled", "not order_executed or position_updated_from_order"),
        ("executed_at", "yesterday", "not an ISO-8601 timestamp"),
        ("executed_at", "2025-13-40T00:00:00Z", "not an ISO-8601 timestamp"),
        ("executed_at", {"a": 1}, "not an ISO-8601 timestamp"),
        ("mode", "cross", "unknown mode"),
        ("mode", 3, "not a string"),
        ("execution_id", "x" * 201, "too long"),
        ("execution_id", {"id": 1}, "not a string"),
        ("order_id", ["o"], "not a string"),
    ],
)
def test_order_rejections(field: str, value: Any, reason: str) -> None:
    err = rejected(po, order(**{field: value}))
    assert (err.field, err.reason) == (field, reason)


def test_filled_quantity_rejection_names_that_field() -> None:
    err = rejected(po, order(execution_quantity=..., filled_quantity="x"))
    assert err.field == "filled_quantity"


def test_not_an_object() -> None:
    assert rejected(po, ["x"]).field == "body"
    assert rejected(pp, "x").field == "body"


def test_funding() -> None:
    f = po(
        order(
            exec_type="Funding",
            execution_quantity="0.5",
            execution_price=...,
            execution_fees="-1.25",
            side=...,
        )
    )
    assert f.is_funding and f.quantity == 0 and f.price == 0 and f.fee == D("-1.25")
    g = po(order(execType="funding", execution_quantity=..., execution_fees="0.75"))
    assert g.is_funding and g.quantity == 0 and g.fee == D("0.75") and g.price == D("50000.00")
    assert rejected(po, order(exec_type="Funding", execution_price="-1")).field == (
        "execution_price"
    )


@pytest.mark.parametrize(
    ("extra", "mode"),
    [
        ({"mode": "hedge", "position_idx": 1}, "hedge-long"),
        ({"mode": "hedge", "position_idx": "2"}, "hedge-short"),
        ({"mode": "hedge", "positionIdx": 2}, "hedge-short"),
        ({"mode": "hedge", "position_side": "Long"}, "hedge-long"),
        ({"mode": "HEDGE", "position_side": "SHORT"}, "hedge-short"),
        ({"mode": "hedge", "position_idx": 1, "position_side": "long"}, "hedge-long"),
        ({"mode": "hedge-long"}, "hedge-long"),
        ({"mode": "hedge-short", "position_idx": 2}, "hedge-short"),
        ({"mode": ..., "position_idx": 2}, "hedge-short"),
        ({"mode": ..., "position_idx": 0}, "one-way"),
        ({"mode": ...}, "one-way"),
        ({"mode": ..., "position_side": "long"}, "one-way"),
        ({"mode": "one-way", "position_idx": 0, "position_side": "short"}, "one-way"),
    ],
)
def test_modes(extra: dict[str, Any], mode: str) -> None:
    assert po(order(**extra)).mode == mode


@pytest.mark.parametrize(
    ("extra", "field", "reason"),
    [
        ({"mode": "hedge"}, "position_idx", "ambiguous hedge fill"),
        ({"mode": "hedge", "position_idx": 0}, "position_idx", "ambiguous hedge fill"),
        ({"mode": "one-way", "position_idx": 1}, "position_idx", "conflicts with mode one-way"),
        ({"mode": "hedge", "position_idx": 3}, "position_idx", "must be 0, 1 or 2"),
        ({"mode": "hedge", "position_idx": "one"}, "position_idx", "not an integer"),
        ({"mode": "hedge", "position_side": "up"}, "position_side", "not long or short"),
        (
            {"mode": "hedge", "position_idx": 1, "position_side": "short"},
            "position_idx",
            "conflicts with the position side",
        ),
        (
            {"mode": "hedge-long", "position_idx": 2},
            "position_idx",
            "conflicts with mode hedge-long",
        ),
    ],
)
def test_mode_rejections(extra: dict[str, Any], field: str, reason: str) -> None:
    err = rejected(po, order(**extra))
    assert (err.field, err.reason) == (field, reason)


def test_fill_identity_fallbacks() -> None:
    composed = po(order(execution_id=...)).fill_id
    assert composed == "order-123|2025-01-15T10:10:00Z|0.5|50000"
    # the same fill spelled differently has the same identity
    same = po(
        order(
            execution_id=None,
            execution_quantity=0.50,
            execution_price="5E+4",
            executed_at="2025-01-15T12:10:00+02:00",
        )
    ).fill_id
    assert same == composed
    assert po(order(execution_id=..., side="SELL")).fill_id == composed
    # without order id or time: unidentifiable, never the trace id (one trace spans
    # many fills: SPEC §3.2 rev 2)
    for missing in ({"order_id": ...}, {"executed_at": ...}, {"order_id": ..., "trace_id": ...}):
        err = rejected(po, order(execution_id=..., **missing))
        assert (err.field, err.reason) == ("execution_id", "unidentifiable_fill")


def test_numeric_ids_become_text() -> None:
    f = po(order(execution_id=123, order_id=456))
    assert (f.fill_id, f.order_id) == ("123", "456")


def test_trace_id_generated_when_missing() -> None:
    f = po(order(trace_id=...))
    assert f.trace_id == "generated-trace" and f.fill_id == "e-1"


def test_executed_at_forms() -> None:
    at = datetime(2025, 1, 15, 10, 10, tzinfo=UTC)
    assert po(order(executed_at="2025-01-15T10:10:00")).executed_at == at
    assert po(order(executed_at="2025-01-15T10:10:00.000+00:00")).executed_at == at
    assert po(order(executed_at="2025-01-15T11:10:00+01:00")).executed_at == at
    assert po(order(executed_at=1736935800000)).executed_at == at
    assert po(order(executed_at="1736935800000")).executed_at == at
    assert po(order(executed_at=...)).executed_at is None
    got = po(order(executed_at="2025-01-15T11:10:00+01:00")).executed_at
    assert got is not None and got.utcoffset() is not None and got.utcoffset().total_seconds() == 0


# --------------------------------------------------------------------------- positions


def test_position_canonical() -> None:
    u = pp(position())
    assert u.asset == "BTCUSDT" and u.mode == "one-way"
    assert u.size == D("1.5") and u.avg_price == D("50000.00")
    assert u.unrealized_pnl == D("150.00")
    assert u.realized_pnl == D("50.00")  # realisedPnl before cumRealisedPnl
    assert u.mark_price == D("50100.00")
    assert (u.seq, u.updated_ms, u.trace_id) == (8172, 1736935200000, "ws-1")


def test_position_tc001_minimal() -> None:
    msg = {
        "event_type": "position",
        "channel": "position",
        "data": {
            "symbol": "BTCUSDT",
            "side": "Buy",
            "size": "1.5",
            "avgPrice": "50000.00",
            "unrealisedPnl": "150.00",
            "positionValue": "75000.00",
            "mode": "one-way",
            "timestamp": "2025-01-15T10:00:00Z",
        },
        "trace_id": "test-trace-001",
    }
    u = pp(msg)
    assert (u.size, u.avg_price, u.unrealized_pnl) == (D("1.5"), D("50000.00"), D("150.00"))
    assert u.realized_pnl is None and u.mark_price is None
    assert u.seq is None and u.updated_ms is None


def test_position_tc003_without_side_is_rejected() -> None:
    # the seed's TC-003 message has no side: a non-zero size without a side is ambiguous
    msg = {
        "event_type": "position",
        "data": {"symbol": "BTCUSDT", "size": "1.8", "avgPrice": "50000.00"},
        "trace_id": "test-trace-003",
    }
    err = rejected(pp, msg)
    assert (err.field, err.reason) == ("side", "missing for a non-zero size")


@pytest.mark.parametrize("side", ["Sell", "SELL", "sell"])
def test_position_sell_is_negative(side: str) -> None:
    assert pp(position(side=side)).size == D("-1.5")


@pytest.mark.parametrize("side", ["", None, "None", ...])
def test_position_flat(side: Any) -> None:
    u = pp(position(side=side, size="0", avgPrice="0", markPrice="0"))
    assert u.size == 0 and not u.size.is_signed()
    assert u.mark_price is None  # "0" is "no price"
    assert u.avg_price == 0


def test_position_other_spellings() -> None:
    u = pp(position(avgPrice=..., entryPrice="49000", realisedPnl=..., markPrice=""))
    assert u.avg_price == D("49000")
    assert u.realized_pnl == D("75.00")
    assert u.mark_price is None
    u = pp(position(size=1.5, avgPrice=50000.5, unrealisedPnl=-12.25, seq="9", updatedTime=17))
    assert (u.size, u.avg_price, u.unrealized_pnl) == (D("1.5"), D("50000.5"), D("-12.25"))
    assert (u.seq, u.updated_ms) == (9, 17)
    u = pp(position(size=..., avgPrice=..., unrealisedPnl=..., realisedPnl=..., cumRealisedPnl=...))
    assert u.size is None and u.avg_price is None and u.unrealized_pnl is None
    assert u.realized_pnl is None


def test_position_negative_seq_means_none() -> None:
    assert pp(position(seq=-1)).seq is None


def test_position_trace_ids() -> None:
    assert pp(position({"trace_id": None})).trace_id == "generated-trace"
    msg = position({"trace_id": None}, trace_id="inner")
    assert pp(msg).trace_id == "inner"


@pytest.mark.parametrize(
    ("data", "mode"),
    [
        ({"mode": ..., "positionIdx": ...}, "one-way"),
        ({"mode": ..., "positionIdx": 0}, "one-way"),
        ({"mode": ..., "positionIdx": 1}, "hedge-long"),
        ({"mode": ..., "positionIdx": "2", "side": "Sell"}, "hedge-short"),
        ({"mode": "hedge", "positionIdx": 1}, "hedge-long"),
        ({"mode": "hedge", "positionIdx": 2, "side": "Sell"}, "hedge-short"),
        ({"mode": "One-Way", "positionIdx": 0}, "one-way"),
        ({"mode": "hedge-short", "positionIdx": ..., "side": "Sell"}, "hedge-short"),
    ],
)
def test_position_modes(data: dict[str, Any], mode: str) -> None:
    assert pp(position(**data)).mode == mode


@pytest.mark.parametrize(
    ("data", "field", "reason"),
    [
        ({"symbol": "INVALID", "size": "not-a-number", "avgPrice": None}, "size", "not a number"),
        ({"symbol": ...}, "symbol", "missing"),
        ({"symbol": "btcusdt"}, "symbol", "does not match ^[A-Z0-9]{2,20}$"),
        ({"size": "-1.5"}, "size", "must not be negative"),
        ({"size": "abc"}, "size", "not a number"),
        ({"side": "", "size": "1"}, "side", "missing for a non-zero size"),
        ({"side": ..., "size": "1"}, "side", "missing for a non-zero size"),
        ({"side": "Long"}, "side", "not Buy or Sell"),
        ({"side": 1}, "side", "not Buy or Sell"),
        ({"avgPrice": "-5"}, "avgPrice", "must not be negative"),
        ({"avgPrice": ..., "entryPrice": "x"}, "entryPrice", "not a number"),
        ({"markPrice": "-1"}, "markPrice", "must not be negative"),
        ({"unrealisedPnl": "lots"}, "unrealisedPnl", "not a number"),
        ({"realisedPnl": "NaN"}, "realisedPnl", "not a finite number"),
        ({"seq": "abc"}, "seq", "not an integer"),
        ({"seq": True}, "seq", "not an integer"),
        ({"updatedTime": "soon"}, "updatedTime", "not an integer"),
        ({"updatedTime": "-5"}, "updatedTime", "must not be negative"),
        ({"mode": "hedge", "positionIdx": 0}, "positionIdx", "ambiguous hedge position"),
        ({"mode": "hedge", "positionIdx": ...}, "positionIdx", "ambiguous hedge position"),
        ({"mode": "one-way", "positionIdx": 2}, "positionIdx", "conflicts with mode one-way"),
        ({"mode": ..., "positionIdx": 7}, "positionIdx", "must be 0, 1 or 2"),
        ({"mode": "portfolio"}, "mode", "unknown mode"),
        ({"mode": ..., "positionIdx": 1, "side": "Sell"}, "side", "conflicts with hedge-long"),
        ({"mode": ..., "positionIdx": 2, "side": "Buy"}, "side", "conflicts with hedge-short"),
    ],
)
def test_position_rejections(data: dict[str, Any], field: str, reason: str) -> None:
    err = rejected(pp, position(**data))
    assert (err.field, err.reason) == (field, reason)


def test_position_tc029_message() -> None:
    msg = {
        "event_type": "position",
        "data": {"symbol": "INVALID", "size": "not-a-number", "avgPrice": None},
    }
    err = rejected(pp, msg)
    assert err.field == "size"


@pytest.mark.parametrize("data", [None, [], [{"symbol": "BTCUSDT"}], "x", 5])
def test_position_data_must_be_an_object(data: Any) -> None:
    msg = {"event_type": "position", "data": data}
    err = rejected(pp, msg)
    assert err.field == "data"
    assert err.reason == ("missing" if data is None else "not an object")


# --------------------------------------------------------------------------- bodies


def test_decode_json() -> None:
    assert decode_json(b'{"a": 1}') == {"a": 1}
    assert decode_json(bytearray(b'{"a": 2}')) == {"a": 2}
    assert decode_json('{"a": 3}') == {"a": 3}
    for body, reason in [
        (b"not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b'{"a": NaN}', "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'"text"', "not a JSON object"),
        (b"null", "not a JSON object"),
        (b'{"a": "' + b"x" * 65536 + b'"}', "payload too large"),
    ]:
        err = rejected(decode_json, body)
        assert (err.field, err.reason) == ("body", reason)
    near_limit = b'{"a": "' + b"x" * (65536 - 10) + b'"}'
    assert len(near_limit) <= 65536 and decode_json(near_limit)["a"].startswith("x")


def test_decode_then_parse_end_to_end() -> None:
    raw = orjson.dumps(order())
    assert po(decode_json(raw)).fill_id == "e-1"


# --------------------------------------------------------------------------- rev 2 edges


def po_body(body: bytes):  # type: ignore[no-untyped-def]
    return parse_order_executed(decode_json(body), new_trace_id=new_trace)


def test_a_json_number_is_read_from_its_own_text() -> None:
    body = orjson.dumps(order()).replace(b'"0.5"', b"987654321.87654321")
    assert po_body(body).quantity == Decimal("987654321.87654321")
    body = orjson.dumps(order()).replace(b'"50000.00"', b"0.000000000000000001")
    assert po_body(body).price == Decimal("1E-18")
    assert decode_json(b'{"n": 12345678901234567890123}')["n"] == Decimal("12345678901234567890123")


def test_duplicate_keys_are_rejected_naming_the_key() -> None:
    body = b'{"asset": "BTCUSDT", "execution_quantity": "1", "execution_quantity": "2"}'
    err = rejected(decode_json, body)
    assert (err.field, err.reason) == ("execution_quantity", "duplicate key")
    inner = b'{"data": {"symbol": "BTCUSDT", "size": "1", "size": "9"}}'
    assert rejected(decode_json, inner).field == "size"


@pytest.mark.parametrize("char", ["\\u0000", "\\u0007", "\\n", "\\u007f", "\\u0085"])
def test_control_characters_in_strings_are_rejected(char: str) -> None:
    body = orjson.dumps(order()).replace(b'"e-1"', f'"e-{char}1"'.encode())
    err = rejected(decode_json, body)
    assert (err.field, err.reason) == ("execution_id", "control character")
    nested = orjson.dumps(position()).replace(b'"BTCUSDT"', f'"BTC{char}USDT"'.encode())
    assert rejected(decode_json, nested).field == "symbol"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("execution_quantity", "١٢"),  # Arabic-Indic digits
        ("execution_price", "\uff15\uff10\uff10"),  # full-width digits
        ("executed_at", "٢٠٢٥-01-15T10:10:00Z"),
    ],
)
def test_non_ascii_digits_are_rejected(field: str, value: str) -> None:
    err = rejected(po, order(**{field: value}))
    assert err.field == field and "non-ASCII" in err.reason


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("1000000000000000000", "out of range"),
        ("-1e18", "out of range"),
        ("1e1500", "out of range"),
        ("0.0000000000000000001", "more than 18 decimal places"),
        ("1.0000000000000000001", "more than 18 decimal places"),
    ],
)
def test_amounts_beyond_the_bounds_are_rejected(value: str, reason: str) -> None:
    err = rejected(po, order(execution_fees=value))
    assert (err.field, err.reason) == ("execution_fees", reason)


@pytest.mark.parametrize(
    "value",
    ["999999999999999999.999999999999999999", "-999999999999999999", "0.100000000000000000000"],
)
def test_amounts_at_the_bounds_are_accepted_exactly(value: str) -> None:
    assert po(order(execution_fees=value)).fee == Decimal(value)


def test_seq_and_updated_time_must_fit_a_signed_64_bit_integer() -> None:
    top = 2**63 - 1
    assert pp(position(seq=top, updatedTime=str(top))).seq == top
    for field in ("seq", "updatedTime"):
        err = rejected(pp, position(**{field: str(2**63)}))
        assert (err.field, err.reason) == (field, "out of range")
        err = rejected(pp, position(**{field: "9" * 19}))
        assert err.field == field
    assert rejected(pp, position(seq=-2)).field == "seq"


@pytest.mark.parametrize("char", ["\x7f", "\x85", "\x9f"])
def test_a_raw_control_character_in_a_compact_body_is_rejected(char: str) -> None:
    body = orjson.dumps(order(execution_id=f"e-{char}1"))
    assert b"\\" not in body  # orjson writes these characters as they are
    assert (rejected(decode_json, body).field, char) == ("execution_id", char)


json_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=6)
json_value = st.recursive(
    st.one_of(json_text, st.integers(-(2**63), 2**63 - 1), st.none(), st.booleans()),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(st.tuples(json_text, inner), max_size=4),  # pairs: duplicates allowed
    ),
    max_leaves=8,
)


def _json(value: Any) -> str:
    """JSON text of a value where a list of pairs is an object (keys may repeat)."""
    if isinstance(value, list) and value and all(isinstance(v, tuple) for v in value):
        return "{" + ",".join(f"{_json(k)}:{_json(v)}" for k, v in value) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_json(v) for v in value) + "]"
    return orjson.dumps(value).decode()


@settings(max_examples=400, deadline=None)
@given(pairs=st.lists(st.tuples(json_text, json_value), max_size=5))
def test_the_plain_text_decoder_agrees_with_the_checking_one(pairs: list[Any]) -> None:
    """Texts without escapes or control characters take a decoder that only looks for
    duplicate keys: same objects, same rejections as the one that checks every string."""
    text = "{" + ",".join(f"{_json(k)}:{_json(v)}" for k, v in pairs) + "}"

    def outcome(decode: Any) -> Any:
        try:
            return decode(text)
        except RejectedInput as exc:
            return (exc.field, exc.reason)

    assert outcome(decode_json) == outcome(fields._DECODER.decode)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.100000000000000000000", Decimal("0.1")),  # 21 places as written, 1 in value
        ("1.000000000000000001", Decimal("1.000000000000000001")),  # 18
        ("1.0000000000000000001", "more than 18 decimal places"),  # 19
        ("12e-19", "more than 18 decimal places"),
        ("100e-20", Decimal("1E-18")),
        ("-0.000", Decimal("0")),
        (" 7. ", Decimal("7")),
    ],
)
def test_decimal_places_are_counted_on_the_value_not_the_text(text: str, expected: Any) -> None:
    try:
        got: Any = fields.read_opt_decimal({"x": text}, "x")
    except RejectedInput as exc:
        got = exc.reason
    assert got == expected
    assert not (isinstance(got, Decimal) and got.is_signed() and got.is_zero())
