"""The sink and the republisher of one process decode each changelog record once."""

from __future__ import annotations

import pytest

from pm_streams.stored import SharedDecode, Stored, stored_from_bytes, stored_to_bytes
from tests.unit.helpers import Runner, fill


def _record(*quantities: str) -> bytes:
    runner = Runner()
    stored: Stored | None = None
    for offset, q in enumerate(quantities):
        runner(fill(q, "100"))
        assert runner.book is not None
        now = Stored(runner.book, offset)
        stored = now if stored is None else now.folded_after(stored)
    assert stored is not None
    return stored_to_bytes(stored)


def test_the_second_reader_gets_the_first_readers_books_and_a_third_decodes_again() -> None:
    raw = _record("1", "2", "-0.5")
    shared = SharedDecode()
    first = shared.books(3, 17, raw)
    assert first == stored_from_bytes(raw).books() and len(first) == 3
    assert shared.books(3, 17, raw) is first  # not decoded again
    again = shared.books(3, 17, raw)  # both took it: a re-read decodes anew
    assert again == first and again is not first
    other = shared.books(4, 17, raw)  # another partition, same offset: its own record
    assert other is not again


def test_waiting_results_are_bounded_oldest_out_first() -> None:
    raw = _record("1")
    shared = SharedDecode(capacity=2)
    kept = [shared.books(0, offset, raw) for offset in range(3)]
    assert shared.books(0, 0, raw) is not kept[0]  # pushed out by offset 2: decoded again
    assert shared.books(0, 2, raw) is kept[2]


def test_an_undecodable_record_raises_for_each_reader_and_keeps_nothing() -> None:
    shared = SharedDecode()
    for _ in range(2):
        with pytest.raises(ValueError):
            shared.books(0, 5, b'{"v": 99}')
    assert shared.books(0, 5, _record("1"))  # the key holds nothing stale
