"""A deployment's teardown drops its topics, queues and schema, and nobody else's."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aio_pika
import asyncpg
from aiokafka.admin import AIOKafkaAdminClient

from pm_streams.settings import Settings
from pm_streams.topics import ensure_topics
from tests.support.cleanup import TEST_QUEUE, leftover_queues
from tests.support.worker import Deployment


async def _topics() -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=Settings().kafka_bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def _queues_exist(names: list[str]) -> dict[str, bool]:
    """Whether each queue exists (a passive declare of a missing one closes the channel)."""
    out = {}
    connection = await aio_pika.connect(Settings().rabbitmq_url)
    async with connection:
        for name in names:
            channel = await connection.channel()
            try:
                await channel.declare_queue(name, passive=True)
                out[name] = True
                await channel.close()
            except aio_pika.exceptions.ChannelClosed:
                out[name] = False
    return out


async def _schema_exists(schema: str) -> bool:
    connection = await asyncpg.connect(Settings().postgres_dsn)
    try:
        found = await connection.fetchval(
            "SELECT count(*) FROM pg_namespace WHERE nspname = $1", schema
        )
        return bool(found)
    finally:
        await connection.close()


async def _make(deployment: Deployment) -> None:
    """What a worker of `deployment` creates: its topics, queues and schema."""
    await ensure_topics(Settings(app_id=deployment.app_id, partitions=deployment.partitions))
    connection = await aio_pika.connect(Settings().rabbitmq_url)
    async with connection:
        channel = await connection.channel()
        for name in deployment.queues:
            await channel.declare_queue(name, durable=True)
    connection_pg = await asyncpg.connect(Settings().postgres_dsn)
    try:
        await connection_pg.execute(f'CREATE SCHEMA "{deployment.schema}"')
    finally:
        await connection_pg.close()


async def test_drop_removes_a_deployments_names_only(tmp_path: Path) -> None:
    mine, other = Deployment(tmp_path / "a"), Deployment(tmp_path / "b")
    await _make(mine)
    await _make(other)
    try:
        before = await _topics()
        assert {t for t in before if t.startswith(mine.app_id)}  # made
        await asyncio.to_thread(mine.drop)

        after = await _topics()
        assert not {t for t in after if t.startswith(mine.app_id + ".")}
        assert {t for t in before if t.startswith(other.app_id)} <= after
        assert not any((await _queues_exist(mine.queues)).values())
        assert all((await _queues_exist(other.queues)).values())
        assert not await _schema_exists(mine.schema)
        assert await _schema_exists(other.schema)
    finally:
        await asyncio.to_thread(other.drop)
    assert not {t for t in await _topics() if t.startswith(other.app_id + ".")}


async def test_services_lists_the_queues_prune_deletes(tmp_path: Path) -> None:
    """`python -m tests.support.cleanup` finds test queues through `scripts/services queues`."""
    deployment = Deployment(tmp_path)
    await _make(deployment)
    try:
        listed = await asyncio.to_thread(leftover_queues)
        assert set(deployment.queues) <= set(listed)
        assert all(TEST_QUEUE.match(q) for q in listed)
    finally:
        await asyncio.to_thread(deployment.drop)
    assert not set(deployment.queues) & set(await asyncio.to_thread(leftover_queues))
