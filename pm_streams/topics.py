"""Create the Kafka topics the service produces to before anything produces.

Faust creates its own internal topics when the worker starts, but the bridge may
produce first; a topic auto-created by the broker would get the broker's default
partition count and break the asset → partition mapping.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from pm_streams.backoff import Backoff
from pm_streams.logs import get_logger
from pm_streams.settings import Settings

log = get_logger("pm_streams.topics")

COMPACTED = {"cleanup.policy": "compact", "min.compaction.lag.ms": str(7 * 24 * 3600 * 1000)}
"""The positions changelog: also the change stream the sink and the republisher read,
so every version is kept for a week before compaction may drop it."""
KEYED = {"cleanup.policy": "compact"}
"""A changelog nothing else reads (fill ids): only the latest value per key counts."""


def wanted(settings: Settings) -> dict[str, tuple[int, dict[str, str]]]:
    """Topic → (partitions, config). The positions changelog is created here too,
    because the sink and republisher subscribe to it and a subscription to a missing
    topic lets the broker auto-create it with its default partition count."""
    names = settings.kafka
    return {
        names.input_topic: (settings.partitions, {}),
        names.input_topic + ".dlq": (1, {}),
        names.outbox_topic: (settings.partitions, {}),
        # One partition: one portfolio agent sees every asset's contribution.
        names.portfolio_topic: (1, {}),
        names.positions_changelog: (settings.partitions, COMPACTED),
        names.fill_ids_changelog: (settings.partitions, KEYED),
    }


async def ensure_topics(settings: Settings, timeout: float = 60.0) -> None:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=10_000
    )
    async with asyncio.timeout(timeout):
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            missing = [
                NewTopic(name, num_partitions=n, replication_factor=1, topic_configs=config)
                for name, (n, config) in wanted(settings).items()
                if name not in existing
            ]
            if missing:
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(missing)
        finally:
            await admin.close()


async def wait_for_kafka(settings: Settings, attempt_timeout: float = 10.0) -> None:
    """`ensure_topics`, retried until Kafka answers or `POSITION_MANAGER_KAFKA_WAIT`
    seconds have passed, with one progress line per attempt: a worker started while
    Kafka restarts waits for it instead of exiting."""
    started = time.monotonic()
    backoff = Backoff(first=1.0, cap=5.0)
    attempt = 0
    while True:
        attempt += 1
        try:
            await ensure_topics(settings, timeout=attempt_timeout)
        except Exception as exc:
            waited = time.monotonic() - started
            delay = backoff.failed()
            if waited + delay > settings.kafka_wait:
                raise
            log.warning(
                "kafka_unavailable",
                broker=settings.kafka_broker,
                attempt=attempt,
                waited_s=round(waited, 1),
                retry_in=delay,
                give_up_after_s=settings.kafka_wait,
                error=repr(exc),
            )
            await asyncio.sleep(delay)
            continue
        if attempt > 1:
            log.info("kafka_available", waited_s=round(time.monotonic() - started, 1))
        return


def raw_topic(app: Any, name: str, partitions: int | None = None, **options: Any) -> Any:
    """A Faust topic of our own bytes keyed by the raw asset (or other str) key.

    Raw keys matter: the bridge and Faust's router both partition by the key's bytes.
    """
    return app.topic(
        name,
        key_type=str,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=partitions,
        **options,
    )
