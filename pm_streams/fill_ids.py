"""Applied fill identities, kept for `POSITION_MANAGER_DEDUP_HORIZON` (SPEC §4.1 rev 2).

A changelog-backed table of their own, not a list inside the position's record: the
record's size then grows with neither the horizon nor the fill rate, and a fill
re-sent however many fills later is still recognised.

One table record per input partition per agent batch (`flush`): key `#partition \\x1f
first input offset`, value the batch's entries `[asset, mode, fill id, input offset,
applied at (epoch ms)]` of that partition. A record per fill cost the worker about a
quarter more CPU per event, and a record per asset per batch one more Kafka record per
fill on a wide book. Every entry is written on behalf of an input event of its
partition, so it lives in the same changelog partition number as its asset's book.
Records of the earlier form (key `asset \\x1f first offset`, entries without the
asset) are still read and expire as before. In memory an index maps (asset, mode,
fill id) to its entry; it is rebuilt from the table after every rebalance.

Crash safety without a transaction between the two writes (the book record and the
ids record): an entry records the input offset of the event that applied the fill, and
a fill is a duplicate only when an entry exists **and** that offset is at most the
stored record's offset (`Stored.offset`), i.e. the application it records is in the
durable book.

* entry kept, book lost: the replayed event finds an entry the book does not cover,
  and is applied (not a duplicate); nothing is lost;
* book kept, entry lost: the replayed event is skipped by the book's replay guard,
  and the agent records its entry again (`restore`); nothing is applied twice.

Input offsets are committed only after both writes are flushed, so every event whose
entry may have been lost is replayed. A record whose newest entry is older than the
horizon is deleted by the agent (`sweep`, a tombstone each).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from functools import partial
from typing import Any

import orjson

from pm_streams.runtime.writes import on_behalf_of

SEP = "\x1f"

PARTITION_MARK = "#"
"""Starts a record key of the per-partition form; an asset symbol never does."""

Entry = tuple[str, str, str, int, int]
"""(asset, mode, fill id, input offset, applied at in epoch ms)."""


def _setitem(table: Any, key: str, value: bytes, origin: Any) -> None:
    with on_behalf_of(origin):
        table[key] = value


def record_key(partition: int, first_offset: int) -> str:
    return f"{PARTITION_MARK}{partition}{SEP}{first_offset}"


def encode(entries: list[Entry]) -> bytes:
    return orjson.dumps(entries)


def decode(key: str, raw: bytes) -> list[Entry]:
    """A record's entries; one of the earlier per-asset form takes its asset from the key."""
    rows = orjson.loads(raw)
    if key.startswith(PARTITION_MARK):
        return [(str(a), str(m), str(f), int(o), int(t)) for a, m, f, o, t in rows]
    asset = key.split(SEP, 1)[0]
    return [(asset, str(m), str(f), int(o), int(t)) for m, f, o, t in rows]


def key_partition(key: str, partition_of: Callable[[str], int]) -> int:
    """The input partition a record belongs to (by its key, or its asset's for the
    earlier form)."""
    if key.startswith(PARTITION_MARK):
        return int(key[1:].split(SEP, 1)[0])
    return partition_of(key.split(SEP, 1)[0])


