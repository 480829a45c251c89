"""Create the Kafka topics the service produces to before anything produces.

Faust creates its own internal topics when the worker starts, but the bridge may
produce first; a topic auto-created by the broker would get the broker's default
partition count and break the asset → partition mapping.
"""

from __future__ import annotations

import asyncio

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from pm_streams.settings import Settings


def wanted(settings: Settings) -> dict[str, int]:
    names = settings.kafka
    return {
        names.input_topic: settings.partitions,
        names.input_topic + ".dlq": 1,
        names.outbox_topic: settings.partitions,
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
                NewTopic(name, num_partitions=n, replication_factor=1)
                for name, n in wanted(settings).items()
                if name not in existing
            ]
            if missing:
                try:
                    await admin.create_topics(missing)
                except TopicAlreadyExistsError:
                    pass
        finally:
            await admin.close()
