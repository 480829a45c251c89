"""Re-read changelog records that Faust's table recovery lost on their way to it.

A worker restoring a table partition seeks the consumer to the table's last offset and
waits until its recovery has seen every record up to the partition's highwater. Around
a rebalance the fetched records can be taken out of aiokafka (its position moves past
them) and never reach the recovery: the worker then waits for them forever, answers 503
"partitions are being reassigned" and applies nothing. Seen about once in thirty runs
of the two-worker failover test, on both sides of the handover; the state then was, for
every partition still to restore: the recovery's offset -1, the highwater 59, the
consumer's position 60 (at the end), nothing buffered or queued. The path seen (records
fetched while flow was stopped) is closed in `runtime.transport` (`unread`); Faust's
`getmany` has two more ways to drop fetched records (a generation change, a partition
paused meanwhile), and this guard is what keeps any of them from hanging a worker.

`RecoveryGuard` checks the partitions being restored every second. A partition whose
consumer position is past the highwater while the recovery's offset is below it, with
no progress for `quiet` seconds and nothing queued for the recovery, lost its records:
the guard seeks it back to the first record the recovery has not seen, and the records
come again. The recovery skips offsets it has already applied, so a record read twice
is harmless.

Upstream: faust-streaming drops fetched records in `Consumer.getmany` when flow stops,
the generation changes or the partition is not active at that moment (aiokafka has
already moved past them), and its `Recovery` never seeks again within a generation
(faust-streaming #21, #74: recovery hangs).
Delete when: faust's recovery re-seeks, or never drops, changelog records.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from time import monotonic
from typing import Any

from mode import Service

from pm_streams.logs import get_logger
from pm_streams.metrics import Metrics

log = get_logger("pm_streams.runtime.recovery")

CHECK_EVERY = 1.0
"""Seconds between checks."""

QUIET = 5.0
"""Seconds without progress before a partition's records count as lost: the consumer
hands fetched records to the recovery within milliseconds."""


@dataclass(frozen=True, slots=True)
class Restoring:
    """One partition being restored, as the recovery and the consumer see it."""

    offset: int  # the last offset the recovery applied (-1: none)
    highwater: int  # the last offset it waits for
    position: int | None  # the consumer's next offset to fetch (None: not known)


def lost(restoring: Restoring) -> int | None:
    """The offset to read again from when the records between the recovery's offset and
    the highwater were fetched (the position is past them) yet not applied; else None."""
    if restoring.offset >= restoring.highwater or restoring.position is None:
        return None
    if restoring.position <= restoring.highwater:
        return None  # still fetching, or records buffered in the consumer
    return max(restoring.offset + 1, 0)


class Stalls:
    """Per partition, since when it has been in the same lost state; a partition is due
    for a re-read once that state held for `quiet` seconds."""

    def __init__(self, quiet: float = QUIET) -> None:
        self.quiet = quiet
        self._since: dict[Any, tuple[Restoring, float]] = {}

    def forget(self) -> None:
        """Nothing is lost while nothing is being restored or records are on their way."""
        self._since.clear()

    def due(self, partitions: Mapping[Any, Restoring], now: float) -> dict[Any, int]:
        due: dict[Any, int] = {}
        since = self._since
        for tp in list(since):
            if tp not in partitions:
                del since[tp]
        for tp, restoring in partitions.items():
            start = lost(restoring)
            if start is None:
                since.pop(tp, None)
                continue
            seen = since.get(tp)
            if seen is None or seen[0] != restoring:
                since[tp] = (restoring, now)
            elif now - seen[1] >= self.quiet:
                due[tp] = start
                del since[tp]
        return due


class RecoveryGuard(Service):
    """Seeks back the partitions whose changelog records Faust's recovery lost."""

    def __init__(
        self, app: Any, metrics: Metrics, every: float = CHECK_EVERY, quiet: float = QUIET,
        **kwargs: Any,
    ) -> None:  # fmt: skip
        super().__init__(**kwargs)
        self.app = app
        self.metrics = metrics
        self.every = every
        self.stalls = Stalls(quiet)

    @Service.task
    async def _watch(self) -> None:
        while not self.should_stop:
            await self.sleep(self.every)
            try:
                async with asyncio.timeout(self.every * 5):
                    await self.check(monotonic())
            except Exception as exc:  # a rebalance moved the partitions meanwhile
                log.info("recovery_check_skipped", error=repr(exc))

    async def check(self, now: float) -> dict[Any, int]:
        """Seek back the partitions due (`Stalls`); returns them with their offsets."""
        app = self.app
        recovery = app.tables.recovery
        consumer = app.consumer
        if (
            not recovery.in_recovery
            or not consumer.flow_active
            or not app.tables.changelog_queue.empty()  # records on their way to it
        ):
            self.stalls.forget()
            return {}
        partitions = {
            tp: Restoring(offset, highwater, await consumer.position(tp))
            for tp in list(recovery.active_tps)
            if (offset := recovery.active_offsets.get(tp)) is not None
            and (highwater := recovery.active_highwaters.get(tp)) is not None
        }
        due = self.stalls.due(partitions, now)
        for tp, start in due.items():
            restoring = partitions[tp]
            log.warning(
                "recovery_records_lost",
                topic=tp.topic,
                partition=tp.partition,
                applied=restoring.offset,
                highwater=restoring.highwater,
                position=restoring.position,
                action=f"reading again from offset {start}",
            )
            self.metrics.inc("pm_recovery_rereads_total")
            await consumer.seek(tp, start)
        return due