class FillIds:
    """The store, as the positions agent uses it: look up, record, restore, flush,
    sweep."""

    def __init__(
        self,
        table: Any,
        horizon_seconds: float,
        partition_of: Callable[[str], int],
        put: Callable[[str, bytes, Any], None] | None = None,
    ) -> None:
        self.table = table
        self.put = put or partial(_setitem, table)
        """How a record is written (key, value, origin): the worker passes its
        `runtime.writes.TableWriter.put`."""
        self.horizon_ms = int(horizon_seconds * 1000)
        self.partition_of = partition_of
        # (asset, mode, fill id) -> (input offset, applied at, record key or None)
        self._index: dict[tuple[str, str, str], tuple[int, int, str | None]] = {}
        self._pending: dict[int, tuple[Any, list[Entry]]] = {}
        self._expiry: dict[int, list[tuple[int, str]]] = {}
        self._generation: int | None = None

    def applied_offset(self, asset: str, mode: str, fill_id: str) -> int | None:
        """The input offset that applied this fill, None when it was never applied
        within the horizon."""
        hit = self._index.get((asset, mode, fill_id))
        return None if hit is None else hit[0]

    def record(
        self, asset: str, mode: str, fill_id: str, offset: int, at_ms: int, origin: Any
    ) -> None:
        """Remember a fill applied by the input event at `offset` (of `origin`'s
        partition); written to the table by the next `flush`."""
        self._index[(asset, mode, fill_id)] = (offset, at_ms, None)
        partition = origin.message.tp.partition
        pending = self._pending.get(partition)
        if pending is None:
            self._pending[partition] = (origin, [(asset, mode, fill_id, offset, at_ms)])
        else:
            pending[1].append((asset, mode, fill_id, offset, at_ms))

    def restore(
        self, asset: str, mode: str, fill_id: str, offset: int, at_ms: int, origin: Any
    ) -> bool:
        """After a replayed event: record its entry again if a crash lost it. True when
        it was missing."""
        if self.applied_offset(asset, mode, fill_id) is not None:
            return False
        self.record(asset, mode, fill_id, offset, at_ms, origin)
        return True

    def flush(self) -> int:
        """Write one record per input partition for the entries recorded since the last
        flush; how many records. Synchronous: the agent calls it before it awaits
        anything."""
        pending, self._pending = self._pending, {}
        for partition, (origin, entries) in pending.items():
            key = record_key(partition, entries[0][3])
            self.put(key, encode(entries), origin)
            for asset, mode, fill_id, offset, at_ms in entries:
                self._index[(asset, mode, fill_id)] = (offset, at_ms, key)
            newest = max(e[4] for e in entries)
            heapq.heappush(self._expiry.setdefault(partition, []), (newest, key))
        return len(pending)

    def reindex(self, generation: int) -> None:
        """Rebuild the index from the table once per consumer generation (the
        recovered table holds records this worker did not write)."""
        if generation == self._generation:
            return
        self._generation = generation
        index: dict[tuple[str, str, str], tuple[int, int, str | None]] = {}
        by_partition: dict[int, list[tuple[int, str]]] = {}
        for key, raw in list(self.table.items()):
            if not raw:
                continue
            try:
                entries = decode(key, raw)
                partition = key_partition(key, self.partition_of)
            except (ValueError, TypeError):
                continue
            for asset, mode, fill_id, offset, at_ms in entries:
                seen = index.get((asset, mode, fill_id))
                if seen is None or seen[0] < offset:
                    index[(asset, mode, fill_id)] = (offset, at_ms, key)
            if entries:
                newest = max(e[4] for e in entries)
                by_partition.setdefault(partition, []).append((newest, key))
        for heap in by_partition.values():
            heapq.heapify(heap)
        # Entries recorded but not flushed yet stay known.
        for _, entries in self._pending.values():
            for asset, mode, fill_id, offset, at_ms in entries:
                index[(asset, mode, fill_id)] = (offset, at_ms, None)
        self._index = index
        self._expiry = by_partition

    def sweep(self, origin: Any, now_ms: int, limit: int = 100) -> int:
        """Delete up to `limit` records of `origin`'s partition whose newest entry is
        older than the horizon; how many were deleted."""
        heap = self._expiry.get(origin.message.tp.partition)
        cutoff = now_ms - self.horizon_ms
        deleted = 0
        if not heap or heap[0][0] >= cutoff:
            return 0
        with on_behalf_of(origin):
            while heap and heap[0][0] < cutoff and deleted < limit:
                _, key = heapq.heappop(heap)
                raw = self.table.get(key)
                if raw is None:
                    continue
                for asset, mode, fill_id, _offset, _at in decode(key, raw):
                    hit = self._index.get((asset, mode, fill_id))
                    if hit is not None and hit[2] == key:  # not recorded again since
                        del self._index[(asset, mode, fill_id)]
                del self.table[key]
                deleted += 1
        return deleted
