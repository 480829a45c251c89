"""Read input records the Faust stream skipped, straight from Kafka.

faust-streaming can drop events around a rebalance: messages prefetched under an
old consumer generation are skipped, yet later offsets are acked and committed
(faust-streaming #216, #221, #606; seen here after a SIGKILL with two workers).
The positions agent therefore keeps, per input partition, the last offset it
applied (`Watermarks`). When the next event's offset is beyond watermark + 1, the
records in between are read here and applied first, in order.

Upstream: faust-streaming #216, #221: a record fetched under another consumer
generation, or while flow is paused, is acked and skipped (`Stream._py_aiter`), and
later offsets are committed.
Delete when: faust never acks a record it did not deliver to the stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from pm_streams.settings import Settings


@dataclass(frozen=True, slots=True)
class Record:
    key: str
    value: bytes
    offset: int


class Watermarks:
    """Per input partition, the last offset this worker applied, held in memory.

    It is never written to Kafka (that was one extra record per event). A watermark
    that is too low is harmless: the gap reader re-reads records that the books'
    own offset guard (`Stored.offset`) then skips. One that is too high would lose events, so
    on every new consumer generation it is rebuilt from the books recovered from the
    changelog: the highest record *floor* among the assets of that partition (-1 when
    it has none, so everything before the first delivered event is checked). Not the
    highest record offset: a crash can keep one asset's record of a write cycle and
    lose another's older one (see `pm_streams.agents`).
    """

    def __init__(self, partitions: int) -> None:
        self._all = list(range(partitions))
        self._partitioner = DefaultPartitioner()
        self._marks: dict[int, int] = {}
        self._generation: int | None = None

    def partition_of(self, asset: str) -> int:
        """The input partition of an asset (the bridge's producer uses this partitioner)."""
        return int(self._partitioner(asset.encode(), self._all, self._all))

    def get(
        self, partition: int, generation: int, books: Callable[[], Iterable[tuple[str, int]]]
    ) -> int:
        if generation != self._generation:
            self._marks.clear()
            self._generation = generation
        mark = self._marks.get(partition)
        if mark is None:
            offsets = (off for asset, off in books() if self.partition_of(asset) == partition)
            mark = self._marks[partition] = max(offsets, default=-1)
        return mark

    def advance(self, partition: int, offset: int) -> None:
        if offset > self._marks.get(partition, -1):
            self._marks[partition] = offset


class Sentry:
    """Which input partitions need a probe record: the ones with records beyond the
    agent's watermark (by the consumer's high-water mark) and no progress since the
    previous look.

    faust-streaming acks and skips a fetched record whose consumer generation is not
    the app's current one, or that arrives while flow control is paused (its
    `Stream._py_aiter`); around a rebalance or a restart that can be the last record
    of a partition for a long time, e.g. a fill on a quiet asset. The gap check in
    the agent reads such a record back when the partition's next record arrives; the
    probe is that next record. A partition that keeps progressing (a backlog) is not
    probed; a partition seen lagging for the first time is probed at once (after an
    assignment its watermark comes from the records' floors). Delete when faust skips
    no record it has not delivered (faust-streaming #216, #221)."""

    def __init__(self) -> None:
        self._seen: dict[int, int] = {}
        self._looked: set[int] = set()

    def due(self, partition: int, applied: int, highwater: int | None) -> bool:
        """`highwater` is the offset the partition's next record will get."""
        first_look = partition not in self._looked
        self._looked.add(partition)
        if highwater is None or highwater - 1 <= applied:
            self._seen.pop(partition, None)
            return False
        previous = self._seen.get(partition)
        self._seen[partition] = applied
        return first_look or previous == applied

    def forget(self) -> None:
        """A new assignment: every partition is looked at afresh."""
        self._seen.clear()
        self._looked.clear()


class GapReader:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    async def _ensure(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.settings.kafka_bootstrap,
                enable_auto_commit=False,
                group_id=None,
            )
            await consumer.start()
            self._consumer = consumer
        return self._consumer

    async def read(self, topic: str, partition: int, start: int, end: int) -> list[Record]:
        """Records with start <= offset < end (compacted-away offsets are simply absent)."""
        async with self._lock, asyncio.timeout(60):
            consumer = await self._ensure()
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            consumer.seek(tp, start)
            out: list[Record] = []
            while True:
                if await consumer.position(tp) >= end:
                    return out
                batch = await consumer.getmany(tp, timeout_ms=1000, max_records=500)
                for r in batch.get(tp, []):
                    if r.offset >= end:
                        return out
                    key = r.key.decode() if r.key is not None else ""  # a probe has none
                    out.append(Record(key, r.value, r.offset))

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
