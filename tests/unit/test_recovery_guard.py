"""`runtime.recovery`: which partitions being restored lost their changelog records, and
the guard seeking them back (the state seen in a stalled failover: offset -1, highwater
59, the consumer's position 60, nothing queued)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from pm_streams.metrics import Metrics
from pm_streams.runtime.recovery import RecoveryGuard, Restoring, Stalls, lost

POSITIONS = TP("pm-positions-changelog", 2)
TOTALS = TP("pm-portfolio-totals-changelog", 0)


def test_records_fetched_past_the_highwater_yet_not_applied_are_lost() -> None:
    assert lost(Restoring(offset=-1, highwater=59, position=60)) == 0
    assert lost(Restoring(offset=41, highwater=59, position=60)) == 42


def test_a_partition_still_fetching_or_restored_is_not_lost() -> None:
    assert lost(Restoring(offset=-1, highwater=59, position=0)) is None  # fetching
    assert lost(Restoring(offset=10, highwater=59, position=59)) is None  # last one due
    assert lost(Restoring(offset=59, highwater=59, position=60)) is None  # restored
    assert lost(Restoring(offset=-1, highwater=-1, position=0)) is None  # empty
    assert lost(Restoring(offset=-1, highwater=59, position=None)) is None  # unknown


def test_a_lost_partition_is_due_after_the_quiet_period_once() -> None:
    stalls = Stalls(quiet=5.0)
    state = {POSITIONS: Restoring(-1, 59, 60), TOTALS: Restoring(-1, 48, 10)}
    assert stalls.due(state, now=100.0) == {}
    assert stalls.due(state, now=104.9) == {}
    assert stalls.due(state, now=105.0) == {POSITIONS: 0}
    assert stalls.due(state, now=105.5) == {}  # the clock starts again after a re-read
    assert stalls.due(state, now=110.5) == {POSITIONS: 0}


def test_progress_or_a_new_assignment_restarts_the_quiet_period() -> None:
    stalls = Stalls(quiet=5.0)
    assert stalls.due({POSITIONS: Restoring(-1, 59, 60)}, now=0.0) == {}
    assert stalls.due({POSITIONS: Restoring(30, 59, 60)}, now=4.0) == {}  # progress
    assert stalls.due({POSITIONS: Restoring(30, 59, 60)}, now=8.0) == {}
    assert stalls.due({}, now=8.5) == {}  # revoked: forgotten
    assert stalls.due({POSITIONS: Restoring(30, 59, 60)}, now=9.0) == {}
    assert stalls.due({POSITIONS: Restoring(30, 59, 60)}, now=14.0) == {POSITIONS: 31}


class _Consumer:
    """Faust's consumer as the guard uses it: positions, flow, seek."""

    def __init__(self, positions: dict[TP, int]) -> None:
        self.positions = positions
        self.flow_active = True
        self.seeks: list[tuple[TP, int]] = []

    async def position(self, tp: TP) -> int:
        return self.positions[tp]

    async def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp, offset))
        self.positions[tp] = offset


def _app(consumer: _Consumer, queued: int = 0) -> Any:
    recovery = SimpleNamespace(
        in_recovery=True,
        active_tps={POSITIONS, TOTALS},
        active_offsets={POSITIONS: -1, TOTALS: 48},
        active_highwaters={POSITIONS: 59, TOTALS: 48},
    )
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(queued):
        queue.put_nowait(i)
    return SimpleNamespace(
        tables=SimpleNamespace(recovery=recovery, changelog_queue=queue), consumer=consumer
    )


async def test_the_guard_seeks_a_lost_partition_back_and_counts_it() -> None:
    consumer = _Consumer({POSITIONS: 60, TOTALS: 49})
    metrics = Metrics.of_service()
    guard = RecoveryGuard(_app(consumer), metrics, quiet=5.0)
    assert await guard.check(0.0) == {}
    assert await guard.check(5.0) == {POSITIONS: 0}
    assert consumer.seeks == [(POSITIONS, 0)]
    assert "pm_recovery_rereads_total 1" in metrics.render()
    assert await guard.check(11.0) == {}  # fetching again from 0: not lost


async def test_the_guard_waits_while_records_are_queued_or_flow_is_stopped() -> None:
    consumer = _Consumer({POSITIONS: 60, TOTALS: 49})
    guard = RecoveryGuard(_app(consumer, queued=3), Metrics.of_service(), quiet=5.0)
    assert await guard.check(0.0) == {} and await guard.check(10.0) == {}
    consumer.flow_active = False
    guard.app.tables.changelog_queue = asyncio.Queue()
    assert await guard.check(20.0) == {} and await guard.check(30.0) == {}
    guard.app.tables.recovery.in_recovery = False
    consumer.flow_active = True
    assert await guard.check(40.0) == {} and await guard.check(50.0) == {}
    assert consumer.seeks == []
