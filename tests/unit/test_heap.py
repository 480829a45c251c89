"""`pm_streams.runtime.heap`: what a settle freezes, and that frozen garbage is not kept forever."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from pm_streams.metrics import Metrics
from pm_streams.runtime.heap import (
    MIDDLE_COLLECTION_EVERY,
    YOUNG_COLLECTION_EVERY,
    HeapKeeper,
    settle,
)


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> tuple[weakref.ref[Node], Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a), a


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    thresholds = gc.get_threshold()
    gc.unfreeze()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_settle_freezes_the_survivors_and_not_the_garbage() -> None:
    garbage = cycle()[0]  # unreachable once the tuple is gone
    kept_ref, kept = cycle()
    metrics = Metrics()
    frozen = settle(metrics)
    assert garbage() is None  # collected, not frozen
    assert frozen == gc.get_freeze_count() > 0
    assert kept_ref() is kept
    assert not any(o is kept for o in gc.get_objects())  # frozen: no generation holds it
    assert metrics.gauges["pm_heap_frozen_objects"][()] == frozen
    assert metrics.histograms["pm_heap_settle_seconds"][()].n == 1


def test_a_frozen_object_that_becomes_garbage_is_collected_by_the_next_settle() -> None:
    ref, obj = cycle()
    settle()
    del obj  # now cyclic garbage inside the permanent generation
    gc.collect()
    assert ref() is not None  # a plain collection does not see frozen objects
    settle()
    assert ref() is None


def test_a_young_collection_waits_for_its_threshold_of_allocations() -> None:
    from pm_streams.runtime.heap import space_collections

    gc.collect()
    space_collections()
    before = gc.get_stats()[0]["collections"]
    kept: list[list[int]] = [[] for _ in range(YOUNG_COLLECTION_EVERY // 2)]  # tracked allocations
    assert gc.get_stats()[0]["collections"] == before  # 700 would have collected ~14 times
    kept += [[] for _ in range(YOUNG_COLLECTION_EVERY)]
    assert gc.get_stats()[0]["collections"] > before
    assert len(kept) > 0


async def test_the_keeper_settles_on_start_and_then_every_interval() -> None:
    gc.set_threshold(700, 10, 10)
    metrics = Metrics()
    keeper = HeapKeeper(metrics, every=0.05)
    await keeper.start()
    try:
        await asyncio.sleep(0.3)
        settles = metrics.histograms["pm_heap_settle_seconds"][()].n
        assert 3 <= settles <= 8
        assert gc.get_freeze_count() > 0
        young, middle, full = gc.get_threshold()
        assert (young, middle) == (YOUNG_COLLECTION_EVERY, MIDDLE_COLLECTION_EVERY)
        assert full == 10  # CPython's, kept
    finally:
        await keeper.stop()


async def test_the_worker_keeps_its_heap_and_settles_after_every_rebalance() -> None:
    from pm_streams.app import build
    from pm_streams.settings import Settings

    service = build(Settings(app_id="pmtest-heap"))
    assert isinstance(service.heap, HeapKeeper)
    assert service.heap in service.services
    before = gc.get_freeze_count()
    assert before == 0
    await service.app.on_rebalance_complete.send()
    assert gc.get_freeze_count() > 0
    assert service.metrics.histograms["pm_heap_settle_seconds"][()].n == 1


def test_the_outputs_process_keeps_its_heap() -> None:
    from pm_streams.outputs import build_outputs
    from pm_streams.settings import Settings

    outputs = build_outputs(Settings(app_id="pmtest-heap"))
    assert any(isinstance(s, HeapKeeper) for s in outputs.services)
