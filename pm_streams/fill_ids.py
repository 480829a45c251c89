"""Applied fill identities, kept for `POSITION_MANAGER_DEDUP_HORIZON` (SPEC §4.1 rev 2).

A changelog-backed table of their own, not a list inside the position's record: the
record's size then grows with neither the horizon nor the fill rate, and a fill
re-sent however many fills later is still recognised.

Key: `asset \\x1f mode \\x1f fill_id` (the separator is a control character, which no
accepted input contains). Value: `b"<input offset> <applied at, epoch ms>"`. Each
entry is written on behalf of an input event of the asset's partition, so it lives in
the same changelog partition number as the asset's book.

Crash safety without a transaction between the two writes (the book record and the
id entry): the entry records the input offset of the event that applied the fill,
and a fill is a duplicate only when an entry exists **and** that offset is at most
the book's `last_offset`, i.e. the application it records is in the durable book.

* entry kept, book lost: the replayed event finds an entry the book does not cover,
  and is applied (not a duplicate); nothing is lost;
* book kept, entry lost: the replayed event is skipped by the book's replay guard,
  and the agent writes its entry again (`restore`); nothing is applied twice.

Input offsets are committed only after both writes are flushed, so every event whose
entry may have been lost is replayed. Entries older than the horizon are deleted by
the agent (`sweep`, a tombstone each), from an index of (applied at, key) per
partition that is rebuilt from the table after every rebalance.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

from pm_streams.reads import Reader
from pm_streams.writes import on_behalf_of

SEP = "\x1f"


def fill_key(asset: str, mode: str, fill_id: str) -> str:
    return f"{asset}{SEP}{mode}{SEP}{fill_id}"


def entry(offset: int, at_ms: int) -> bytes:
    return b"%d %d" % (offset, at_ms)


def parse_entry(raw: bytes) -> tuple[int, int]:
    """(input offset, applied at in epoch ms)."""
    offset, at_ms = raw.split(b" ", 1)
    return int(offset), int(at_ms)


class FillIds:
    """The store, as the positions agent uses it: look up, record, restore, sweep."""

    def __init__(
        self,
        table: Any,
        horizon_seconds: float,
        partition_of: Callable[[str], int],
    ) -> None:
        self.table = table
        self.horizon_ms = int(horizon_seconds * 1000)
        self.partition_of = partition_of
        self._read = Reader(table)
        self._expiry: dict[int, list[tuple[int, str]]] = {}
        self._generation: int | None = None

    def applied_offset(self, asset: str, mode: str, fill_id: str) -> int | None:
        """The input offset that applied this fill, None when it was never applied
        within the horizon."""
        raw = self._read.get(fill_key(asset, mode, fill_id))
        return None if raw is None else parse_entry(raw)[0]

    def record(
        self, asset: str, mode: str, fill_id: str, offset: int, at_ms: int, origin: Any
    ) -> None:
        """Remember a fill applied by the input event at `offset` (of `origin`'s
        partition)."""
        key = fill_key(asset, mode, fill_id)
        with on_behalf_of(origin):
            self.table[key] = entry(offset, at_ms)
        partition = origin.message.tp.partition
        heapq.heappush(self._expiry.setdefault(partition, []), (at_ms, key))

    def restore(
        self, asset: str, mode: str, fill_id: str, offset: int, at_ms: int, origin: Any
    ) -> bool:
        """After a replayed event: write its entry again if a crash lost it. True when
        it was missing."""
        if self.applied_offset(asset, mode, fill_id) is not None:
            return False
        self.record(asset, mode, fill_id, offset, at_ms, origin)
        return True

    def reindex(self, generation: int) -> None:
        """Rebuild the expiry index from the table once per consumer generation (the
        recovered table holds entries this worker did not write)."""
        if generation == self._generation:
            return
        self._generation = generation
        by_partition: dict[int, list[tuple[int, str]]] = {}
        for key, raw in list(self.table.items()):
            if not raw:
                continue
            asset = key.split(SEP, 1)[0]
            try:
                at_ms = parse_entry(raw)[1]
            except ValueError:
                continue
            by_partition.setdefault(self.partition_of(asset), []).append((at_ms, key))
        for heap in by_partition.values():
            heapq.heapify(heap)
        self._expiry = by_partition

    def sweep(self, origin: Any, now_ms: int, limit: int = 1000) -> int:
        """Delete up to `limit` entries of `origin`'s partition older than the horizon;
        how many were deleted."""
        heap = self._expiry.get(origin.message.tp.partition)
        cutoff = now_ms - self.horizon_ms
        deleted = 0
        if not heap or heap[0][0] >= cutoff:
            return 0
        with on_behalf_of(origin):
            while heap and heap[0][0] < cutoff and deleted < limit:
                at_ms, key = heapq.heappop(heap)
                raw = self._read.get(key)
                if raw is None or parse_entry(raw)[1] != at_ms:
                    continue  # gone already, or written again later (a newer entry)
                del self.table[key]
                deleted += 1
        return deleted
