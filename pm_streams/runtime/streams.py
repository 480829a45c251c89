"""The Faust stream class of the app: `take_events` that sleeps while idle.

Faust's `Stream.take_events(max_, within)` waits for a full buffer with a timeout of
`within` in a loop, so an agent wakes every `within` seconds whether anything arrived
or not. With a 5 ms batch window that is 200 wakeups a second per agent, each one
creating tasks and futures in mode's `wait_first`: an idle worker spends a tenth of a
core polling, and under API load the same wakeups sit in the loop between requests.

`BatchingStream.take_events` keeps Faust's contract (a batch is yielded when it holds
`max_` events or `within` seconds after the previous batch; its events are acked when
the body is done with it) but an empty buffer waits for its first event with no
timer. An event arriving after an idle spell longer than `within` is yielded at once.

Its waits are one plain future each, resolved by the buffer (first event, full), by a
timer (the window) or by the stream stopping. mode's `wait_for_stopped` creates three
tasks and runs `asyncio.wait` per call; with two waits per batch and two agents that
was ~1,000 tasks a second at 100 events/s, half of every task the worker created
(counted per call site, bench_api.py visibility).

Upstream: faust-streaming's `Stream.take_events` waits for a batch with a 5 ms polling
timer even while idle.
Delete when: faust's `take_events` waits on the buffer's event instead of a timer.
"""

from __future__ import annotations

import asyncio
from asyncio import CancelledError
from collections.abc import AsyncGenerator, Sequence
from typing import Any, cast

import faust
from faust.types import ChannelT, EventT
from mode import Seconds, want_seconds
from mode.utils.aiter import aiter
from mode.utils.futures import notify
from mode.utils.locks import Event


class BatchingStream(faust.Stream[Any]):
    def take_events(
        self, max_: int, within: Seconds
    ) -> AsyncGenerator[Sequence[EventT[Any]], None]:
        agen = self._batches(max_, want_seconds(within))
        # As Faust's own buffering generators: the stream closes leftovers on stop.
        self._active_agens.add(agen)
        return agen

    async def _batches(
        self, max_: int, within: float
    ) -> AsyncGenerator[Sequence[EventT[Any]], None]:
        events: list[EventT[Any]] = []
        consumed = Event()  # a full buffer was emptied
        consuming: asyncio.Future[None] | None = None  # the body holds the batch
        acks_enabled: bool = self.enable_acks
        alarm = _Alarm(self, loop := asyncio.get_running_loop())

        async def add_to_buffer(value: Any) -> Any:
            """The processor the passively drained stream runs on each value."""
            nonlocal consuming
            try:
                if consuming is not None:
                    try:
                        await consuming
                    finally:
                        consuming = None
                event = self.current_event
                if event is None:
                    raise RuntimeError("take_events found no current event")
                events.append(event)
                if len(events) == 1 or len(events) >= max_:
                    alarm.wake()  # the first event ends an idle wait, a full buffer the window
                if len(events) >= max_:
                    consumed.clear()
                    await self.wait(consumed)
            except CancelledError:
                raise
            except Exception as exc:
                self.log.exception("Error adding to take buffer: %r", exc)
                await self.crash(exc)
            return value

        self.enable_acks = False  # acked here, after the body is done with them
        self.add_processor(add_to_buffer)
        self._enable_passive(cast(ChannelT[Any], aiter(self.channel)))
        deadline = loop.time() + within
        try:
            while not self.should_stop:
                if not events:
                    await alarm.sleep(None)  # idle: no timer
                if loop.time() < deadline and len(events) < max_ and not self.should_stop:
                    await alarm.sleep(deadline)
                if not events:
                    continue
                consuming = loop.create_future()
                try:
                    yield list(events)
                finally:
                    for event in events:
                        await self.ack(event)
                    events.clear()
                    notify(consuming)
                    consumed.set()
                    deadline = loop.time() + within
        finally:
            alarm.close()
            self.enable_acks = acks_enabled
            self._processors.remove(add_to_buffer)


class _Alarm:
    """What the batch loop sleeps on: woken by the first event, a full buffer or the
    stream stopping, or at a loop time; a plain future, no polling timer."""

    def __init__(self, stream: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._stream = stream
        self._loop = loop
        self._waiter: asyncio.Future[None] | None = None
        self._stopping: asyncio.Future[None] | None = None

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def sleep(self, until: float | None) -> None:
        """Until `wake` or the loop time `until` (None: no timer)."""
        if self._stopping is None or self._stopping.done():  # once, unless a stop came and went
            self._stopping = asyncio.ensure_future(self._stream.wait_until_stopped())
            self._stopping.add_done_callback(lambda _: self.wake())
        self._waiter = self._loop.create_future()
        timer = None if until is None else self._loop.call_at(until, self.wake)
        try:
            await self._waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def close(self) -> None:
        if self._stopping is not None:
            self._stopping.cancel()
