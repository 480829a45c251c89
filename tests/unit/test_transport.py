"""`pm_streams.runtime.transport.Consumer`: record delivery awaited in place only when it cannot
block, Faust's `wait_first` race with `suspend_flow` otherwise (no broker needed: the
consumer is built but never started)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from faust.transport.drivers import aiokafka as faust_aiokafka

from pm_streams.app import faust_app
from pm_streams.runtime import transport
from pm_streams.runtime.transport import Consumer, Web
from pm_streams.settings import Settings
from tests.support.loop_calls import loop_calls


@dataclass
class Delivery:
    """Stands in for the conductor's callback: records the task it ran in."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    block: bool = False
    tasks: list[asyncio.Task[Any] | None] = field(default_factory=list)
    done: list[Any] = field(default_factory=list)

    async def __call__(self, message: Any) -> None:
        self.tasks.append(asyncio.current_task())
        if self.block:
            await self.release.wait()
        self.done.append(message)


@pytest.fixture
async def consumer() -> AsyncIterator[tuple[Consumer, Delivery]]:
    app = faust_app(Settings(app_id="pmtest-transport"))
    app.flow_control.resume()
    consumer = app.consumer
    delivery = Delivery()
    callback = delivery.__call__

    async def on_message(message: Any) -> None:
        await callback(message)

    consumer.callback = on_message
    yield consumer, delivery
    delivery.release.set()


async def deliver(consumer: Consumer, message: Any) -> Any:
    """What Faust's fetch loop does with each fetched record."""
    return await consumer.wait_first(consumer.callback(message), consumer.suspend_flow.wait())


def test_the_app_consumes_through_this_consumer() -> None:
    app = faust_app(Settings(app_id="pmtest-transport"))
    assert type(app.consumer) is Consumer


async def test_delivery_that_cannot_block_runs_in_the_fetch_loop_task(consumer: Any) -> None:
    c, delivery = consumer
    result = await deliver(c, "m1")
    assert delivery.done == ["m1"]
    assert delivery.tasks == [asyncio.current_task()]  # no task created for it
    assert not result.stopped


async def test_delivery_while_flow_is_suspended_races_suspend_flow(consumer: Any) -> None:
    c, delivery = consumer
    c.app.flow_control.suspend()
    delivery.block = True
    pending = asyncio.ensure_future(deliver(c, "m1"))
    await asyncio.sleep(0.05)
    assert delivery.tasks and delivery.tasks[0] is not pending  # Faust's own wait_first
    c.suspend_flow.set()  # a rebalance starts: the fetch loop must not stay stuck
    await asyncio.wait_for(pending, 1.0)
    assert delivery.done == []


async def test_a_full_producer_buffer_takes_faust_path(consumer: Any) -> None:
    c, delivery = consumer
    buffer = c.app.producer.buffer
    for i in range(buffer.max_messages + 1):
        buffer.pending.put_nowait(i)
    assert not c._delivery_cannot_block()
    await deliver(c, "m1")
    assert delivery.done == ["m1"]
    assert delivery.tasks[0] is not asyncio.current_task()


async def test_a_full_stream_queue_takes_faust_path(consumer: Any) -> None:
    c, _ = consumer
    app = c.app
    channel = app.channel(maxsize=1)
    clone = channel.clone(is_iterator=True)
    app.topics._topics.add(clone)
    assert c._delivery_cannot_block()
    clone.queue.put_nowait("x")
    assert not c._delivery_cannot_block()


async def test_other_waits_are_faust_own(consumer: Any) -> None:
    c, _ = consumer
    ev = asyncio.Event()

    async def other() -> str:
        await ev.wait()
        return "other"

    pending = asyncio.ensure_future(c.wait_first(other(), c.suspend_flow.wait()))
    await asyncio.sleep(0.02)
    assert not pending.done()
    ev.set()
    result = await asyncio.wait_for(pending, 1.0)
    assert result.results == ["other"]


async def test_a_zero_sleep_only_yields(consumer: Any) -> None:
    """Faust's fetch loop calls `sleep(0)` once per fetch: no task, no timer; a real
    sleep is still mode's (it returns early when the consumer stops)."""
    c, _ = consumer
    loop: Any = asyncio.get_running_loop()
    ran: list[str] = []
    loop.call_soon(ran.append, "other")
    with loop_calls(loop) as made:
        await c.sleep(0)
        assert made == [] and ran == ["other"]  # the loop ran what was ready meanwhile
        started = loop.time()
        await c.sleep(0.05)
        assert loop.time() - started >= 0.04
        assert "timer" in made


def test_the_web_server_installs_no_cors_response_hook() -> None:
    app = faust_app(Settings(app_id="pmtest-transport"))
    assert type(app.web) is Web
    assert app.web.cors  # what Faust's Web.on_start asserts
    assert len(app.web.web_app.on_response_prepare) == 0


def test_no_sensor_records_each_event() -> None:
    app = faust_app(Settings(app_id="pmtest-transport"))
    app.on_init_dependencies()  # where Faust installs its monitor as a sensor
    assert app.monitor not in set(app.sensors)
    assert list(app.sensors) == []


async def test_records_fetched_while_flow_is_stopped_are_put_back(
    consumer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Faust's `getmany` drops them (a rebalance); a changelog being restored would never
    see them again, so they are unread and nothing is handed to `getmany`."""
    c, _ = consumer
    records = {"tp": ["r1", "r2"]}
    active = {"tp"}

    async def fetched(self: Any, timeout: float) -> Any:
        return records, active

    unread: list[Any] = []
    monkeypatch.setattr(faust_aiokafka.Consumer, "_wait_next_records", fetched)
    monkeypatch.setattr(transport, "unread", lambda kafka, got: unread.append((kafka, got)))
    monkeypatch.setattr(c._thread, "_ensure_consumer", lambda: "kafka")

    assert await c._wait_next_records(1.0) == (records, active)  # flow active: delivered
    assert unread == []
    c.stop_flow()
    assert await c._wait_next_records(1.0) == ({}, active)
    assert unread == [("kafka", records)]
