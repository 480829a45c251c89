"""Table writes from a batch (`stream.take_events`) body.

Faust sends a table write to the changelog partition of the *current event* (and a
RocksDB store files it under that partition). The current event is a context
variable that the stream sets while it iterates; under `take_events` the events are
iterated by a background drainer task, so the agent's own task has none and
`table[key] = value` raises "Cannot modify table key from outside of stream
iteration". `on_behalf_of(event)` sets it, for the agent's task only, to the event
whose partition the write belongs to, exactly what Faust does for a per-event agent.

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


@contextmanager
def on_behalf_of(event: Any) -> Iterator[None]:
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)
