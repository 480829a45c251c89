"""Faust's producer buffer without per-message settings lookups and waits.

Every table write and `send_soon` goes through the producer buffer, and the conductor
asks it for its size before delivering each fetched record (`wait_until_ebb`), as
does `transport.Consumer`. Faust's `ProducerBuffer.size` reads two settings through
Faust's settings registry on every call, and `flush_atmost` (every commit flushes the
buffer first) waits for each message with its own `asyncio.wait_for`, a task per
message: together 4 to 8 % of the worker per fill in a profile of the pipeline bench.

`Buffer` keeps Faust's contract (messages are published in the order put, one at a
time by `_handle_pending`; `flush_atmost(n)` returns after at most about `n` messages
were sent, when the buffer is empty, or after 0.1 s without progress) with the size
read off the queue and one plain future per flush wait; Faust's `message_sent` event,
which only its own `flush_atmost` waited on, is no longer set. The threaded producer
(`producer_threaded`) is not supported.

Upstream: faust-streaming's `ProducerBuffer.size` reads `app.conf.producer_threaded`
per call and `flush_atmost` runs `asyncio.wait_for` per message.
Delete when: faust's buffer does neither.
"""

from __future__ import annotations

import asyncio
from typing import Any

from faust.transport.producer import ProducerBuffer
from mode import Service

NO_PROGRESS = 0.1
"""Seconds `flush_atmost` waits for the next send before it returns, as Faust's does."""


class Buffer(ProducerBuffer):
    def __post_init__(self) -> None:
        super().__post_init__()
        self.sent = 0
        self._progress: asyncio.Future[None] | None = None

    def put(self, fut: Any) -> None:
        self.pending.put_nowait(fut)

    @property
    def size(self) -> int:
        return len(self.pending._queue)  # type: ignore[attr-defined]

    async def flush_atmost(self, max_messages: int | None) -> int:
        first = self.sent
        while self.size and (max_messages is None or self.sent - first < max_messages):
            if self.state != "running":
                raise RuntimeError("Cannot flush: Producer not Running")
            progress = self._progress
            if progress is None or progress.done():
                progress = self._progress = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(NO_PROGRESS):
                    await asyncio.shield(progress)
            except TimeoutError:
                break
        return self.sent - first

    # mode starts a service's tasks by name; an override must be a task as well.
    @Service.task
    async def _handle_pending(self) -> None:
        get_pending = self.pending.get
        send_pending = self._send_pending
        while not self.should_stop:
            msg = await get_pending()
            await send_pending(msg)
            self.sent += 1
            progress = self._progress
            if progress is not None and not progress.done():
                progress.set_result(None)


def install(producer: Any) -> None:
    """Give a Faust producer (not yet started) this buffer instead of its own."""
    if producer.app.conf.producer_threaded:
        raise RuntimeError("the threaded producer keeps Faust's own buffer")
    buffer = Buffer(loop=producer.loop, beacon=producer.beacon)
    buffer.app = producer.app
    producer.buffer = buffer
