"""The republisher against real Kafka and RabbitMQ: per-asset order, deterministic
event ids, trace ids from the input, durable persistent messages."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.support.rabbit import fill_stream, read_queue, recompute
from tests.support.worker import Deployment, WorkerProcess, publish

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


async def test_outputs_in_order_with_deterministic_ids_and_input_trace(
    deployment: Deployment, workers: list[WorkerProcess]
) -> None:
    worker = WorkerProcess(deployment).start()
    workers.append(worker)
    await worker.wait_healthy()
    assets = ["OUTAUSDT", "OUTBUSDT", "OUTCUSDT"]
    fills = fill_stream(assets, 60, tag="o")
    await publish(deployment.order_queue, fills)
    expected = recompute(fills)
    versions = {a: b.legs[0].version for a, b in expected.items()}

    await worker.wait_versions(versions, timeout=90)
    # A change that closes a position publishes only position_closed, so an asset's
    # final version may be on either queue: read both until every final version is seen.
    closed_q = f"{deployment.output_prefix}.position_closed"
    updated_q = f"{deployment.output_prefix}.position_updated"
    closed: list = []  # type: ignore[type-arg]
    updated: list = []  # type: ignore[type-arg]
    deadline = time.monotonic() + 60
    while True:
        closed += await read_queue(closed_q)
        updated += await read_queue(updated_q)
        seen = {(m.body["asset"], m.body["version"]) for m in [*updated, *closed]}
        if all((a, v) in seen for a, v in versions.items()):
            break
        assert time.monotonic() < deadline, f"final versions not all published: {versions}"
        await asyncio.sleep(0.3)
    closed_versions = {(m.body["asset"], m.body["version"]) for m in closed}  # type: ignore[index]
    by_asset: dict[str, list[int]] = {}
    trace_of = {f["execution_id"]: f["trace_id"] for f in fills}
    for m in updated:
        body = m.body
        assert isinstance(body, dict) and m.persistent
        assert body["event_type"] == "position_updated"
        assert body["event_id"] == f"{body['id']}:{body['version']}:position_updated"
        assert body["trace_id"] in trace_of.values()
        assert m.headers["x-trace-id"] == body["trace_id"]
        by_asset.setdefault(body["asset"], []).append(body["version"])
    # Per asset: strictly increasing versions (no run redelivered here), none missing
    # except those of changes that closed the position (position_closed only).
    for asset, seen in by_asset.items():
        assert seen == sorted(seen) and len(set(seen)) == len(seen), asset
        everything = set(seen) | {v for a, v in closed_versions if a == asset}
        assert everything == set(range(1, versions[asset] + 1)), asset
    # The trace of each version is that of the fill that made it.
    by_version = {
        (f["asset"], i + 1): f["trace_id"]
        for a in assets
        for i, f in enumerate(x for x in fills if x["asset"] == a)
    }
    for m in updated:
        assert m.body["trace_id"] == by_version[(m.body["asset"], m.body["version"])]  # type: ignore[index]
