"""The positions agent's batching (`processing.Batch`, `Stored.steps`), without Faust.

The agent applies a batch of input events, then writes each changed asset once; the
record folds the batch's earlier changes. These tests drive `step` + `Batch` the way
the agent does and compare with writing after every event: the stored state, the
replay guard, and what the changelog's consumers (sink ledger, republisher) derive
must all be the same.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pm_streams.domain import Event, event_to_bytes
from pm_streams.events import position_events
from pm_streams.processing import Batch, step
from pm_streams.stored import Stored, stored_from_bytes, stored_to_bytes
from tables.ledger import ledger_rows
from tests.unit.helpers import CFG, NOW, fill, id_factory
from tests.unit.test_properties import events as one_asset_events

ASSETS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")

multi_asset_events = st.tuples(
    one_asset_events, st.lists(st.sampled_from(ASSETS), min_size=30, max_size=30)
).map(lambda t: [replace(ev, asset=a) for ev, a in zip(t[0], t[1], strict=False)])


def per_event(evs: list[Event]) -> tuple[dict[str, Stored], list[Stored]]:
    """The reference: a table write after every applied event."""
    table: dict[str, Stored] = {}
    written: list[Stored] = []
    new_id = id_factory()
    for offset, ev in enumerate(evs):
        now = NOW + timedelta(milliseconds=offset)
        r = step(table.get(ev.asset), event_to_bytes(ev), offset, now, CFG, new_id=new_id)
        if r.kind == "applied" and r.stored is not None:
            table[ev.asset] = r.stored
            written.append(r.stored)
    return table, written


def batched(
    evs: list[Event], cuts: list[int], max_changes: int = 64
) -> tuple[dict[str, Stored], list[Stored]]:
    """What the agent does: per batch, apply into a `Batch`, then write its books.

    Records go through the codec, as they do through the changelog."""
    table: dict[str, Stored] = {}
    written: list[Stored] = []
    new_id = id_factory()

    def write(record: Stored) -> None:
        stored = stored_from_bytes(stored_to_bytes(record))
        assert stored == record
        table[record.book.asset] = stored
        written.append(stored)

    bounds = sorted({0, len(evs), *(c for c in cuts if 0 < c < len(evs))})
    for start, end in pairwise(bounds):
        batch: Batch[None] = Batch(max_changes)
        for offset in range(start, end):
            ev = evs[offset]
            now = NOW + timedelta(milliseconds=offset)
            current = batch.get(ev.asset) or table.get(ev.asset)
            r = step(current, event_to_bytes(ev), offset, now, CFG, new_id=new_id)
            if r.kind == "applied" and r.stored is not None:
                full = batch.put(r.stored, None)
                if full is not None:
                    write(full[0])
        for record, _origin in batch.drain()[0]:
            write(record)
    return table, written


def unfolded(records: list[Stored]) -> dict[str, list[Stored]]:
    """Every change the records carry, per asset, in order."""
    out: dict[str, list[Stored]] = {}
    for record in records:
        out.setdefault(record.book.asset, []).extend(record.steps())
    return out


def same_change(a: Stored, b: Stored) -> bool:
    def key(x: Stored) -> tuple[Any, ...]:
        return (x.book.asset, x.book.legs, x.book.effects, x.offset)

    return key(a) == key(b)


cut_lists = st.lists(st.integers(min_value=1, max_value=29), max_size=8)


@given(multi_asset_events, cut_lists, st.integers(min_value=1, max_value=5))
def test_batched_writes_carry_every_change(
    evs: list[Event], cuts: list[int], max_changes: int
) -> None:
    ref_table, ref_written = per_event(evs)
    table, written = batched(evs, cuts, max_changes)
    # The stored state is the same, fill ids and replay guard included.
    assert {a: replace(b, earlier=()) for a, b in table.items()} == ref_table
    # Consumers see every change, in order, exactly once.
    ref = unfolded(ref_written)
    got = unfolded(written)
    assert got.keys() == ref.keys()
    for asset, changes in ref.items():
        assert len(got[asset]) == len(changes)
        assert all(same_change(a, b) for a, b in zip(got[asset], changes, strict=True))
    # Records are bounded, and there is at most one per asset per batch below the bound.
    assert all(len(r.steps()) <= max_changes for r in written)


@given(multi_asset_events, cut_lists)
def test_consumers_derive_the_same_rows_and_events(evs: list[Event], cuts: list[int]) -> None:
    _, ref_written = per_event(evs)
    _, written = batched(evs, cuts)

    def derived(records: list[Stored]) -> tuple[list[Any], list[Any]]:
        rows = sorted(
            (row for r in records for view in r.steps() for row in ledger_rows(view.book)),
            key=repr,
        )
        out = sorted(
            (
                (kind, body["event_id"], body["size"], body["average_entry_price"])
                for r in records
                for view in r.steps()
                for kind, body in position_events(view.book, NOW)
            ),
            key=repr,
        )
        return rows, out

    assert derived(written) == derived(ref_written)


def test_a_replayed_event_changes_nothing_after_a_batched_write() -> None:
    evs: list[Event] = [fill("1", "100", fid=f"f{i}") for i in range(5)]
    table, _ = batched(evs, [])
    stored = table["BTCUSDT"]
    assert stored.offset == 4 and len(stored.steps()) == 5
    for offset, ev in enumerate(evs):  # redelivered after a crash before the commit
        r = step(stored, event_to_bytes(ev), offset, NOW, CFG)
        assert r.kind == "replay" and r.stored is stored


def test_put_hands_back_a_full_record_and_keeps_order() -> None:
    evs: list[Event] = [fill("1", "100", fid=f"f{i}") for i in range(7)]
    _, written = batched(evs, [], max_changes=3)
    assert [len(r.steps()) for r in written] == [3, 3, 1]
    assert [v.offset for r in written for v in r.steps()] == list(range(7))


def test_touched_lists_changed_and_replayed_assets() -> None:
    batch: Batch[str] = Batch()
    assert batch.drain() == ([], [])
    batch.replayed("ETHUSDT")
    r = step(None, event_to_bytes(fill("1", "100")), 0, NOW, CFG)
    assert r.stored is not None
    assert batch.put(r.stored, "e2") is None
    books, touched = batch.drain()
    assert touched == ["ETHUSDT", "BTCUSDT"]
    assert [origin for _book, origin in books] == ["e2"]


def test_batch_rejects_a_zero_bound() -> None:
    with pytest.raises(ValueError, match="max_changes"):
        Batch(0)


def test_a_version_1_record_still_decodes() -> None:
    r = step(None, event_to_bytes(fill("1", "100")), 0, NOW, CFG)
    assert r.stored is not None
    raw = stored_to_bytes(r.stored).replace(b'"v":2', b'"v":1')
    assert stored_from_bytes(raw) == r.stored
