"""What code under test puts on the running event loop: tasks and timers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def loop_calls(loop: Any) -> Iterator[list[str]]:
    """Inside, every `loop.create_task` appends "task" to the yielded list and every
    `loop.call_at` (which `call_later` goes through) appends "timer"."""
    made: list[str] = []
    create_task, call_at = loop.create_task, loop.call_at

    def counting_create_task(*args: Any, **kwargs: Any) -> Any:
        made.append("task")
        return create_task(*args, **kwargs)

    def counting_call_at(*args: Any, **kwargs: Any) -> Any:
        made.append("timer")
        return call_at(*args, **kwargs)

    loop.create_task, loop.call_at = counting_create_task, counting_call_at
    try:
        yield made
    finally:
        del loop.create_task, loop.call_at
