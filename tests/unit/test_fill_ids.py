"""The fill-id store (SPEC §4.1 rev 2): a fill re-sent however many fills later is a
duplicate, and no crash between the book's write and the id's write applies a fill
twice or loses one (property test over random crash points)."""

from __future__ import annotations

import random
from dataclasses import replace
from decimal import Decimal
from fractions import Fraction
from types import SimpleNamespace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pm_streams.domain import Book, EngineConfig, Fill, event_to_bytes
from pm_streams.fill_ids import FillIds, decode, encode, record_key
from pm_streams.processing import Batch, step
from pm_streams.stored import Stored
from tests.support.naive import naive
from tests.unit.helpers import ASSET, NOW, id_factory

ENGINE = EngineConfig(fill_id_capacity=1)
"""The engine's own window of one id: de-duplication is the store's work here."""
HOUR_MS = 3_600_000


class Changelog(dict[str, Any]):
    """A table whose writes since the last commit may be lost in a crash: a crash
    keeps the committed state plus a prefix of the later writes (one topic-partition
    keeps its order; two changelogs are independent)."""

    def __init__(self) -> None:
        super().__init__()
        self.committed: dict[str, Any] = {}
        self.pending: list[tuple[str, Any]] = []

    @property
    def data(self) -> Changelog:  # what `Reader` reads (the store)
        return self

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self.pending.append((key, value))

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self.pending.append((key, None))

    def commit(self) -> None:
        self.committed = dict(self)
        self.pending.clear()

    def crash(self, kept: int) -> None:
        state = dict(self.committed)
        for key, value in self.pending[:kept]:
            if value is None:
                state.pop(key, None)
            else:
                state[key] = value
        dict.clear(self)
        dict.update(self, state)
        self.pending.clear()


class Origin:
    """A stand-in for the Faust event a write is made on behalf of."""

    def __init__(self, offset: int) -> None:
        self.message = SimpleNamespace(tp=SimpleNamespace(partition=0), offset=offset)


class Partition:
    """The positions agent's per-event logic over one input partition."""

    def __init__(self, horizon_s: float = 7 * 86400) -> None:
        self.books = Changelog()
        self.id_table = Changelog()
        self.ids = FillIds(self.id_table, horizon_s, lambda asset: 0)
        self.new_id = id_factory()
        self.committed_offset = -1

    def record(self) -> Stored | None:
        stored: Stored | None = self.books.get(ASSET)
        return stored

    def book(self) -> Book | None:
        stored = self.record()
        return None if stored is None else stored.book

    def run(self, fills: list[Fill], start: int, stop: int, now_ms: int = 0) -> None:
        """Apply input offsets [start, stop) as one batch and write its books."""
        batch: Batch[Origin] = Batch(max_changes=4)
        for offset in range(start, stop):
            origin = Origin(offset)
            current = batch.get(ASSET) or self.record()
            f = fills[offset]
            result = step(
                current, event_to_bytes(f), offset, NOW, ENGINE, new_id=self.new_id,
                applied_offset=self.ids.applied_offset,
            )  # fmt: skip
            if result.kind == "applied" and result.stored is not None:
                if result.fill is not None:
                    self.ids.record(ASSET, f.mode, f.fill_id, offset, now_ms, origin)
                full = batch.put(result.stored, origin)
                if full is not None:
                    self.books[ASSET] = without_ids(full[0])
            elif result.kind == "replay" and result.fill is not None:
                self.ids.restore(ASSET, f.mode, f.fill_id, offset, now_ms, origin)
        for stored, _ in batch.drain()[0]:
            self.books[ASSET] = without_ids(stored)
        self.ids.flush()


def without_ids(stored: Stored) -> Stored:
    """As the agent writes a record: its fill ids live in the fill-id table."""
    return replace(stored, book=replace(stored.book, fill_ids=()))


def fills_with_resends(rng: random.Random, unique: int, resends: int) -> list[Fill]:
    """`unique` fills, and `resends` copies of earlier ones re-sent anywhere later."""
    originals = [
        Fill(
            asset=ASSET, mode="one-way",
            quantity=Decimal(rng.randint(-40, 40) or 1) / 10,
            price=Decimal(rng.randint(900, 1100)), fee=Decimal(rng.randint(0, 50)) / 100,
            fill_id=f"x-{i}", order_id=None, executed_at=None, trace_id=f"t-{i}",
        )
        for i in range(unique)
    ]  # fmt: skip
    out = list(originals)
    for _ in range(resends):
        at = rng.randint(1, len(out))
        copy = rng.choice(out[:at])
        out.insert(at, replace(copy, trace_id="resent"))
    return out


def first_copies(fills: list[Fill]) -> list[Fill]:
    seen: set[str] = set()
    return [f for f in fills if not (f.fill_id in seen or seen.add(f.fill_id))]  # type: ignore[func-returns-value]


def assert_applied_once(book: Book | None, fills: list[Fill]) -> None:
    assert book is not None
    leg = book.leg("one-way")
    assert leg is not None
    size, _, realized, paid = naive(first_copies(fills))
    assert Fraction(leg.size) == size
    assert Fraction(leg.total_fees) == paid  # a fill applied twice pays its fee twice
    assert abs(Fraction(leg.realized_pnl) - realized) < Fraction(1, 10**30)
    assert leg.version == len(first_copies(fills))


