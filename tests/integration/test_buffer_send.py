"""The producer buffer's own send path (`runtime.buffer.Buffer._send_pending`) against a
real Kafka: buffered records arrive in order with their keys, partitions and
timestamps; each message's future holds its offset and its callback runs, as Faust's
`Topic.publish_message` does it; a record Kafka refuses fails its future and is kept
as the producer's failure (what stops the worker)."""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bridges.forward import kafka_producer
from pm_streams.app import faust_app
from pm_streams.runtime.append import LARGE, KeyPartitions, append
from pm_streams.runtime.writes import TableWriter, on_behalf_of
from pm_streams.settings import Settings
from tests.support.kafka import first_record

pytestmark = pytest.mark.integration


async def _create(name: str, partitions: int, config: dict[str, str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=Settings().kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1, topic_configs=config)])
    finally:
        await admin.close()


async def _records(tp: TopicPartition, n: int) -> list[Any]:
    out: list[Any] = []
    await first_record(tp, lambda r: out.append(r) or len(out) >= n)
    return out


async def test_buffered_sends_arrive_settle_and_a_refused_one_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = uuid.uuid4().hex[:8]
    name, wide = f"test-buffer-{run}", f"test-buffer-wide-{run}"
    await _create(name, 2, {"max.message.bytes": "2000"})
    app = faust_app(Settings(app_id=f"pmtest-buffer-{run}"))
    crashed: list[BaseException] = []

    async def crash(exc: BaseException) -> None:
        crashed.append(exc)

    monkeypatch.setattr(app, "crash", crash)
    topic = app.topic(name, key_type=bytes, value_type=bytes, value_serializer="raw")
    keyed = app.topic(wide, key_type=bytes, value_type=bytes, value_serializer="raw")
    producer: Any = app.producer
    took: list[bool] = []  # per record: appended to aiokafka's batch, or sent by `send`
    append = producer.buffer._append

    def spy(fut: Any) -> bool:
        took.append(append(fut))
        return took[-1]

    producer.buffer._append = spy  # before start: the sender task binds it then
    await producer.start()
    try:
        # Created after the producer read the cluster's metadata: its partitions are not
        # known yet when its first record comes, so that record takes `send`.
        await _create(wide, 3, {})
        called: list[Any] = []
        futs = [
            topic.send_soon(
                key=f"k{i}".encode(),
                value=f"v{i}".encode(),
                partition=i % 2,
                timestamp=1_700_000_000.5 + i,
                callback=called.append,
            )
            for i in range(10)
        ]
        # Partition by key (no partition given): the first of a topic whose partitions
        # are not known yet and a record over `append.LARGE` take aiokafka's `send`, the
        # others are appended to its batches; per partition they keep their order.
        values = [b"x" * 70_000 if i == 7 else f"w{i}".encode() for i in range(30)]
        keyed_futs = [
            keyed.send_soon(key=f"a{i % 5}".encode(), value=v) for i, v in enumerate(values)
        ]
        await asyncio.wait_for(producer.flush(), 10)
        await asyncio.sleep(0.1)  # done callbacks
        assert [f.result().offset for f in futs] == [i // 2 for i in range(10)]
        assert sorted(map(id, called)) == sorted(map(id, futs))  # each once, any order
        assert producer.failure is None
        record = await first_record(TopicPartition(name, 1), lambda r: r.offset == 2)
        assert (record.key, record.value, record.timestamp) == (b"k5", b"v5", 1_700_000_005_500)

        assert took.count(True) >= 30 and took.count(False) >= 3  # both paths were taken
        by_partition: dict[int, list[tuple[bytes, int]]] = {}
        for i, f in enumerate(keyed_futs):
            by_partition.setdefault(f.result().partition, []).append((values[i], f.result().offset))
        assert len(by_partition) > 1
        for partition, sent in by_partition.items():
            assert [offset for _, offset in sent] == list(range(len(sent)))
            stored = await _records(TopicPartition(wide, partition), len(sent))
            assert [(r.value, r.offset) for r in stored] == sent
            keys = {r.key for r in stored}
            assert all(
                keyed_futs[i].result().partition == partition
                for i in range(30)
                if f"a{i % 5}".encode() in keys
            )

        too_big = topic.send_soon(key=b"big", value=b"x" * 5000, partition=0)
        await asyncio.wait_for(producer.flush(), 10)
        await asyncio.sleep(0.1)
        assert too_big.done() and too_big.exception() is not None
        assert type(producer.failure) is type(too_big.exception())
        assert crashed == [producer.failure]
    finally:
        await producer.stop()


class _Event:
    """An input event as Faust's tables see it (weakly referenced, with a message)."""

    def __init__(self, message: Any) -> None:
        self.message = message


@pytest.mark.parametrize("key_serializer", ["raw", "json"])
async def test_put_writes_a_table_as_faust_setitem_does(key_serializer: str) -> None:
    """`TableWriter.put` and `table[key] = value` (under `on_behalf_of`) leave the same
    changelog record (key as the table serializes it, value, the origin's partition),
    the same stored value, and the same persisted offset (the table's sent callback, or
    once per batch for records appended at once); tables it cannot write are refused."""
    run = uuid.uuid4().hex[:8]
    app = faust_app(Settings(app_id=f"pmtest-put-{run}"))
    table = app.Table(f"t-{run}", key_type=str, value_type=bytes, partitions=3)
    table.key_serializer = key_serializer
    table.value_serializer = "raw"
    writer = TableWriter(table)
    source = f"src-{run}"
    changelog = table.changelog_topic.get_topic_name()
    await _create(changelog, 3, {})
    sent: list[Any] = []
    original = table._on_changelog_sent
    table._on_changelog_sent = lambda fut: (sent.append(fut), original(fut))
    origin = _Event(SimpleNamespace(partition=2, topic=source, tp=TopicPartition(source, 2)))
    producer: Any = app.producer
    await producer.start()
    try:
        with on_behalf_of(origin):
            table["BTCUSDT"] = b"by faust"
        writer.put("BTCUSDT", b"by put", origin)
        writer.put("ETHUSDT", b"by put", origin)
        with on_behalf_of(origin):
            table["ETHUSDT"] = b"by faust"
        await asyncio.wait_for(producer.flush(), 10)
        await asyncio.sleep(0.1)
        assert table.data["BTCUSDT"] == b"by put" and table.data["ETHUSDT"] == b"by faust"
        records = await _records(TopicPartition(changelog, 2), 4)
        keys = [r.key for r in records]
        assert keys[0] == keys[1] and keys[2] == keys[3] and keys[0] != keys[2]
        assert keys[0] == (b"BTCUSDT" if key_serializer == "raw" else b'"BTCUSDT"')
        assert [r.value for r in records] == [b"by faust", b"by put", b"by put", b"by faust"]
        assert len(sent) == 4 and all(f.result().partition == 2 for f in sent)

        # Nothing queued: `put` appends at once (no message, no callback per record) and
        # the table's persisted offset is set once for the batch; behind a queued
        # record `put` queues as well, so the writes keep their order.
        persisted: list[tuple[Any, int]] = []
        table.data.set_persisted_offset = lambda tp, offset: persisted.append((tp, offset))
        buffer = producer.buffer
        assert buffer.size == 0
        writer.put("SOLUSDT", b"direct 1", origin)
        writer.put("SOLUSDT", b"direct 2", origin)
        assert buffer.size == 0  # appended, not queued
        with on_behalf_of(origin):
            table["SOLUSDT"] = b"by faust"
        writer.put("SOLUSDT", b"queued", origin)
        assert buffer.size == 2
        await asyncio.wait_for(producer.flush(), 10)
        await asyncio.sleep(0.1)
        records = await _records(TopicPartition(changelog, 2), 8)
        assert [r.value for r in records[4:]] == [b"direct 1", b"direct 2", b"by faust", b"queued"]
        assert table.data["SOLUSDT"] == b"queued"
        assert len(sent) == 6  # the two queued records' callbacks only
        assert [(tp.topic, tp.partition, offset) for tp, offset in persisted] == [
            (changelog, 2, 5),  # the appended pair, once
            (changelog, 2, 6),  # the queued records, through the table's callback
            (changelog, 2, 7),
        ]
    finally:
        await producer.stop()
    keyed = app.Table(f"j-{run}", key_type=str, value_type=bytes, partitions=3)
    keyed.value_serializer = "json"
    with pytest.raises(ValueError, match="raw values"):
        TableWriter(keyed)
    windowed = app.Table(f"w-{run}", value_type=bytes, partitions=3).tumbling(60).table
    windowed.value_serializer = "raw"
    with pytest.raises(ValueError, match="plain table"):
        TableWriter(windowed)


async def test_append_joins_the_open_batch_and_leaves_the_rest_to_send() -> None:
    """`runtime.append` with the bridge's idempotent producer: nothing before the topic's
    partitions are known; then records join the open batch of their partition (one
    future for them all) behind a record `send` put there, and land in order."""
    run = uuid.uuid4().hex[:8]
    name = f"test-append-{run}"
    producer = kafka_producer(Settings())
    await producer.start()
    try:
        await _create(name, 2, {})  # after the producer read the cluster's metadata
        assert append(producer, name, b"k", b"first") is None  # metadata not known yet
        partition_of = KeyPartitions(producer, name)
        assert partition_of(b"BTCUSDT") is None
        first = await producer.send(name, b"v0", key=b"k", partition=1)
        keys = [f"A{i}USDT".encode() for i in range(40)]
        picked = [await producer.send(name, b"p", key=k) for k in keys]
        assert [partition_of(k) for k in keys] == [(await f).partition for f in picked]
        assert [partition_of(k) for k in keys] == [(await f).partition for f in picked]
        assert set(partition_of(k) for k in keys) == {0, 1}
        joined = [append(producer, name, b"k", f"v{i}".encode(), partition=1) for i in range(1, 6)]
        assert all(j is not None for j in joined)
        batches = {id(j[0]) for j in joined if j is not None}
        assert len(batches) == 1
        assert append(producer, name, b"k", b"x" * (LARGE + 1), partition=1) is None
        assert append(producer, name, b"k", b"v", partition=7) is None  # no such partition
        await asyncio.wait_for(joined[0][0].future, 10)  # type: ignore[index]
        assert (await first).offset == 0
        on_1 = 6 + [partition_of(k) for k in keys].count(1)
        records = [r for r in await _records(TopicPartition(name, 1), on_1) if r.value != b"p"]
        assert [r.value for r in records] == [f"v{i}".encode() for i in range(6)]
    finally:
        await producer.stop()


async def test_append_now_keeps_the_timestamp_and_leaves_an_unknown_topic_to_the_queue() -> None:
    """A record with no callback (the positions agent's contributions record): refused
    while its topic's partitions are unknown or a message is queued, else appended with
    its own timestamp to the partitioner's partition."""
    run = uuid.uuid4().hex[:8]
    name = f"test-append-now-{run}"
    app = faust_app(Settings(app_id=f"pmtest-append-now-{run}"))
    topic = app.topic(name, key_type=bytes, value_type=bytes, value_serializer="raw")
    producer: Any = app.producer
    buffer = producer.buffer
    await producer.start()
    try:
        await _create(name, 1, {})  # after the producer read the cluster's metadata
        assert not buffer.append_now(name, None, b"early", None, None, 1_700_000_000_000)
        await topic.send(value=b"first")  # `send` learns the topic's partitions
        queued = topic.send_soon(value=b"queued")
        assert not buffer.append_now(name, None, b"behind", None)  # a message waits
        await asyncio.wait_for(producer.flush(), 10)
        assert buffer.append_now(name, None, b"now", None, None, 1_700_000_000_123)
        await asyncio.wait_for(producer.flush(), 10)
        records = await _records(TopicPartition(name, 0), 3)
        assert [r.value for r in records] == [b"first", b"queued", b"now"]
        assert records[2].timestamp == 1_700_000_000_123
        assert queued.result().offset == 1
        assert producer.failure is None
    finally:
        await producer.stop()


async def test_a_wide_batch_of_table_writes_joins_one_open_batch() -> None:
    """200 changelog records of ~1 KB to one partition (a wide book's batch) are all
    appended to the producer's open batch: none waits for a produce round trip in
    `send`, as at Faust's 16 KB batches after about 15 records."""
    run = uuid.uuid4().hex[:8]
    app = faust_app(Settings(app_id=f"pmtest-wide-{run}"))
    table = app.Table(f"t-{run}", key_type=str, value_type=bytes, partitions=1)
    table.value_serializer = "raw"
    changelog = table.changelog_topic.get_topic_name()
    await _create(changelog, 1, {})
    assert app.conf.producer_max_batch_size >= 200 * 1100
    producer: Any = app.producer
    buffer = producer.buffer
    await producer.start()
    try:
        await producer.send_and_wait(changelog, b"k", b"first", 0, None, None)  # metadata known
        appended = [
            buffer.append_now(changelog, f"A{i}".encode(), b"x" * 1000, 0) for i in range(200)
        ]
        assert all(appended)
        await asyncio.wait_for(producer.flush(), 10)
        records = await _records(TopicPartition(changelog, 0), 201)
        assert [r.key for r in records[1:]] == [f"A{i}".encode() for i in range(200)]
        assert producer.failure is None
    finally:
        await producer.stop()
