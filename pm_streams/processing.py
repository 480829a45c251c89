"""One input event against one asset's stored book: decode, guard, apply, encode.

Pure apart from the id factory. The agent calls `step` and writes `Step.write` to the
table when it is not None.

Replays: Faust is at-least-once, so after a crash the events after the last
committed offset are delivered again. The book remembers the input offset of the
last change it took (`last_offset`, written in the same changelog record as the
state), so a replayed event is recognised exactly, however far back it is, and
changes nothing. Fill ids (bounded) catch the other kind of duplicate: the same
fill published twice upstream or re-forwarded by the bridge after a redelivery.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from pm_streams.domain import (
    Book,
    EngineConfig,
    Note,
    apply,
    book_from_bytes,
    book_to_bytes,
    event_from_bytes,
    needs_write,
)


@dataclass(frozen=True, slots=True)
class Step:
    book: Book | None
    write: bytes | None
    notes: tuple[Note, ...]
    trace_id: str | None
    kind: str
    """`applied`, `unchanged` (duplicate/stale/no-op) or `replay`."""


def _uuid() -> str:
    return str(uuid.uuid4())


class BookCache:
    """Decoded books keyed by asset, valid while the stored bytes are the same object.

    Decoding a book on every event dominates the hot path; the memory store hands
    back the very bytes object we stored, so an identity check is enough.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        self._items: dict[str, tuple[bytes, Book]] = {}
        self._capacity = capacity

    def decode(self, asset: str, stored: bytes | None) -> Book | None:
        if stored is None:
            return None
        hit = self._items.get(asset)
        if hit is not None and hit[0] is stored:
            return hit[1]
        book = book_from_bytes(stored)
        self.remember(asset, stored, book)
        return book

    def remember(self, asset: str, stored: bytes, book: Book) -> None:
        if len(self._items) >= self._capacity and asset not in self._items:
            self._items.pop(next(iter(self._items)))
        self._items[asset] = (stored, book)


def step(
    stored: Book | None,
    payload: bytes,
    offset: int,
    now: datetime,
    cfg: EngineConfig,
    *,
    new_id: Callable[[], str] = _uuid,
) -> Step:
    if stored is not None and offset <= stored.last_offset:
        return Step(stored, None, (), None, "replay")
    event = event_from_bytes(payload)
    new, effects = apply(stored, event, now, cfg, new_id=new_id)
    notes = tuple(e for e in effects if isinstance(e, Note))
    if not needs_write(stored, new):
        return Step(stored, None, notes, event.trace_id, "unchanged")
    new = replace(new, last_offset=offset)
    return Step(new, book_to_bytes(new), notes, event.trace_id, "applied")
