"""The positions table's record: a book plus what the changelog needs around it.

The domain's `Book` knows nothing of Kafka. Stored, it is wrapped with:

* `offset`: the input offset of the last change it took (the replay guard: an event
  at or below it is already in the book);
* `earlier`: the batch's earlier changes of the asset folded into the same record
  (the agent writes one record per asset per batch, so that consumers of the
  changelog still see every change, `steps`);
* the write cycle's `floor` (`record_floor`), written beside them: every input
  offset of the partition up to it was written in earlier cycles.

Wire form (orjson, version 2; version 1 records, without `earlier`, still read):
`{"v", "asset", "legs", "fill_ids", "last_offset", "effects", "floor"?, "changes"?}`.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from pm_streams.domain import Book
from pm_streams.domain.codec import EFFECT, OPTS, POSITION

RECORD_VERSION = 2
READABLE_RECORD_VERSIONS = (1, RECORD_VERSION)


@dataclass(frozen=True, slots=True)
class Stored:
    """A book as the positions table holds it (see the module docstring)."""

    book: Book
    offset: int = -1
    earlier: tuple[Stored, ...] = ()
    """Oldest first; each without `earlier` of its own and without fill ids."""

    def steps(self) -> tuple[Stored, ...]:
        """Every change this record carries, oldest first; the last one is this record
        without `earlier`."""
        if not self.earlier:
            return (self,)
        return (*self.earlier, Stored(self.book, self.offset))

    def books(self) -> tuple[Book, ...]:
        """The book after each change this record carries, oldest first (what the
        changelog's consumers act on)."""
        return tuple(step.book for step in self.steps())

    def folded_after(self, earlier: Stored) -> Stored:
        """This record carrying `earlier` (and its own folded changes) before it: one
        record for both. `earlier` must be the unwritten record this one was applied to."""
        old = earlier.book
        view = Stored(Book(old.asset, old.legs, (), old.effects), earlier.offset)
        return Stored(self.book, self.offset, (*earlier.earlier, view))


def stored_to_bytes(stored: Stored, floor: int | None = None) -> bytes:
    """The table record; `floor` as in the module docstring (None: not known)."""
    book = stored.book
    obj: dict[str, object] = {
        "v": RECORD_VERSION,
        "asset": book.asset,
        "legs": [POSITION.encode(p) for p in book.legs],
        "fill_ids": book.fill_ids,
        "last_offset": stored.offset,
        "effects": [EFFECT.encode(e) for e in book.effects],
    }
    if floor is not None:
        obj["floor"] = floor
    if stored.earlier:
        obj["changes"] = [
            {
                "legs": [POSITION.encode(p) for p in c.book.legs],
                "effects": [EFFECT.encode(e) for e in c.book.effects],
                "offset": c.offset,
            }
            for c in stored.earlier
        ]
    return orjson.dumps(obj, option=OPTS)


def stored_from_bytes(data: bytes) -> Stored:
    """Decode a record of version 1 (one change) or 2 (may fold earlier changes)."""
    o = orjson.loads(data)
    if not isinstance(o, dict) or o.get("v") not in READABLE_RECORD_VERSIONS:
        raise ValueError("not a position book record of a known version")
    asset = o["asset"]
    earlier = tuple(
        Stored(
            Book(
                asset,
                tuple(POSITION.decode(p) for p in c["legs"]),
                (),
                tuple(EFFECT.decode(e) for e in c["effects"]),
            ),
            c["offset"],
        )
        for c in o.get("changes", ())
    )
    book = Book(
        asset,
        tuple(POSITION.decode(p) for p in o["legs"]),
        tuple(o["fill_ids"]),
        tuple(EFFECT.decode(e) for e in o["effects"]),
    )
    return Stored(book, o["last_offset"], earlier)


class SharedDecode:
    """Each positions-changelog record's books, decoded once for the process's consumers.

    The sink and the republisher read the same records in consumer groups of their own,
    a moment apart: the first to read a record decodes it and keeps the result here, the
    second takes it out. At most `capacity` results wait (oldest out first), so a
    consumer far behind the other, or a partition that the other consumer of this
    process does not own, costs a decode, never memory. The books are frozen, so
    sharing them shares no state."""

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._waiting: dict[tuple[int, int], tuple[Book, ...]] = {}

    def books(self, partition: int, offset: int, value: bytes) -> tuple[Book, ...]:
        key = (partition, offset)
        books = self._waiting.pop(key, None)
        if books is not None:
            return books
        books = stored_from_bytes(value).books()
        self._waiting[key] = books
        if len(self._waiting) > self.capacity:
            del self._waiting[next(iter(self._waiting))]
        return books


def record_floor(data: bytes) -> int:
    """The record's `floor`; a record written without one gives its `last_offset`."""
    o = orjson.loads(data)
    return int(o.get("floor", o["last_offset"]))
