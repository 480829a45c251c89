"""Wire forms (orjson) of positions, input events and effects, declared in `schema`.

Decimals travel as strings (exact), datetimes as ISO-8601 UTC; everything round-trips
exactly. The positions table's record around them is `pm_streams.stored`.
"""

from __future__ import annotations

import orjson

from pm_streams.domain.model import (
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
)
from pm_streams.domain.schema import Codec, Tagged

UNDECODABLE = (ValueError, KeyError, TypeError, ArithmeticError)
"""What decoding a record that is not of a known form raises (orjson's errors are
ValueErrors, a bad Decimal is an ArithmeticError): the exceptions of a record to
quarantine rather than a bug to crash on."""

OPTS = orjson.OPT_UTC_Z

POSITION = Codec(Position)
FILL = Codec(Fill, tag=("type", "fill"))
EVENT = Tagged(
    FILL,
    Codec(ExchangeUpdate, tag=("type", "exchange_update")),
    Codec(PriceUpdate, tag=("type", "price_update")),
    Codec(Correction, tag=("type", "correction")),
    Codec(SnapshotTaken, tag=("type", "snapshot_taken")),
)
EFFECT = Tagged(
    Codec(Publish, tag=("t", "publish")),
    Codec(LedgerEntry, tag=("t", "ledger"), nested={Fill: FILL}),
    Codec(ScheduleValidation, tag=("t", "schedule_validation")),
    Codec(Note, tag=("t", "note")),
)


def event_to_bytes(event: Event) -> bytes:
    """The canonical Kafka form of a validated input event (with a `type` field)."""
    return orjson.dumps(EVENT.encode(event), option=OPTS)


def event_from_bytes(data: bytes) -> Event:
    obj = orjson.loads(data)
    if not isinstance(obj, dict):
        raise ValueError("event is not a JSON object")
    return EVENT.decode(obj)  # type: ignore[no-any-return]
