"""Keep the long-lived heap out of the cyclic garbage collector's full passes.

A worker holds ~120,000 GC-tracked objects that live as long as the process (modules,
Faust's app, the tables, the caches). Every full (generation 2) collection walks all
of them, tens of milliseconds each under load, and each one stalls every event and
request in flight; the outputs process pauses the same way.

`settle()` collects everything once and then freezes what survives (`gc.freeze`), so
later collections see only the objects made since. A frozen object that later becomes
cyclic garbage would never be collected, so each settle first unfreezes: it runs after
start, after every rebalance (the tables' recovered data), and every `every` seconds.
One settle costs one full collection (~50 ms), at those moments only.

The keeper also spaces the young collections (`YOUNG_COLLECTION_EVERY`). At CPython's
default (one per 700 net allocations of tracked objects) a worker under load collects
gen 0 about a hundred times a second; objects that live for one batch (10-20 ms: events,
records, futures) survive those collections and are walked again by the gen 1 and gen 2
passes. That was ~6 % of the worker's and the outputs process's CPU (measured with
`gc.callbacks` in `bench/pipeline.py`, 1,000 assets); at 20,000 a young collection runs
every second or so and costs a few milliseconds. Refcounting frees everything that is
not in a cycle at once; only cyclic garbage waits longer.

Upstream: CPython's full (generation 2) collections walk every long-lived object of the
Faust app and the tables.
Delete when: the interpreter's collector stops walking long-lived objects on every full
pass (an incremental collector), or the worker's heap is small.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from mode import Service

from pm_streams.logs import get_logger
from pm_streams.metrics import Metrics

log = get_logger("pm_streams.runtime.heap")

SETTLE_EVERY = 3600.0

YOUNG_COLLECTION_EVERY = 20_000
"""Net allocations of tracked objects between gen 0 collections (CPython: 700)."""

MIDDLE_COLLECTION_EVERY = 20
"""Gen 0 collections between gen 1 collections (CPython: 10)."""


def space_collections() -> None:
    """Set the collector's thresholds (see the module docstring); gen 2 keeps its own."""
    full = gc.get_threshold()[2]
    gc.set_threshold(YOUNG_COLLECTION_EVERY, MIDDLE_COLLECTION_EVERY, full)


def settle(metrics: Metrics | None = None) -> int:
    """Collect all garbage, then freeze the survivors; how many objects are frozen."""
    started = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    seconds = time.perf_counter() - started
    if metrics is not None:
        metrics.set("pm_heap_frozen_objects", frozen)
        metrics.observe("pm_heap_settle_seconds", seconds)
    log.info("heap_settled", frozen_objects=frozen, seconds=round(seconds, 4))
    return frozen


class HeapKeeper(Service):
    """Settles the heap when the process has started and then every `every` seconds."""

    def __init__(self, metrics: Metrics, every: float = SETTLE_EVERY, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.metrics = metrics
        self.every = every

    async def on_started(self) -> None:
        space_collections()
        settle(self.metrics)

    def after_rebalance(self, sender: Any, /, *_: Any, signal: Any, **__: Any) -> None:
        """A receiver for Faust's `on_rebalance_complete`: the tables are recovered."""
        settle(self.metrics)

    @Service.task
    async def _periodically(self) -> None:
        while not self.should_stop:
            await self.sleep(self.every)
            if not self.should_stop:
                settle(self.metrics)
