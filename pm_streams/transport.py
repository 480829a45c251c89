"""Faust's Kafka transport with a cheaper delivery of fetched messages (and its web
server without the CORS hook, `Web`).

Faust's fetch loop (`Consumer._drain_messages`) hands each fetched record to the
conductor through `wait_first(callback(message), suspend_flow.wait())`: four tasks
are created and three cancelled per record, so a record costs several event-loop
iterations. When the loop is busy (agents, producer, web) the fetch loop then moves
only a few hundred records a second and the input falls behind by seconds while the
worker has CPU to spare (bench/bench_api.py, visibility at 500 events/s: totals p50
5 s with Faust's loop, 0.16 s with this one, same code otherwise).

The race with `suspend_flow` only matters when delivery can block: while flow
control is suspended (a rebalance), while the producer buffer is over its limit,
while the callback map is being rebuilt, or when a stream's queue is full. When none
of these holds, the conductor's callback cannot suspend, so it is awaited directly;
otherwise Faust's own `wait_first` runs, unchanged.
"""

from __future__ import annotations

import asyncio
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.web.drivers import aiohttp as faust_aiohttp
from mode import Seconds, want_seconds
from mode.services import WaitResults


class Consumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer; record delivery skips `wait_first` when it cannot block,
    and a zero `sleep` only yields to the loop."""

    async def sleep(self, n: Seconds) -> None:
        """Faust's fetch loop calls `sleep(0)` after each `getmany` to yield to the event
        loop; mode's `Service.sleep` makes that an `asyncio.wait_for` on the stopped event,
        a task created and cancelled each time (once per fetch, ~170 a second at 100
        events/s). Returning at once is what that call did in any case."""
        if want_seconds(n) <= 0:
            await asyncio.sleep(0)
            return
        await super().sleep(n)

    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:
        if (
            len(coros) == 2
            and timeout is None
            and self._is_delivery(coros[0])
            and self._delivery_cannot_block()
        ):
            delivery, suspend_wait = coros
            suspend_wait.close()  # never awaited: `suspend_flow.wait()`
            result = await delivery
            return WaitResults([delivery], [result], False)
        return await super().wait_first(*coros, timeout=timeout)

    def _is_delivery(self, coro: Any) -> bool:
        """Whether `coro` is the conductor callback on one fetched message."""
        code = getattr(self.callback, "__code__", None)
        return code is not None and getattr(coro, "cr_code", None) is code

    def _delivery_cannot_block(self) -> bool:
        """None of the awaits in the conductor's delivery path would suspend."""
        app = self.app
        if self.suspend_flow.is_set() or not app.flow_control.is_active():
            return False
        buffer = app.producer.buffer
        if buffer.size > buffer.max_messages:  # `wait_until_ebb` would flush
            return False
        conductor: Any = app.topics  # Faust's Conductor: its lock and channel set
        if conductor._tp_to_callback_lock.locked():
            return False
        for channel in conductor._topics:
            queue = getattr(channel, "_queue", None)
            if queue is not None and queue.full():
                return False
        return True


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer


class Web(faust_aiohttp.Web):
    """Faust's aiohttp server without `aiohttp_cors`: the API declares no CORS
    resources, yet the hook `aiohttp_cors.setup` installs ran on every response
    (2.4 % of the worker under GET load, bench_api --profile)."""

    @property
    def cors(self) -> Any:
        return _NO_CORS


_NO_CORS = object()
"""Stands for the CORS config Faust's `Web.on_start` asserts; nothing uses it."""
