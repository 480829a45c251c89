"""Outbound events (SPEC §8) built from a stored book record: pure functions."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from pm_streams.domain import Book, Publish, features, position_to_dict


def position_events(
    book: Book, now: datetime, total_exposure: Decimal = Decimal(0)
) -> list[tuple[str, dict[str, Any]]]:
    """The `position_updated` / `position_closed` events of the change that wrote `book`.

    `event_id` is `position_id:version:event_type`: the same change always yields the
    same ids, so consumers de-duplicate a republished event.
    """
    out: list[tuple[str, dict[str, Any]]] = []
    for effect in book.effects:
        if not isinstance(effect, Publish):
            continue
        leg = book.leg(effect.mode)
        if leg is None:
            continue
        body = position_to_dict(leg, features=features(leg, now, total_exposure))
        body.update(
            event_id=f"{leg.id}:{leg.version}:{effect.event_type}",
            event_type=effect.event_type,
            trace_id=effect.trace_id,
            timestamp=body["last_updated"],
            update_source=effect.update_source,
        )
        out.append((effect.event_type, body))
    return out
