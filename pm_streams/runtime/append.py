"""A record appended to aiokafka's open batch of its partition, without `send`.

`AIOKafkaProducer.send` is a coroutine per record that waits for the topic's
metadata, serializes, partitions, appends to the partition's open batch and returns a
future of its own, resolved with a `RecordMetadata` by a loop over the batch's
records when the broker answers. Code that sends records by the thousand and only
needs to know when each batch is stored (the producer buffer's table records, the
inbound bridge's events) appends here and waits on the batch's future: one future
and one done callback per batch instead of per record.

`append` does what `send` does when nothing has to wait and hands back None in every
other case, where the caller uses `send` (aiokafka then waits or raises itself): a
topic whose partitions are not known yet, a partition not in them, a full batch, a
record over `LARGE`, a closed or failed producer, a transactional producer. Records of
one partition keep their order whichever of the two paths each takes, as long as the
caller awaits each `send` before its next record.

Upstream: aiokafka has no synchronous append (`send` is a coroutine with a future per
record; `send_batch` needs the caller to build and size whole batches).
Delete when: aiokafka appends without a per-record future and coroutine.
"""

from __future__ import annotations

from typing import Any

from aiokafka import TopicPartition

LARGE = 64 * 1024
"""Bytes of key and value from which a record takes `send` (its size checks)."""

PRODUCER_MAX_BATCH = 256 * 1024
"""Bytes of one producer batch (the worker's and the bridge's producers): aiokafka keeps
one open batch per partition, and a record that does not fit waits until that batch is
sent, so a batch of agent writes must fit (far below the broker's 1 MB limit)."""


def append(
    producer: Any,
    topic: str,
    key: bytes | None,
    value: bytes | None,
    *,
    partition: int | None = None,
    timestamp_ms: int | None = None,
    headers: list[tuple[str, bytes]] | None = None,
) -> tuple[Any, Any] | None:
    """(the aiokafka batch, the record's metadata in it), or None: use `send`."""
    accumulator = getattr(producer, "_message_accumulator", None)
    if accumulator is None or accumulator._closed or accumulator._exception is not None:
        return None
    txn = producer._txn_manager
    if txn is not None and txn.transactional_id is not None:
        return None
    if len(value or b"") + len(key or b"") > LARGE:
        return None
    known = producer._metadata._partitions.get(topic)  # partition -> its metadata
    if not known or (partition is not None and partition not in known):
        return None  # `send` waits for the topic's metadata (and keeps it fresh)
    if partition is None:
        partition = producer._partition(topic, None, key, value, key, value)
    tp = TopicPartition(topic, partition)
    queued = accumulator._batches.get(tp)
    batch = queued[-1] if queued else accumulator._append_batch(accumulator.create_builder(), tp)
    appended = batch._builder.append(
        timestamp=timestamp_ms, key=key, value=value, headers=headers or []
    )
    if appended is None:  # the batch is full: `send` waits for it to be drained
        return None
    return batch, appended


class KeyPartitions:
    """The partition of `topic` that `producer`'s partitioner picks for a key,
    remembered per key while the topic's partition count stays the same (aiokafka's
    default partitioner hashes the key with a pure-Python murmur2 on every send).
    None while the topic's partitions are not known."""

    def __init__(self, producer: Any, topic: str, capacity: int = 100_000) -> None:
        self.producer = producer
        self.topic = topic
        self.capacity = capacity
        self._count = 0
        self._by_key: dict[bytes, int] = {}

    def __call__(self, key: bytes) -> int | None:
        known = self.producer._metadata._partitions.get(self.topic)
        if not known:
            return None
        if len(known) != self._count:
            self._by_key.clear()
            self._count = len(known)
        hit = self._by_key.get(key)
        if hit is None:
            hit = int(self.producer._partition(self.topic, None, key, None, key, None))
            if len(self._by_key) < self.capacity:
                self._by_key[key] = hit
        return hit
