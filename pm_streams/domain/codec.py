"""Wire forms (orjson): table records, Kafka input events, JSON-ready position dicts.

Decimals travel as strings (exact), datetimes as ISO-8601 UTC. Table records and
events round-trip exactly. The record carries a format version (`"v"`).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson

from pm_streams.domain.model import (
    Book,
    Change,
    Correction,
    Effect,
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
)

UNDECODABLE = (ValueError, KeyError, TypeError, ArithmeticError)
"""What decoding a record that is not of a known form raises (orjson's errors are
ValueErrors, a bad Decimal is an ArithmeticError): the exceptions of a record to
quarantine rather than a bug to crash on."""

RECORD_VERSION = 2
READABLE_RECORD_VERSIONS = (1, RECORD_VERSION)
_OPTS = orjson.OPT_UTC_Z

Obj = dict[str, Any]


def _ostr(d: Decimal | None) -> str | None:
    return None if d is None else str(d)


def _odec(s: str | None) -> Decimal | None:
    return None if s is None else Decimal(s)


def _odt(s: str | None) -> datetime | None:
    return None if s is None else datetime.fromisoformat(s)


# --------------------------------------------------------------------------- positions


def _position_obj(p: Position) -> Obj:
    return {
        "id": p.id,
        "asset": p.asset,
        "mode": p.mode,
        "size": str(p.size),
        "average_entry_price": str(p.average_entry_price),
        "current_price": _ostr(p.current_price),
        "unrealized_pnl": str(p.unrealized_pnl),
        "realized_pnl": str(p.realized_pnl),
        "total_fees": str(p.total_fees),
        "version": p.version,
        "created_at": p.created_at,
        "opened_at": p.opened_at,
        "last_updated": p.last_updated,
        "closed_at": p.closed_at,
        "last_snapshot_at": p.last_snapshot_at,
        "last_price_at": p.last_price_at,
        "exchange_size": _ostr(p.exchange_size),
        "exchange_avg_price": _ostr(p.exchange_avg_price),
        "exchange_seq": p.exchange_seq,
        "exchange_updated_ms": p.exchange_updated_ms,
        "funding_pnl": str(p.funding_pnl),
    }


def _position_from(o: Obj) -> Position:
    return Position(
        id=o["id"],
        asset=o["asset"],
        mode=o["mode"],
        size=Decimal(o["size"]),
        average_entry_price=Decimal(o["average_entry_price"]),
        current_price=_odec(o["current_price"]),
        unrealized_pnl=Decimal(o["unrealized_pnl"]),
        realized_pnl=Decimal(o["realized_pnl"]),
        total_fees=Decimal(o["total_fees"]),
        version=o["version"],
        created_at=datetime.fromisoformat(o["created_at"]),
        opened_at=_odt(o["opened_at"]),
        last_updated=datetime.fromisoformat(o["last_updated"]),
        closed_at=_odt(o["closed_at"]),
        last_snapshot_at=_odt(o["last_snapshot_at"]),
        last_price_at=_odt(o["last_price_at"]),
        exchange_size=_odec(o["exchange_size"]),
        exchange_avg_price=_odec(o["exchange_avg_price"]),
        exchange_seq=o["exchange_seq"],
        exchange_updated_ms=o["exchange_updated_ms"],
        funding_pnl=Decimal(o.get("funding_pnl", "0")),  # absent before SPEC rev 2
    )


# --------------------------------------------------------------------------- events


def _event_obj(e: Event) -> Obj:
    if isinstance(e, Fill):
        return {
            "type": "fill",
            "asset": e.asset,
            "mode": e.mode,
            "quantity": str(e.quantity),
            "price": str(e.price),
            "fee": str(e.fee),
            "fill_id": e.fill_id,
            "order_id": e.order_id,
            "executed_at": e.executed_at,
            "trace_id": e.trace_id,
            "is_funding": e.is_funding,
        }
    if isinstance(e, ExchangeUpdate):
        return {
            "type": "exchange_update",
            "asset": e.asset,
            "mode": e.mode,
            "size": _ostr(e.size),
            "avg_price": _ostr(e.avg_price),
            "unrealized_pnl": _ostr(e.unrealized_pnl),
            "realized_pnl": _ostr(e.realized_pnl),
            "mark_price": _ostr(e.mark_price),
            "seq": e.seq,
            "updated_ms": e.updated_ms,
            "trace_id": e.trace_id,
        }
    if isinstance(e, PriceUpdate):
        return {
            "type": "price_update",
            "asset": e.asset,
            "mark_price": str(e.mark_price),
            "trace_id": e.trace_id,
        }
    if isinstance(e, Correction):
        return {
            "type": "correction",
            "asset": e.asset,
            "mode": e.mode,
            "size": _ostr(e.size),
            "avg_price": _ostr(e.avg_price),
            "trace_id": e.trace_id,
            "reason": e.reason,
        }
    if isinstance(e, SnapshotTaken):
        return {
            "type": "snapshot_taken",
            "asset": e.asset,
            "mode": e.mode,
            "at": e.at,
            "trace_id": e.trace_id,
        }
    raise TypeError(f"not an event: {type(e).__name__}")


def _fill_from(o: Obj) -> Fill:
    return Fill(
        asset=o["asset"],
        mode=o["mode"],
        quantity=Decimal(o["quantity"]),
        price=Decimal(o["price"]),
        fee=Decimal(o["fee"]),
        fill_id=o["fill_id"],
        order_id=o["order_id"],
        executed_at=_odt(o["executed_at"]),
        trace_id=o["trace_id"],
        is_funding=o["is_funding"],
    )


def _event_from(o: Obj) -> Event:
    kind = o.get("type")
    if kind == "fill":
        return _fill_from(o)
    if kind == "exchange_update":
        return ExchangeUpdate(
            asset=o["asset"],
            mode=o["mode"],
            size=_odec(o["size"]),
            avg_price=_odec(o["avg_price"]),
            unrealized_pnl=_odec(o["unrealized_pnl"]),
            realized_pnl=_odec(o["realized_pnl"]),
            mark_price=_odec(o["mark_price"]),
            seq=o["seq"],
            updated_ms=o["updated_ms"],
            trace_id=o["trace_id"],
        )
    if kind == "price_update":
        return PriceUpdate(
            asset=o["asset"], mark_price=Decimal(o["mark_price"]), trace_id=o["trace_id"]
        )
    if kind == "correction":
        return Correction(
            asset=o["asset"],
            mode=o["mode"],
            size=_odec(o["size"]),
            avg_price=_odec(o["avg_price"]),
            trace_id=o["trace_id"],
            reason=o["reason"],
        )
    if kind == "snapshot_taken":
        return SnapshotTaken(
            asset=o["asset"],
            mode=o["mode"],
            at=datetime.fromisoformat(o["at"]),
            trace_id=o["trace_id"],
        )
    raise ValueError(f"unknown event type {kind!r}")


def event_to_bytes(event: Event) -> bytes:
    """The canonical Kafka form of a validated input event (with a `type` field)."""
    return orjson.dumps(_event_obj(event), option=_OPTS)


def event_from_bytes(data: bytes) -> Event:
    obj = orjson.loads(data)
    if not isinstance(obj, dict):
        raise ValueError("event is not a JSON object")
    return _event_from(obj)


# --------------------------------------------------------------------------- effects


def _effect_obj(e: Effect) -> Obj:
    if isinstance(e, Publish):
        return {
            "t": "publish",
            "event_type": e.event_type,
            "mode": e.mode,
            "update_source": e.update_source,
            "trace_id": e.trace_id,
        }
    if isinstance(e, LedgerEntry):
        return {"t": "ledger", "fill": _event_obj(e.fill), "position_id": e.position_id}
    if isinstance(e, ScheduleValidation):
        return {
            "t": "schedule_validation",
            "asset": e.asset,
            "mode": e.mode,
            "after_seconds": e.after_seconds,
            "reason": e.reason,
        }
    if isinstance(e, Note):
        return {"t": "note", "kind": e.kind, "fields": e.fields}
    raise TypeError(f"not an effect: {type(e).__name__}")


def _effect_from(o: Obj) -> Effect:
    kind = o["t"]
    if kind == "publish":
        return Publish(o["event_type"], o["mode"], o["update_source"], o["trace_id"])
    if kind == "ledger":
        return LedgerEntry(_fill_from(o["fill"]), o["position_id"])
    if kind == "schedule_validation":
        return ScheduleValidation(o["asset"], o["mode"], float(o["after_seconds"]), o["reason"])
    if kind == "note":
        return Note(o["kind"], tuple((str(k), str(v)) for k, v in o["fields"]))
    raise ValueError(f"unknown effect {kind!r}")


# --------------------------------------------------------------------------- books


def book_to_bytes(book: Book, floor: int | None = None) -> bytes:
    """The table record of one asset. `floor`: every input offset of the asset's
    partition up to it was applied and written before the write cycle of this record
    (see `record_floor`)."""
    obj: Obj = {
        "v": RECORD_VERSION,
        "asset": book.asset,
        "legs": [_position_obj(p) for p in book.legs],
        "fill_ids": book.fill_ids,
        "last_offset": book.last_offset,
        "effects": [_effect_obj(e) for e in book.effects],
    }
    if floor is not None:
        obj["floor"] = floor
    if book.changes:
        obj["changes"] = [
            {
                "legs": [_position_obj(p) for p in c.legs],
                "effects": [_effect_obj(e) for e in c.effects],
                "offset": c.offset,
            }
            for c in book.changes
        ]
    return orjson.dumps(obj, option=_OPTS)


def record_floor(data: bytes) -> int:
    """The record's `floor`; a record written without one gives its `last_offset`."""
    o = orjson.loads(data)
    return int(o.get("floor", o["last_offset"]))


def book_from_bytes(data: bytes) -> Book:
    """Decode a record of version 1 (one change) or 2 (may fold earlier `changes`)."""
    o = orjson.loads(data)
    if not isinstance(o, dict) or o.get("v") not in READABLE_RECORD_VERSIONS:
        raise ValueError("not a position book record of a known version")
    return Book(
        asset=o["asset"],
        legs=tuple(_position_from(p) for p in o["legs"]),
        fill_ids=tuple(o["fill_ids"]),
        last_offset=o["last_offset"],
        effects=tuple(_effect_from(e) for e in o["effects"]),
        changes=tuple(
            Change(
                tuple(_position_from(p) for p in c["legs"]),
                tuple(_effect_from(e) for e in c["effects"]),
                c["offset"],
            )
            for c in o.get("changes", ())
        ),
    )