def test_a_fill_re_sent_a_thousand_fills_later_is_a_duplicate() -> None:
    rng = random.Random(1)
    fills = fills_with_resends(rng, 1000, 0)
    fills.append(replace(fills[0], trace_id="replayed-after-1000"))
    p = Partition()
    for start in range(0, len(fills), 100):
        p.run(fills, start, min(start + 100, len(fills)))
        p.books.commit()
        p.id_table.commit()
    assert_applied_once(p.book(), fills)
    book = p.book()
    assert book is not None and book.fill_ids == ()  # the record carries no ids


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=0, max_value=10**9))
def test_no_crash_point_applies_a_fill_twice_or_loses_one(seed: int) -> None:
    rng = random.Random(seed)
    fills = fills_with_resends(rng, rng.randint(5, 60), rng.randint(0, 30))
    p = Partition()
    offset = 0
    crashes = 0
    while offset < len(fills):
        stop = min(len(fills), offset + rng.randint(1, 12))
        p.run(fills, offset, stop)
        if rng.random() < 0.35 and crashes < 20:
            # A crash before the commit: each changelog keeps a prefix of its writes,
            # and the input is replayed from the last committed offset.
            crashes += 1
            p.books.crash(rng.randint(0, len(p.books.pending)))
            p.id_table.crash(rng.randint(0, len(p.id_table.pending)))
            p.ids.reindex(crashes)
            offset = p.committed_offset + 1
            continue
        p.books.commit()
        p.id_table.commit()
        p.committed_offset = stop - 1
        offset = stop
    assert_applied_once(p.book(), fills)


def test_entries_expire_after_the_horizon_and_only_then() -> None:
    fills = fills_with_resends(random.Random(3), 3, 0)
    p = Partition(horizon_s=3600)
    p.run(fills, 0, 1, now_ms=0)
    p.run(fills, 1, 3, now_ms=HOUR_MS // 2)
    origin = Origin(3)
    assert len(p.id_table) == 2  # one record per batch, not one per fill
    assert p.ids.sweep(origin, now_ms=HOUR_MS - 1) == 0
    assert p.ids.sweep(origin, now_ms=HOUR_MS + 1) == 1  # x-0's record, applied at 0
    assert p.ids.applied_offset(ASSET, "one-way", "x-0") is None
    assert p.ids.applied_offset(ASSET, "one-way", "x-1") == 1
    p.ids.reindex(generation=2)  # rebuilt from the table after a rebalance
    assert p.ids.applied_offset(ASSET, "one-way", "x-2") == 2
    assert p.ids.sweep(origin, now_ms=HOUR_MS + HOUR_MS // 2 + 1) == 1  # x-1 and x-2
    assert list(p.id_table) == []
    assert p.ids.applied_offset(ASSET, "one-way", "x-2") is None


def test_record_form() -> None:
    assert record_key(3, 42) == "#3\x1f42"
    entries = [
        ("BTCUSDT", "one-way", "e|1", 42, 1_700_000_000_000),
        ("ETHUSDT", "hedge-long", "x", 43, 1),
    ]
    assert decode(record_key(3, 42), encode(entries)) == entries


class On:
    """An input event of `partition` at `offset`."""

    def __init__(self, partition: int, offset: int) -> None:
        self.message = SimpleNamespace(tp=SimpleNamespace(partition=partition), offset=offset)


def test_one_record_per_partition_per_batch_whatever_the_number_of_assets() -> None:
    table: dict[str, Any] = {}
    partition_of = {f"A{i}USDT": i % 2 for i in range(6)}
    ids = FillIds(table, 3600, partition_of.__getitem__)
    for offset, asset in enumerate(partition_of):
        ids.record(
            asset, "one-way", f"f-{asset}", 10 + offset, 0, On(partition_of[asset], 10 + offset)
        )
    assert ids.flush() == 2
    assert sorted(table) == [record_key(0, 10), record_key(1, 11)]
    assert decode(record_key(0, 10), table[record_key(0, 10)]) == [
        ("A0USDT", "one-way", "f-A0USDT", 10, 0),
        ("A2USDT", "one-way", "f-A2USDT", 12, 0),
        ("A4USDT", "one-way", "f-A4USDT", 14, 0),
    ]
    ids.reindex(generation=1)  # rebuilt from the table alone
    for offset, asset in enumerate(partition_of):
        assert ids.applied_offset(asset, "one-way", f"f-{asset}") == 10 + offset
    assert ids.sweep(On(0, 99), now_ms=HOUR_MS + 1) == 1  # partition 0's record only
    assert list(table) == [record_key(1, 11)]
    assert ids.applied_offset("A0USDT", "one-way", "f-A0USDT") is None
    assert ids.applied_offset("A1USDT", "one-way", "f-A1USDT") == 11


def test_a_record_of_the_earlier_per_asset_form_is_still_read_and_expires() -> None:
    old_key = "BTCUSDT\x1f42"  # key asset + first offset; entries without the asset
    table: dict[str, Any] = {old_key: encode([("one-way", "x-1", 42, 0)])}  # type: ignore[list-item]
    ids = FillIds(table, 3600, lambda asset: 5)
    ids.reindex(generation=1)
    assert ids.applied_offset("BTCUSDT", "one-way", "x-1") == 42
    assert ids.sweep(On(5, 99), now_ms=HOUR_MS - 1) == 0
    assert ids.sweep(On(5, 99), now_ms=HOUR_MS + 1) == 1  # its asset's partition, 5
    assert table == {}
    assert ids.applied_offset("BTCUSDT", "one-way", "x-1") is None
