"""`pm_streams.runtime.buffer.Buffer`: Faust's producer-buffer contract (order, flush,
flush at most n, give up after 0.1 s without progress) with no broker: the sends are
recorded by a stand-in `_send_pending`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from pm_streams.app import faust_app
from pm_streams.runtime.buffer import Buffer
from pm_streams.settings import Settings


class Recording(Buffer):
    """Sends are appended to `sent_items`; each waits for `gate` when it is cleared."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.sent_items: list[Any] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.delay = 0.0

    def _append(self, fut: Any) -> bool:
        return False  # every message takes the recorded send

    async def _send_pending(self, fut: Any) -> None:
        await self.gate.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        self.sent_items.append(fut)


@pytest.fixture
async def buffer() -> AsyncIterator[Recording]:
    b = Recording()
    await b.start()
    yield b
    b.gate.set()
    b.delay = 0.0
    await asyncio.wait_for(b.flush(), 5)  # Faust's stop refuses to flush a non-empty buffer
    await b.stop()


async def test_messages_go_out_in_order_and_flush_waits_for_all(buffer: Recording) -> None:
    buffer.gate.clear()
    for i in range(50):
        buffer.put(i)  # type: ignore[arg-type]
    assert buffer.size == 50
    buffer.gate.set()
    await asyncio.wait_for(buffer.flush(), 5)
    assert buffer.sent_items == list(range(50))
    assert buffer.size == 0 and buffer.sent == 50


async def test_flush_atmost_stops_after_about_n_messages(buffer: Recording) -> None:
    buffer.delay = 0.005
    for i in range(20):
        buffer.put(i)  # type: ignore[arg-type]
    flushed = await asyncio.wait_for(buffer.flush_atmost(5), 5)
    assert 5 <= flushed <= 6
    assert buffer.size >= 20 - flushed - 1  # the rest still waits
    assert buffer.sent_items == list(range(len(buffer.sent_items)))


async def test_flush_gives_up_after_a_tenth_of_a_second_without_progress(
    buffer: Recording,
) -> None:
    buffer.gate.clear()  # the send never completes
    buffer.put("stuck")  # type: ignore[arg-type]
    started = time.monotonic()
    assert await buffer.flush_atmost(None) == 0
    assert 0.09 <= time.monotonic() - started < 1.0
    assert buffer.size in (0, 1)  # taken by the sender or still queued, never lost
    buffer.gate.set()
    await asyncio.wait_for(buffer.flush(), 5)
    assert buffer.sent_items == ["stuck"]


async def test_waiting_on_size_over_the_limit_flushes_down_to_the_limit(
    buffer: Recording,
) -> None:
    buffer.max_messages = 100
    buffer.delay = 0.001
    for i in range(130):
        buffer.put(i)  # type: ignore[arg-type]
    await asyncio.wait_for(buffer.wait_until_ebb(), 5)
    assert 99 <= buffer.size <= 100  # down to the limit, not a further 100
    sent = len(buffer.sent_items)
    await asyncio.wait_for(buffer.wait_until_ebb(), 5)  # at the limit: no wait
    assert len(buffer.sent_items) - sent <= 1


async def test_nothing_is_appended_at_once_while_a_message_is_queued_or_being_sent(
    buffer: Recording,
) -> None:
    buffer.direct = True
    buffer.gate.clear()
    buffer.put("first")  # type: ignore[arg-type]
    assert not buffer.append_now("t", b"k", b"v", 0, lambda tp, offset: None)  # queued
    await asyncio.sleep(0.01)  # the sender took it and waits in its send
    assert buffer.size == 0
    assert not buffer.append_now("t", b"k", b"v", 0, lambda tp, offset: None)  # being sent
    buffer.gate.set()
    await asyncio.wait_for(buffer.flush(), 5)
    assert buffer.sent_items == ["first"] and not buffer._sending


def test_the_limit_holds_several_batches_of_table_writes() -> None:
    settings = Settings(app_id="pmtest-buffer")
    # A batch writes a record per asset changed, its fill ids and contributions: the
    # conductor must not stall on one batch's writes.
    assert Buffer.max_messages >= 4 * settings.batch_max


def test_the_app_producer_uses_this_buffer_and_its_sender_task() -> None:
    app = faust_app(Settings(app_id="pmtest-buffer"))
    buffer = app.producer.buffer
    assert type(buffer) is Buffer
    assert buffer.app is app
    assert [task.fun for task in buffer._get_tasks()] == [Buffer._handle_pending.fun]
