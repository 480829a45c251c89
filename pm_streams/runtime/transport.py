"""Faust's Kafka transport with a cheaper delivery of fetched messages, a producer that
stops the worker on a failed send and commits that wait for the producer (and its web
server without the CORS hook, `Web`).

Faust's fetch loop (`Consumer._drain_messages`) hands each fetched record to the
conductor through `wait_first(callback(message), suspend_flow.wait())`: four tasks
are created and three cancelled per record, so a record costs several event-loop
iterations. When the loop is busy (agents, producer, web) the fetch loop then moves
only a few hundred records a second and the input falls behind by seconds while the
worker has CPU to spare (bench/bench_api.py, visibility at 500 events/s: totals p50
5 s with Faust's loop, 0.16 s with this one, same code otherwise).

Records that Faust's fetch loop takes from aiokafka while flow is stopped (a rebalance)
are dropped by its `getmany`, and only the input partitions are sought back (to their
committed offsets). A table's changelog partition being restored loses those records:
aiokafka's position is past them and the recovery waits for them forever (seen: the
fetch loop's pending `fetched_records` drained the changelogs, from the offset the
recovery had just sought to, right before the recovery resumed flow). Every partition
of such records is put back to its first one (`unread`); Faust's own seek of the input
partitions still follows.

The race with `suspend_flow` only matters when delivery can block: while flow
control is suspended (a rebalance), while the producer buffer is over its limit,
while the callback map is being rebuilt, or when a stream's queue is full. When none
of these holds, the conductor's callback cannot suspend, so it is awaited directly;
otherwise Faust's own `wait_first` runs, unchanged.

Upstream: faust-streaming's `Consumer.getmany` drops records fetched while flow is
stopped without seeking their changelog partitions back (faust-streaming #74, #21:
recovery hangs); `Consumer._drain_messages` awaits `wait_first` per record
(tasks made and cancelled per record); `Topic._on_published` only logs a failed send
while `Consumer._commit_tps` commits regardless; `Web.on_start` installs `aiohttp_cors`
on every response.
Delete when: faust seeks back every partition whose records it drops, delivers fetched
records without per-record tasks, stops on a failed
send and commits after the producer flushed, and makes CORS optional.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.web.drivers import aiohttp as faust_aiohttp
from mode import Seconds, want_seconds
from mode.services import WaitResults

from pm_streams.logs import get_logger
from pm_streams.runtime import buffer

log = get_logger("pm_streams.runtime.transport")


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

    async def _wait_next_records(self, timeout: float) -> Any:
        records, active = await super()._wait_next_records(timeout)
        if records and not self.flow_active:
            unread(self._thread._ensure_consumer(), records)
            return {}, active
        return records, active

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

    async def _commit_tps(self, tps: Any, start_new_transaction: bool) -> bool:
        """Commit input offsets only after every record sent so far is stored.

        Faust commits the offsets of acked events while their table changes may still
        be in the producer (a change can fail after it): flush first, then commit only
        if no send failed (`Producer.failure`); otherwise commit nothing, so the events
        are read again after the restart (at least once)."""
        producer: Any = self.app.producer
        try:
            await producer.flush()
        except Exception as exc:  # the producer is stopping: its records are not stored
            log.warning("commit_skipped", reason=repr(exc))
            return False
        await asyncio.sleep(0)  # the sends' done callbacks
        if getattr(producer, "failure", None) is not None:
            log.error("commit_refused", reason=repr(producer.failure))
            return False
        return bool(await super()._commit_tps(tps, start_new_transaction))

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


def unread(kafka: Any, records: Mapping[Any, Sequence[Any]]) -> None:
    """Put `kafka`'s position of each partition still assigned back to its first record
    in `records` (taken by `getmany`, not delivered): the next fetch returns them again."""
    assigned = kafka.assignment()
    put_back = {}
    for tp, batch in records.items():
        if batch and tp in assigned:
            put_back[f"{tp.topic}:{tp.partition}"] = first = batch[0].offset
            kafka.seek(tp, first)
    if put_back:
        log.info("records_unread", reason="fetched while flow was stopped", offsets=put_back)


class Producer(faust_aiokafka.Producer):
    """Faust's aiokafka producer that remembers a failed send and stops the worker.

    Faust only logs a record that failed after the producer's retries (`Topic.
    _on_published`) while the consumer goes on committing input offsets: the table
    change, its ledger rows and events would be lost, and the asset's state would go
    back on restart. Every send of the worker (changelogs, contributions, outbox,
    dead letters) is checked; the first failure is kept in `failure`, logged and the
    app crashes. `Consumer._commit_tps` commits nothing once a send failed.
    Delete when Faust stops the consumer on a failed send itself."""

    failure: BaseException | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        buffer.install(self)

    async def send(self, *args: Any, **kwargs: Any) -> Any:
        sent: Any = await super().send(*args, **kwargs)  # an asyncio.Future
        topic = args[0] if args else kwargs.get("topic", "?")
        sent.add_done_callback(partial(self.check_sent, topic))
        return sent

    def check_sent(self, topic: str, sent: asyncio.Future[Any]) -> None:
        if sent.cancelled():
            self.failed(topic, asyncio.CancelledError("send cancelled"))
        elif (exc := sent.exception()) is not None:
            self.failed(topic, exc)

    def failed(self, topic: str, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc
            log.critical(
                "kafka_send_failed",
                topic=topic,
                error=repr(exc),
                action="stopping the worker; input offsets after this are not committed",
            )
            self.app.loop.create_task(self.app.crash(exc))


# mode names a service's logger after the module of its class; keep Faust's names, so
# that the log filters on `faust.*` still apply to these two.
Consumer.logger = faust_aiokafka.Consumer.logger
Producer.logger = faust_aiokafka.Producer.logger


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer
    Producer = Producer


class Web(faust_aiohttp.Web):
    """Faust's aiohttp server without `aiohttp_cors`: the API declares no CORS
    resources, yet the hook `aiohttp_cors.setup` installs ran on every response
    (2.4 % of the worker under GET load, bench_api --profile)."""

    @property
    def cors(self) -> Any:
        return _NO_CORS


_NO_CORS = object()
"""Stands for the CORS config Faust's `Web.on_start` asserts; nothing uses it."""
