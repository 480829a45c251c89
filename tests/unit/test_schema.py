"""The declarative codecs (`pm_streams.domain.schema`) and the wire forms they keep."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest

from pm_streams.domain import Fill, Publish, event_from_bytes, event_to_bytes
from pm_streams.domain.codec import EFFECT
from pm_streams.domain.portfolio import Contribution, Totals, contributions_to_bytes
from pm_streams.domain.schema import Codec, Tagged


@dataclass(frozen=True, slots=True)
class Inner:
    name: str
    amount: Decimal


@dataclass(frozen=True, slots=True)
class Outer:
    count: int
    price: Decimal | None
    at: datetime
    items: tuple[Inner, ...]
    tags: tuple[str, ...]
    pairs: tuple[tuple[str, str], ...]
    ratio: float
    flag: bool = False


INNER = Codec(Inner, tag=("k", "inner"))
OUTER = Codec(Outer, rename={"count": "n"}, time=lambda t: t.isoformat(), nested={Inner: INNER})
AT = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)


def test_a_codec_encodes_by_its_declaration_and_round_trips() -> None:
    value = Outer(3, None, AT, (Inner("a", Decimal("1.50")),), ("x", "y"), (("k", "v"),), 0.5)
    obj = OUTER.encode(value)
    assert obj == {
        "n": 3,
        "price": None,
        "at": "2026-01-02T03:04:05.000006+00:00",
        "items": [{"k": "inner", "name": "a", "amount": "1.50"}],
        "tags": ("x", "y"),
        "pairs": (("k", "v"),),
        "ratio": 0.5,
        "flag": False,
    }
    assert OUTER.decode(orjson.loads(orjson.dumps(obj))) == value


def test_a_missing_key_takes_the_default_or_is_an_error() -> None:
    obj = OUTER.encode(Outer(1, Decimal(2), AT, (), (), (), 1.0, True))
    del obj["flag"]
    assert OUTER.decode(obj).flag is False
    del obj["n"]
    with pytest.raises(KeyError):
        OUTER.decode(obj)


def test_a_field_type_without_a_codec_is_refused_at_declaration() -> None:
    with pytest.raises(TypeError, match="no codec"):
        Codec(Outer)


def test_a_tagged_union_dispatches_both_ways() -> None:
    union = Tagged(INNER)
    assert union.decode(union.encode(Inner("b", Decimal(1)))) == Inner("b", Decimal(1))
    with pytest.raises(ValueError, match="unknown k"):
        union.decode({"k": "other"})
    with pytest.raises(TypeError):
        union.encode(AT)
    with pytest.raises(ValueError, match="tag"):
        Tagged(Codec(Inner))


def test_the_wire_forms_written_so_far_are_kept_byte_for_byte() -> None:
    fill = Fill("BTCUSDT", "one-way", Decimal("-0.5"), Decimal("50000.00"), Decimal("0.1"),
                "e-1", None, AT, "t")  # fmt: skip
    assert event_to_bytes(fill) == (
        b'{"type":"fill","asset":"BTCUSDT","mode":"one-way","quantity":"-0.5",'
        b'"price":"50000.00","fee":"0.1","fill_id":"e-1","order_id":null,'
        b'"executed_at":"2026-01-02T03:04:05.000006Z","trace_id":"t","is_funding":false}'
    )
    assert event_from_bytes(event_to_bytes(fill)) == fill
    assert EFFECT.encode(Publish("position_updated", "one-way", "websocket", "t")) == {
        "t": "publish",
        "event_type": "position_updated",
        "mode": "one-way",
        "update_source": "websocket",
        "trace_id": "t",
    }
    c = Contribution("BTCUSDT", 2, Decimal("5.00000000000000000000"), Decimal(5), Decimal(0),
                     Decimal("-0"), Decimal(1), 1, 1, 0, False, "t", AT)  # fmt: skip
    assert contributions_to_bytes([c]) == (
        b'[{"asset":"BTCUSDT","version":2,"exposure":"5.00000000000000000000","net":"5",'
        b'"unrealized":"0","realized":"0","size":"1","open":1,"long":1,"short":0,'
        b'"fallback":false,"trace_id":"t","at":"2026-01-02T03:04:05.000006Z"}]'
    )
    assert Contribution.from_bytes(contributions_to_bytes([c])[1:-1]) == c
    old = b'{"exposure":"1","net":"1","unrealized":"0","realized":"0","open":1,"long":1,'
    old += b'"short":0,"version":4,"last_offset":9,"calculated_at":null,"limit_exceeded":false}'
    assert Totals.from_bytes(old) == Totals(
        exposure=Decimal(1), net=Decimal(1), open_count=1, long_count=1, version=4,
        last_offset=9,
    )  # fmt: skip
