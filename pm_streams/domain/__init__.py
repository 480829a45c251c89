"""Pure domain core: position state, math, input validation and wire forms.

No I/O, no Faust, no logging: everything here is a function of its arguments.
"""

from pm_streams.domain.codec import UNDECODABLE, event_from_bytes, event_to_bytes
from pm_streams.domain.engine import apply, needs_write
from pm_streams.domain.features import features, hedge_view
from pm_streams.domain.fields import RejectedInput, decode_json
from pm_streams.domain.legs import AGGREGATE_CONTEXT, DECIMAL_CONTEXT
from pm_streams.domain.model import (
    MODES,
    Book,
    Correction,
    Effect,
    EngineConfig,
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
from pm_streams.domain.output import decimal_text, iso, position_to_dict
from pm_streams.domain.parse import parse_order_executed, parse_position_update

__all__ = [
    "AGGREGATE_CONTEXT",
    "DECIMAL_CONTEXT",
    "MODES",
    "UNDECODABLE",
    "Book",
    "Correction",
    "Effect",
    "EngineConfig",
    "Event",
    "ExchangeUpdate",
    "Fill",
    "LedgerEntry",
    "Note",
    "Position",
    "PriceUpdate",
    "Publish",
    "RejectedInput",
    "ScheduleValidation",
    "SnapshotTaken",
    "apply",
    "decimal_text",
    "decode_json",
    "event_from_bytes",
    "event_to_bytes",
    "features",
    "hedge_view",
    "iso",
    "needs_write",
    "parse_order_executed",
    "parse_position_update",
    "position_to_dict",
]
