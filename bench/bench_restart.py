"""Fills sent right after a worker restart: how long until each is on the API.

    .venv/bin/python bench/bench_restart.py [--rounds 3] [--assets 4] [--wait 20]

Per round: a fresh deployment (its own app id, queues, schema), one worker, one fill
applied, SIGTERM, the worker started again and ready (`/readyz`), then one fill on each of
`--assets` fresh assets (most on input partitions without a committed offset). Prints
the seconds from the publish to each position on the API, or `never` after `--wait`.
Around an assignment faust-streaming can skip such records; the agent's partition
sentry probes the partition and its gap check reads them back (`gaps.Sentry`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.rabbit import fill
from tests.support.worker import Deployment, WorkerProcess, publish


async def one_round(n: int, assets: int, wait: float) -> list[float | None]:
    with tempfile.TemporaryDirectory() as tmp:
        deployment = Deployment(Path(tmp))
        worker = WorkerProcess(deployment).start()
        try:
            await worker.wait_healthy()
            await publish(deployment.order_queue, [fill("r-0", "BUY", "1", "10")])
            await worker.wait_versions({"BTCUSDT": 1}, timeout=60)
            worker.stop()
            worker = WorkerProcess(deployment, port=worker.port).start()
            await worker.wait_ready()
            names = [f"FRESH{chr(65 + i)}USDT" for i in range(assets)]
            sent = time.monotonic()
            await publish(
                deployment.order_queue,
                [fill(f"r-{n}-{a}", "BUY", "2", "10", asset=a) for a in names],
            )
            seen: dict[str, float] = {}
            while len(seen) < len(names) and time.monotonic() - sent < wait:
                for a in names:
                    if a not in seen and (await worker.get(f"/api/v1/positions/{a}"))[0] == 200:
                        seen[a] = time.monotonic() - sent
                await asyncio.sleep(0.1)
            return [seen.get(a) for a in names]
        finally:
            worker.ensure_stopped()
            deployment.drop(strict=False)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--assets", type=int, default=4)
    parser.add_argument("--wait", type=float, default=20.0)
    args = parser.parse_args()
    late = 0
    for n in range(args.rounds):
        times = await one_round(n, args.assets, args.wait)
        late += sum(1 for t in times if t is None or t > 2.0)
        shown = ", ".join("never" if t is None else f"{t:.2f} s" for t in times)
        print(f"round {n + 1}: publish -> on the API: {shown}")
    total = args.rounds * args.assets
    print(f"fills later than 2 s (or never within {args.wait:g} s): {late} of {total}")


if __name__ == "__main__":
    asyncio.run(main())
