"""SPEC §4.4 rev 2: `position_updated` events and the Postgres `positions` rows carry
`position_size_norm` against the portfolio's total exposure as of the change, never a
placeholder 0."""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from pm_streams.domain.portfolio import contribution
from pm_streams.exposure import ExposureFollower
from pm_streams.names import PORTFOLIO_CONTRIB_TABLE
from pm_streams.settings import Settings
from tests.support.cleanup import drop
from tests.support.rabbit import collect, fill
from tests.support.worker import Deployment, WorkerProcess, publish
from tests.unit.helpers import Runner
from tests.unit.helpers import fill as fill_event

pytestmark = pytest.mark.integration


async def test_events_and_rows_carry_the_share_of_the_total_exposure(
    deployment: Deployment, workers: list[WorkerProcess]
) -> None:
    worker = WorkerProcess(deployment).start()
    workers.append(worker)
    await worker.wait_healthy()
    await publish(deployment.order_queue, [fill("n-1", "BUY", "1", "100", asset="NAUSDT")])
    await worker.wait_for(
        "/api/v1/portfolio/exposure",
        lambda st, b: st == 200 and Decimal(b["total_exposure_usdt"]) == 100,
    )
    await asyncio.sleep(2.0)  # the outputs follow the portfolio's changelogs
    await publish(deployment.order_queue, [fill("n-2", "BUY", "3", "100", asset="NBUSDT")])

    events = await collect(
        f"{deployment.output_prefix}.position_updated", lambda got: len(got) >= 2
    )
    norms = {m.body["asset"]: m.body["position_size_norm"] for m in events}  # type: ignore[index]
    assert norms == {"NAUSDT": "1", "NBUSDT": "0.75"}  # 100 of 100; 300 of 400

    conn = await asyncpg.connect(
        "postgresql://position_manager:position_manager@127.0.0.1/position_manager",
        server_settings={"search_path": deployment.schema},
    )
    try:
        for _ in range(100):
            rows = await conn.fetch("SELECT asset, position_size_norm FROM positions")
            if len(rows) == 2:
                break
            await asyncio.sleep(0.2)
        assert {r["asset"]: r["position_size_norm"] for r in rows} == {
            "NAUSDT": Decimal(1),
            "NBUSDT": Decimal("0.75"),
        }
    finally:
        await conn.close()


async def test_the_follower_finds_the_portfolio_changelogs_soon_after_they_appear() -> None:
    """A fresh deployment's outputs start before the portfolio agent created its
    changelogs: the follower keeps looking every `TOPICS_POLL`, not after a growing
    backoff, so the first changes' norms are against the real total."""
    settings = Settings(app_id=f"pmtest-follow-{uuid.uuid4().hex[:8]}")
    follower = ExposureFollower(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await follower.start()
    try:
        await asyncio.sleep(10.0)  # long enough for a backoff to have grown to 8 s
        names = settings.kafka
        topic = names.changelog(PORTFOLIO_CONTRIB_TABLE)
        await admin.start()
        await admin.create_topics([NewTopic(topic, 1, 1)])
        await producer.start()
        runner = Runner()
        runner(fill_event("4", "100"))  # BTCUSDT, exposure 400
        assert runner.book is not None
        await producer.send_and_wait(topic, contribution(runner.book).to_bytes(), b"BTCUSDT")
        created = time.monotonic()
        while follower.exposure.total != 400:
            assert time.monotonic() - created < 2.0, "the follower did not find the topics"
            await asyncio.sleep(0.05)
    finally:
        await follower.stop()
        await producer.stop()
        await admin.close()
        await drop(app_ids=[settings.app_id])
