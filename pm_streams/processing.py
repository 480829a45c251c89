"""One input event against one asset's book: decode, guard, apply; batches of them.

Pure apart from the id factory. The agent calls `step` per event, collects the
applied books in a `Batch`, and writes each changed asset once per batch.

Replays: Faust is at-least-once, so after a crash the events after the last
committed offset are delivered again. The stored record remembers the input offset of
the last change it took (`Stored.offset`, written in the same changelog record as the
book), so a replayed event is recognised exactly, however far back it is, and
changes nothing. The fill-id store (`pm_streams.fill_ids`) catches the other kind of
duplicate: the same fill published twice upstream, re-forwarded by the bridge after
a redelivery, or replayed by an order service hours later.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from pm_streams.domain import (
    UNDECODABLE,
    Book,
    EngineConfig,
    Event,
    Fill,
    Note,
    apply,
    event_from_bytes,
    needs_write,
)
from pm_streams.stored import Stored, stored_from_bytes

AppliedOffset = Callable[[str, str, str], int | None]
"""(asset, mode, fill id) -> the input offset that applied that fill, or None."""

Origin = TypeVar("Origin")


@dataclass(frozen=True, slots=True)
class Step:
    stored: Stored | None
    """The record after the event: a new one when `kind` is `applied`, else the input."""
    notes: tuple[Note, ...]
    trace_id: str | None
    kind: str
    """`applied`, `unchanged` (duplicate/stale/no-op) or `replay`."""
    fill: Fill | None = None
    """The fill an `applied` or `replay` step carried (its identity is recorded)."""


def _uuid() -> str:
    return str(uuid.uuid4())


class BookCache:
    """Decoded records keyed by asset, valid while the stored bytes are the same object.

    Decoding a record on every event dominates the hot path; the memory store hands
    back the very bytes object we stored, so an identity check is enough.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        self._items: dict[str, tuple[bytes, Stored]] = {}
        self._capacity = capacity

    def record(self, asset: str, raw: bytes | None) -> Stored | None:
        """The asset's stored record, decoded (raises `UNDECODABLE` errors)."""
        if raw is None:
            return None
        hit = self._items.get(asset)
        if hit is not None and hit[0] is raw:
            return hit[1]
        stored = stored_from_bytes(raw)
        self.remember(asset, raw, stored)
        return stored

    def decode(self, asset: str, raw: bytes | None) -> Book | None:
        """The asset's stored book (raises `UNDECODABLE` errors)."""
        stored = self.record(asset, raw)
        return None if stored is None else stored.book

    def readable(self, asset: str, stored: bytes | None) -> Book | None:
        """`decode`, with None for a record this version cannot read (a newer record
        format after a rollback): readers other than the agent skip such an asset
        rather than fail; the agent dead-letters its events."""
        try:
            return self.decode(asset, stored)
        except UNDECODABLE:
            return None

    def remember(self, asset: str, raw: bytes, stored: Stored) -> None:
        if len(self._items) >= self._capacity and asset not in self._items:
            self._items.pop(next(iter(self._items)))
        self._items[asset] = (raw, stored)


def step(
    stored: Stored | None,
    payload: bytes,
    offset: int,
    now: datetime,
    cfg: EngineConfig,
    *,
    new_id: Callable[[], str] = _uuid,
    applied_offset: AppliedOffset | None = None,
    decode: Callable[[bytes], Event] = event_from_bytes,
) -> Step:
    """One event against the asset's current record (the batch's unwritten one, or the
    stored one). With `applied_offset` (the fill-id store), a fill is a duplicate when
    its recorded application is covered by the record (`offset <= stored.offset`); an
    entry the record does not cover is from a write the crash lost, so it is applied.
    `decode` reads the payload (`event_from_bytes`, or the bridge's `Handoff` first)."""
    if stored is not None and offset <= stored.offset:
        replayed = decode(payload) if applied_offset is not None else None
        fill = replayed if isinstance(replayed, Fill) else None
        return Step(stored, (), None, "replay", fill)
    event = decode(payload)
    fill = event if isinstance(event, Fill) else None
    if fill is not None and applied_offset is not None:
        seen = applied_offset(fill.asset, fill.mode, fill.fill_id)
        if seen is not None and stored is not None and seen <= stored.offset:
            note = Note(
                "duplicate_fill",
                (("fill_id", fill.fill_id), ("mode", fill.mode), ("trace_id", fill.trace_id)),
            )
            return Step(stored, (note,), fill.trace_id, "unchanged")
    book = None if stored is None else stored.book
    new, effects = apply(book, event, now, cfg, new_id=new_id)
    notes = tuple(e for e in effects if isinstance(e, Note))
    if not needs_write(book, new):
        return Step(stored, notes, event.trace_id, "unchanged")
    return Step(Stored(new, offset), notes, event.trace_id, "applied", fill)


class Batch(Generic[Origin]):
    """The books one batch of input events changed, to be written once per asset.

    Writing the table (a changelog record) and sending the portfolio contribution cost
    more than applying an event, so the agent applies a whole batch first and then
    writes each changed asset once. The record folds the batch's earlier changes of
    the asset (`Stored.earlier`), so the sink and the republisher still see every
    change. A record holds at most `max_changes` changes (bounded size: about 1 KB
    per change against Kafka's 1 MB message limit); `put` hands back a full one to
    write at once. `origin` is opaque here: the agent passes the input event whose
    partition the write belongs to.
    """

    def __init__(self, max_changes: int = 64) -> None:
        if max_changes < 1:
            raise ValueError("max_changes must be at least 1")
        self.max_changes = max_changes
        self._books: dict[str, tuple[Stored, Origin]] = {}
        self._touched: dict[str, None] = {}
        """Assets whose contribution to send after the batch (changed or replayed)."""

    def get(self, asset: str) -> Stored | None:
        """The asset's unwritten record of this batch, if any."""
        hit = self._books.get(asset)
        return None if hit is None else hit[0]

    def put(self, stored: Stored, origin: Origin) -> tuple[Stored, Origin] | None:
        """Take `stored`, the result of applying an event to `get(asset)` (or to the
        stored record when that is None). Returns a full record to write now, or None."""
        asset = stored.book.asset
        self._touched[asset] = None
        hit = self._books.get(asset)
        if hit is None:
            self._books[asset] = (stored, origin)
            return None
        earlier = hit[0]
        if len(earlier.earlier) + 1 >= self.max_changes:
            self._books[asset] = (stored, origin)
            return hit
        self._books[asset] = (stored.folded_after(earlier), origin)
        return None

    def replayed(self, asset: str) -> None:
        """A replayed event: re-send the asset's contribution (the send after the
        original write may have been lost in a crash)."""
        self._touched[asset] = None

    def drain(self) -> tuple[list[tuple[Stored, Origin]], list[str]]:
        """The records to write (one per asset, with their origins) and the assets whose
        contribution to send, in order; forgets both."""
        books, touched = list(self._books.values()), list(self._touched)
        self._books.clear()
        self._touched.clear()
        return books, touched
