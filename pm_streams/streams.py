"""The Faust stream class of the app: `take_events` that sleeps while idle.

Faust's `Stream.take_events(max_, within)` waits for a full buffer with a timeout of
`within` in a loop, so an agent wakes every `within` seconds whether anything arrived
or not. With a 5 ms batch window that is 200 wakeups a second per agent, each one
creating tasks and futures in mode's `wait_first`: an idle worker spent 9.4 % of a
core (py-spy: a third of it in the two agents' polling), and under API load the same
wakeups sit in the loop between requests.

`BatchingStream.take_events` keeps Faust's contract (a batch is yielded when it holds
`max_` events or `within` seconds after the previous batch; its events are acked when
the body is done with it) but an empty buffer waits for its first event with no
timer. An event arriving after an idle spell longer than `within` is yielded at once.
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
        started = Event()  # the buffer holds at least one event
        full = Event()  # the buffer holds max_ events
        consumed = Event()  # a full buffer was emptied
        consuming: asyncio.Future[None] | None = None  # the body holds the batch
        acks_enabled: bool = self.enable_acks
        loop = asyncio.get_running_loop()

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
                if len(events) == 1:
                    started.set()
                if len(events) >= max_:
                    full.set()
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
                    await self.wait_for_stopped(started)  # idle: no timer
                remaining = deadline - loop.time()
                if remaining > 0 and len(events) < max_:
                    await self.wait_for_stopped(full, timeout=remaining)
                if not events:
                    continue
                consuming = loop.create_future()
                try:
                    yield list(events)
                finally:
                    for event in events:
                        await self.ack(event)
                    events.clear()
                    started.clear()
                    full.clear()
                    notify(consuming)
                    consumed.set()
                    deadline = loop.time() + within
        finally:
            self.enable_acks = acks_enabled
            self._processors.remove(add_to_buffer)
