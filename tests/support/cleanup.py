"""Drop what tests and benches create on the shared brokers: Kafka topics, RabbitMQ
queues and Postgres schemas.

Every test and bench run gets names of its own (an app id, a queue prefix, a schema).
Left behind, they pile up run after run. A dev box held 984 topics, 2,767 queues
(with ~8,000 unread messages each) and 1,059 schemas after a few sessions. On that
broker, event→portfolio visibility p99 at 500 events/s was 255-359 ms. After a prune
it was 108-147 ms, same code (bench/bench_api.py, README). So a run drops its own
names at teardown (`drop`), and `python -m tests.support.cleanup` prunes the leftovers
of runs that died before theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
from aiokafka.admin import AIOKafkaAdminClient

from pm_streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
TEST_TOPIC = re.compile(r"^(pmtest|pmcons|pmsink|pmbench|bench)-")
"""App-id prefixes of tests (`pmtest-`, `pmcons-`, `pmsink-`) and benches."""
TEST_SCHEMA = re.compile(r"^[tsb]_[0-9a-f]{10}$")
TEST_QUEUE = re.compile(r"^t[0-9a-f]{10}\.")


@contextlib.asynccontextmanager
async def _admin(settings: Settings) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=60_000
    )
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def _drop_topics_where(
    keep: Callable[[str], bool], settings: Settings, timeout: float = 60.0
) -> int:
    """Delete the topics `keep` selects; return how many, once the broker lists none.

    aiokafka's `delete_topics` reports a topic it could not delete in its response, not
    by raising, and a broker can still list a deleted topic for a moment: either leaves
    a deployment's topics behind, as a drop once did in a clean-clone CI run."""
    deadline = time.monotonic() + timeout
    dropped: set[str] = set()
    async with _admin(settings) as admin:
        names = [t for t in await admin.list_topics() if keep(t)]
        while names:
            for start in range(0, len(names), 100):
                await admin.delete_topics(names[start : start + 100], timeout_ms=60_000)
            dropped.update(names)
            names = [t for t in await admin.list_topics() if keep(t)]
            if names:  # delete again what is still listed
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"topics still listed {timeout:.0f} s after deletion: {names}"
                    )
                await asyncio.sleep(0.5)
    return len(dropped)


async def drop_topics(prefixes: Iterable[str], settings: Settings | None = None) -> int:
    """Delete the topics named `<prefix>-…` or `<prefix>.…` (an app id's topics)."""
    heads = tuple(h for p in prefixes for h in (p + "-", p + "."))
    return await _drop_topics_where(lambda t: t.startswith(heads), settings or Settings())


async def drop_queues(names: Iterable[str], settings: Settings | None = None) -> None:
    settings = settings or Settings()
    connection = await aio_pika.connect(settings.rabbitmq_url)
    try:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name)  # a missing queue is no error
    finally:
        await connection.close()


async def drop_schemas(schemas: Iterable[str], settings: Settings | None = None) -> None:
    settings = settings or Settings()
    connection = await asyncpg.connect(settings.postgres_dsn)
    try:
        for schema in schemas:
            await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()


async def drop(
    *, app_ids: Iterable[str] = (), queues: Iterable[str] = (), schemas: Iterable[str] = ()
) -> None:
    """Drop a run's topics, queues and schemas. Run it after its processes stopped: a
    producer still running would have the broker create its topics again."""
    app_ids, queues, schemas = list(app_ids), list(queues), list(schemas)
    if app_ids:
        await drop_topics(app_ids)
    if queues:
        await drop_queues(queues)
    if schemas:
        await drop_schemas(schemas)


def run_sync(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run `coro` to completion from sync code, even under a running event loop (a
    pytest-asyncio fixture's teardown): in a thread with its own loop."""
    out: list[Any] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            out.append(asyncio.run(coro))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name="cleanup")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return out[0]


def leftover_queues() -> list[str]:
    """Test queues on the private RabbitMQ node of scripts/services."""
    listed = subprocess.run(
        [str(ROOT / "scripts/services"), "queues"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return [q for q in listed.stdout.split() if TEST_QUEUE.match(q)]


async def prune() -> tuple[int, int, int]:
    """Drop every test topic, queue and schema: the leftovers of runs that died.
    Not while tests or benches run: theirs would go too."""
    settings = Settings()
    topics = await _drop_topics_where(lambda t: TEST_TOPIC.match(t) is not None, settings)
    queues = leftover_queues()
    await drop_queues(queues, settings)
    connection = await asyncpg.connect(settings.postgres_dsn)
    try:
        rows = await connection.fetch("SELECT nspname FROM pg_namespace")
    finally:
        await connection.close()
    schemas = [r["nspname"] for r in rows if TEST_SCHEMA.match(r["nspname"])]
    await drop_schemas(schemas, settings)
    return topics, len(queues), len(schemas)


if __name__ == "__main__":
    topics, queues, schemas = asyncio.run(prune())
    print(f"pruned {topics} topics, {queues} queues, {schemas} schemas")
