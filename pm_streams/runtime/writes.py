"""Table writes from a batch (`stream.take_events`) body.

Faust sends a table write to the changelog partition of the *current event* (and a
RocksDB store files it under that partition). The current event is a context
variable that the stream sets while it iterates; under `take_events` the events are
iterated by a background drainer task, so the agent's own task has none and
`table[key] = value` raises "Cannot modify table key from outside of stream
iteration". `on_behalf_of(event)` sets it, for the agent's task only, to the event
whose partition the write belongs to, exactly what Faust does for a per-event agent.

`TableWriter(table).put(key, value, origin)` is `with on_behalf_of(origin):
table[key] = value` for a table with raw values and no window (the positions, fill-id
and portfolio contribution tables), without Faust's layers per write:
`Table.__setitem__ -> on_key_set -> send_changelog -> Topic.send_soon ->
as_future_message` looks up the current event, the serializers (twice each) and the
sensors on every write: a third of writing a record in a profile of the wide pipeline
bench. It appends the record (changelog topic, partition of `origin`) to aiokafka's open
batch at once when nothing queued goes before it (`Buffer.append_now`: no message, no
future; the table's persisted offset is set once per stored batch, as its
`_on_changelog_sent` would per record), else queues the same `FutureMessage` as Faust
(the table's callback per record); it stores the value the same way.

Upstream: faust-streaming sets the current event (which `table[key] = value` needs) in
the task that iterates the stream; under `take_events` that is the drainer task, not the
agent's.
Delete when: faust sets the current event for the body of a `take_events` batch, and
`table[key] = value` costs about what `TableWriter.put` does.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from faust.streams import _current_event
from faust.types.tuples import FutureMessage, PendingMessage


@contextmanager
def on_behalf_of(event: Any) -> Iterator[None]:
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


class TableWriter:
    """`put` for one table: `table[key] = value` on behalf of an input event.

    For a table with raw values and no window (the positions, fill-id and portfolio
    contribution tables). Keys are serialized as the table's changelog serializes them
    (the bytes of a raw key; any other serializer once per key, then remembered)."""

    KEY_CACHE = 100_000

    def __init__(self, table: Any) -> None:
        if table.value_serializer != "raw":
            raise ValueError(f"{table.name}: a TableWriter needs raw values")
        if table.window is not None or table.use_partitioner:
            raise ValueError(f"{table.name}: a TableWriter needs a plain table")
        self.table = table
        self.raw_keys = table.key_serializer == "raw"
        self.topic: str = table.changelog_topic.get_topic_name()
        self._keys: dict[str, bytes] = {}
        self._persisted = self.persisted  # one bound method: `append_now` keys on it

    def key_bytes(self, key: str) -> bytes:
        if self.raw_keys:
            return key.encode()
        hit = self._keys.get(key)
        if hit is None:
            table = self.table
            hit, _ = table.changelog_topic.prepare_key(key, table.key_serializer, None, {})
            if len(self._keys) < self.KEY_CACHE:
                self._keys[key] = hit
        return hit

    def put(self, key: str, value: bytes, origin: Any) -> None:
        """`table[key] = value` on behalf of `origin`."""
        table = self.table
        app = table.app
        key_bytes = self.key_bytes(key)
        partition = origin.message.partition
        buffer = app.producer.buffer
        if not buffer.append_now(self.topic, key_bytes, value, partition, self._persisted):
            self._queue(key_bytes, value, partition)
        token = _current_event.set(weakref.ref(origin))  # a RocksDB store reads its partition
        try:
            table.data[key] = value
        finally:
            _current_event.reset(token)

    def persisted(self, tp: Any, offset: int) -> None:
        """A batch of the changelog is stored up to `offset`: what the table's own
        callback (`_on_changelog_sent`) records per record (a RocksDB store keeps it to
        skip that far on recovery; the memory store keeps nothing)."""
        self.table.data.set_persisted_offset(tp, offset)

    def _queue(self, key_bytes: bytes, value: bytes, partition: int) -> None:
        """The record as Faust's `send_changelog` queues it (a `FutureMessage` with the
        table's callback), for the producer buffer's own path."""
        table = self.table
        app = table.app
        app.producer.send_soon(
            FutureMessage(
                PendingMessage(
                    table.changelog_topic,
                    key_bytes,
                    value,
                    key_serializer=table.key_serializer,
                    value_serializer="raw",
                    partition=partition,
                    timestamp=None,
                    headers={},
                    callback=table._on_changelog_sent,
                    topic=None,
                    offset=None,
                    generation_id=app.consumer_generation_id,
                )
            )
        )
