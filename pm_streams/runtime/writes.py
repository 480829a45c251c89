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
bench. It builds the same `FutureMessage` (changelog topic,
partition of `origin`, the table's `_on_changelog_sent` callback) onto the producer
buffer and stores the value the same way.

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
        self._keys: dict[str, bytes] = {}

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
        app.producer.send_soon(
            FutureMessage(
                PendingMessage(
                    table.changelog_topic,
                    self.key_bytes(key),
                    value,
                    key_serializer=table.key_serializer,
                    value_serializer="raw",
                    partition=origin.message.partition,
                    timestamp=None,
                    headers={},
                    callback=table._on_changelog_sent,
                    topic=None,
                    offset=None,
                    generation_id=app.consumer_generation_id,
                )
            )
        )
        token = _current_event.set(weakref.ref(origin))  # a RocksDB store reads its partition
        try:
            table.data[key] = value
        finally:
            _current_event.reset(token)
