"""Time to ready after a SIGKILL with a long changelog behind the worker.

    .venv/bin/python bench/recovery.py [--records 1000000] [--assets 10000]
        [--store memory rocksdb] [--kills 2]

Per store, a fresh deployment: one worker applies a real fill and stops; its positions
changelog record is copied (re-keyed to `--assets` assets) until the changelog holds
`--records` records, produced straight to Kafka. Then the worker is started (the first
start after the records), SIGKILLed once ready, and started again: the seconds from each
start to `/readyz` answering 200, and the API answering an asset's position.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from pm_streams.names import KafkaNames
from pm_streams.runtime.gaps import Watermarks
from pm_streams.settings import Settings
from tests.support.kafka import first_record
from tests.support.rabbit import fill
from tests.support.worker import Deployment, WorkerProcess, publish

SEED = "SEEDUSDT"


async def seed_record(deployment: Deployment) -> bytes:
    """The changelog record a real worker wrote for one fill of `SEED`."""
    topic = KafkaNames(deployment.app_id).positions_changelog
    tp = TopicPartition(topic, Watermarks(deployment.partitions).partition_of(SEED))
    record = await first_record(tp, lambda r: r.key == SEED.encode() and bool(r.value))
    return bytes(record.value)


async def fill_changelog(deployment: Deployment, seed: bytes, records: int, assets: int) -> float:
    """Produce `records` copies of `seed`, re-keyed round-robin over `assets` assets, to
    the partition each asset's input events use; the seconds it took."""
    topic = KafkaNames(deployment.app_id).positions_changelog
    marks = Watermarks(deployment.partitions)
    names = [f"R{i}USDT" for i in range(assets)]
    values = {a: _rekeyed(seed, a) for a in names}
    parts = {a: marks.partition_of(a) for a in names}
    producer = AIOKafkaProducer(
        bootstrap_servers=Settings().kafka_bootstrap, linger_ms=20, max_batch_size=512 * 1024
    )
    await producer.start()
    started = time.monotonic()
    try:
        pending = []
        for i in range(records):
            a = names[i % assets]
            pending.append(
                await producer.send(topic, values[a], key=a.encode(), partition=parts[a])
            )
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.monotonic() - started


def _rekeyed(seed: bytes, asset: str) -> bytes:
    """The seed record as the record of `asset`, with position ids of its own."""
    record = orjson.loads(seed)
    record["asset"] = asset
    for leg in record["legs"]:
        leg["id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{asset}/{leg['mode']}"))
    return orjson.dumps(record)


async def mark_processed(deployment: Deployment) -> None:
    """Commit the end of the changelog for the sink and the republisher: the history was
    persisted and republished when it was written; a restart re-reads it only for the
    table."""
    names = KafkaNames(deployment.app_id)
    for group in (names.sink_group, names.republisher_group):
        consumer = AIOKafkaConsumer(
            bootstrap_servers=Settings().kafka_bootstrap, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            tps = [
                TopicPartition(names.positions_changelog, p) for p in range(deployment.partitions)
            ]
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            await consumer.commit({tp: end for tp, end in ends.items()})
        finally:
            await consumer.stop()


async def time_to_ready(worker: WorkerProcess, asset: str) -> tuple[float, float]:
    """Seconds from the start to `/readyz` 200, and to the API answering `asset`."""
    started = time.monotonic()
    worker.start()
    await worker.wait_ready(timeout=600)
    ready = time.monotonic() - started
    await worker.wait_for(f"/api/v1/positions/{asset}", lambda s, b: s == 200, timeout=600)
    return ready, time.monotonic() - started


async def one_store(store: str, records: int, assets: int, kills: int) -> None:
    deployment = Deployment(
        Path(tempfile.mkdtemp(prefix="bench-recovery-")),
        extra_env={"POSITION_MANAGER_STORE": f"{store}://"},
    )
    worker = WorkerProcess(deployment).start()
    try:
        await worker.wait_ready()
        await publish(deployment.order_queue, [fill("seed-1", "BUY", "1", "100", asset=SEED)])
        await worker.wait_for(f"/api/v1/positions/{SEED}", lambda s, b: s == 200)
        worker.stop()
        seed = await seed_record(deployment)
        took = await fill_changelog(deployment, seed, records, assets)
        await mark_processed(deployment)
        print(f"{store}: {records:,} changelog records, {assets:,} assets, produced in {took:.1f}s")
        last = f"R{(records - 1) % assets}USDT"
        worker = WorkerProcess(deployment, port=worker.port)
        ready, api = await time_to_ready(worker, last)
        print(f"{store}: first start after them: ready in {ready:.1f}s (API {api:.1f}s)")
        for kill in range(1, kills + 1):
            worker.kill()
            worker = WorkerProcess(deployment, port=worker.port)
            ready, api = await time_to_ready(worker, last)
            print(f"{store}: start after SIGKILL {kill}: ready in {ready:.1f}s (API {api:.1f}s)")
    finally:
        worker.ensure_stopped()
        deployment.drop(strict=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--assets", type=int, default=10_000)
    parser.add_argument("--store", nargs="*", default=["memory", "rocksdb"])
    parser.add_argument("--kills", type=int, default=2, help="SIGKILLs after the first start")
    args = parser.parse_args()
    for store in args.store:
        asyncio.run(one_store(store, args.records, args.assets, args.kills))


if __name__ == "__main__":
    main()
