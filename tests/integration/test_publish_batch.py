"""`publish_batch` against a real RabbitMQ: what arrives, in order, with its properties;
an unroutable message fails its batch and the channel's confirms stay in step."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest

from bridges.publish import Outgoing, check_channel, publish_batch
from tests.support.rabbit import AMQP_URL

pytestmark = pytest.mark.integration


@pytest.fixture
async def channel() -> AsyncIterator[tuple[aio_pika.abc.AbstractChannel, str]]:
    connection = await aio_pika.connect(AMQP_URL)
    queue = f"test-publish-{uuid.uuid4().hex[:8]}"
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(queue, durable=True)
        yield channel, queue
    finally:
        async with connection.channel() as cleanup:
            await cleanup.queue_delete(queue)
        await connection.close()


async def drain(channel: aio_pika.abc.AbstractChannel, queue: str, n: int) -> list:  # type: ignore[type-arg]
    """The queue's messages, waiting up to 10 s for at least `n`."""
    q = await channel.get_queue(queue)
    got = []
    deadline = asyncio.get_running_loop().time() + 10
    while len(got) < n and asyncio.get_running_loop().time() < deadline:
        message = await q.get(no_ack=True, fail=False)
        if message is None:
            await asyncio.sleep(0.05)
        else:
            got.append(message)
    return got


def outgoing(queue: str, i: int, size: int = 40) -> Outgoing:
    body = f'{{"i": {i}, "pad": "{"p" * size}"}}'.encode()
    return Outgoing(queue, body, f"event-{i}", f"trace-{i}-ü")


async def test_a_batch_arrives_in_order_with_its_properties(
    channel: tuple[aio_pika.abc.AbstractChannel, str],
) -> None:
    ch, queue = channel
    amqp = await ch.get_underlay_channel()
    check_channel(amqp)
    big = outgoing(queue, 999, size=400_000)  # several body frames
    batch = [outgoing(queue, i) for i in range(300)] + [big]
    await publish_batch(amqp, batch)
    got = await drain(ch, queue, len(batch))
    assert [m.body for m in got] == [m.body for m in batch]
    first = got[0]
    assert first.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert first.content_type == "application/json"
    assert [m.message_id for m in got] == [m.message_id for m in batch]
    assert [m.headers["x-trace-id"] for m in got] == [m.trace_id for m in batch]
    assert not amqp.confirmations  # every confirmation resolved and forgotten
    assert not amqp.message_id_delivery_tag


async def test_an_unroutable_message_fails_its_batch_and_the_next_batch_is_confirmed(
    channel: tuple[aio_pika.abc.AbstractChannel, str],
) -> None:
    ch, queue = channel
    amqp = await ch.get_underlay_channel()
    lost = Outgoing(f"no-such-queue-{uuid.uuid4().hex[:6]}", b"{}", "lost-1", "t")
    with pytest.raises(ConnectionError, match="rabbitmq did not confirm") as failed:
        await publish_batch(amqp, [outgoing(queue, 0), lost, outgoing(queue, 1)])
    assert "lost-1" in str(failed.value) and "NO_ROUTE" in str(failed.value)
    # The channel's delivery tags still match the broker's: later batches confirm.
    await publish_batch(amqp, [outgoing(queue, i) for i in range(2, 50)])
    got = await drain(ch, queue, 50)
    bodies = [m.body for m in got]
    assert bodies[-48:] == [outgoing(queue, i).body for i in range(2, 50)]


async def test_concurrent_batches_on_one_channel_are_all_confirmed(
    channel: tuple[aio_pika.abc.AbstractChannel, str],
) -> None:
    ch, queue = channel
    amqp = await ch.get_underlay_channel()
    batches = [[outgoing(queue, 100 * b + i) for i in range(100)] for b in range(5)]
    await asyncio.wait_for(asyncio.gather(*(publish_batch(amqp, batch) for batch in batches)), 30)
    got = await drain(ch, queue, 500)
    assert sorted(m.message_id for m in got) == sorted(
        m.message_id for batch in batches for m in batch
    )
    for batch in batches:  # each batch's messages in its own order
        ids = [m.message_id for m in got if m.message_id in {o.message_id for o in batch}]
        assert ids == [m.message_id for m in batch]


async def test_a_message_without_id_gets_one(
    channel: tuple[aio_pika.abc.AbstractChannel, str],
) -> None:
    ch, queue = channel
    amqp = await ch.get_underlay_channel()
    await publish_batch(amqp, [Outgoing(queue, b"{}", "", "t"), Outgoing(queue, b"[]", "", "t")])
    got = await drain(ch, queue, 2)
    ids = [m.message_id for m in got]
    assert len(ids) == 2 and all(ids) and ids[0] != ids[1]


async def test_a_nacked_message_fails_its_batch(
    channel: tuple[aio_pika.abc.AbstractChannel, str],
) -> None:
    """A queue that refuses publishes beyond its length nacks them: the batch fails
    naming the first refused message, and nothing waits on the channel afterwards."""
    ch, _ = channel
    amqp = await ch.get_underlay_channel()
    full = f"test-publish-full-{uuid.uuid4().hex[:8]}"
    await ch.declare_queue(
        full, durable=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"}
    )
    try:
        batch = [Outgoing(full, b"{}", f"full-{i}", "t") for i in range(3)]
        with pytest.raises(ConnectionError, match="rabbitmq did not confirm") as failed:
            await asyncio.wait_for(publish_batch(amqp, batch), 10)
        assert "full-1" in str(failed.value)  # the first one past the limit
        await asyncio.sleep(0.2)  # the rest of the batch's confirms
        assert not amqp.confirmations and not amqp.message_id_delivery_tag
    finally:
        await ch.queue_delete(full)


async def test_a_channel_closing_under_a_waiting_batch_fails_it(
    channel: tuple[aio_pika.abc.AbstractChannel, str],
) -> None:
    """Frames the broker never sees get no confirm: the batch waits until its channel
    closes, and then fails instead of waiting forever."""
    _, queue = channel
    connection = await aio_pika.connect(AMQP_URL)
    try:
        own = await connection.channel(publisher_confirms=True)
        amqp = await own.get_underlay_channel()
        write = amqp.write_queue.put

        async def swallowed(frame: object) -> None:
            return None

        amqp.write_queue.put = swallowed  # type: ignore[method-assign]
        waiting = asyncio.ensure_future(publish_batch(amqp, [outgoing(queue, i) for i in range(5)]))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        amqp.write_queue.put = write  # type: ignore[method-assign]
        await own.close()
        with pytest.raises(BaseException) as failed:
            await asyncio.wait_for(waiting, 5)
        assert not isinstance(failed.value, TimeoutError)
    finally:
        await connection.close()
