"""Table writes from a batch (`stream.take_events`) body.

Faust sends a table write to the changelog partition of the *current event* (and a
RocksDB store files it under that partition). The current event is a context
variable that the stream sets while it iterates; under `take_events` the events are
iterated by a background drainer task, so the agent's own task has none and
`table[key] = value` raises "Cannot modify table key from outside of stream
iteration". `on_behalf_of(event)` sets it, for the agent's task only, to the event
whose partition the write belongs to, exactly what Faust does for a per-event agent.

`put(table, key, value, origin)` is `with on_behalf_of(origin): table[key] = value`
for a table with raw keys and values and no window (the positions and fill-id tables),
without Faust's layers per write: `Table.__setitem__ -> on_key_set -> send_changelog ->
Topic.send_soon -> as_future_message` looks up the current event, the serializers
(twice each) and the sensors on every write, about 15 µs of the ~45 µs a wide book's
fill spent writing its record. It builds the same `FutureMessage` (changelog topic,
partition of `origin`, the table's `_on_changelog_sent` callback) onto the producer
buffer and stores the value the same way.

Upstream: faust-streaming sets the current event (which `table[key] = value` needs) in
the task that iterates the stream; under `take_events` that is the drainer task, not the
agent's.
Delete when: faust sets the current event for the body of a `take_events` batch.
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


def check_plain(table: Any) -> None:
    """Raise unless `put` writes `table` exactly as `table[key] = value` would."""
    if table.key_serializer != "raw" or table.value_serializer != "raw":
        raise ValueError(f"{table.name}: put needs raw keys and values")
    if table.window is not None or table.use_partitioner:
        raise ValueError(f"{table.name}: put needs a plain table partitioned by its source")


def put(table: Any, key: str, value: bytes | None, origin: Any) -> None:
    """`table[key] = value` on behalf of `origin` (a table `check_plain` accepts)."""
    topic = table.changelog_topic
    app = table.app
    app.producer.send_soon(
        FutureMessage(
            PendingMessage(
                topic,
                key.encode(),
                value,
                key_serializer="raw",
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
