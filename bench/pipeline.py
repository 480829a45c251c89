"""The whole pipeline as a user runs it, against the bare ingress hop, in one run.

    .venv/bin/python bench/pipeline.py [--fills 20000] [--mix hot wide] [--runs 3]
        [--profile SECONDS] [--processes N] [--latency RATE SECONDS]
        [--loop uvloop|asyncio ...]

Per run and mix, alternating:
  1. the bare hop, in a process of its own: aio-pika consume (prefetch 1,000) of N fills
     waiting in a queue, aiokafka produce (acks=all, idempotent) of each body as is,
     multiple acks after Kafka stored them, no parsing: its msg/s and its own CPU per
     message (`time.process_time`);
  2. the pipeline: a fresh deployment (own app id, queues, schema), the processes
     `scripts/run` starts (a `pm-streams worker`: bridge, agents, tables; and beside it
     `pm-streams outputs`: the Postgres sink and the republisher), ready; then N fills
     published to its order queue (publisher confirms), timed until every fill's
     `position_updated` event is on RabbitMQ and every fill's ledger row is in
     Postgres; then the API checked (every asset's version equals its fill count).
     CPU per fill of every process on the box (the worker, Kafka, RabbitMQ, Postgres,
     this script) from `/proc`.

Mixes: `hot` 16 assets (a desk's hot book), `wide` 1,000 assets. Fills go BUY, BUY,
SELL per asset, so no position closes (one event per fill). Prints one line per run and
the medians. `--processes N`: 2 (the default) as above; 1 one worker with the sink and
the republisher inside (`POSITION_MANAGER_OUTPUTS=worker`); N > 2, N - 1 workers and one
outputs process. "worker" is the sum of those processes;
`--profile S` records the first worker (and the outputs process) with py-spy for S
seconds of the first pipeline run of each mix (var/bench/pipeline-<mix>[-outputs].txt).
`--loop`: the event loop of every process, the bare hop's too (default: the settings'
default, uvloop); several are alternated within each run, for an A/B in one sitting.
`--backlog`: the fills wait in the order queue before the bridge may take them (the bench
holds the queue's single-active-consumer slot while it publishes), as the bare hop's do;
by default they are published while the pipeline runs.
`--latency RATE SECONDS` measures instead, per run and mix on a fresh deployment,
publish → `position_updated` on RabbitMQ of fills sent one at a time at RATE per second.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from functools import partial

import aio_pika
import asyncpg
import orjson

from bench.bench_agent import cpu_seconds, pct, profile, service_pids, top_frames
from bench.bench_bridge import URL, create_topics, fill_queue, raw_ceiling
from pm_streams.cli import new_event_loop
from pm_streams.settings import Settings
from tests.support.cleanup import drop
from tests.support.rabbit import message_count
from tests.support.worker import Deployment, WorkerProcess, queue_arguments

ROOT = Path(__file__).resolve().parents[1]
MIXES = {"hot": 16, "wide": 1000}


def fills(n: int, assets: int, tag: str) -> list[bytes]:
    out = []
    for i in range(n):
        asset, k = f"P{i % assets}USDT", i // assets
        body = {
            "event_type": "order_executed",
            "order_id": f"o-{tag}-{i}",
            "execution_id": f"{tag}-{i}",
            "asset": asset,
            "side": "SELL" if k % 3 == 2 else "BUY",
            "execution_price": f"{50000 + i % 97}.5",
            "execution_quantity": "0.01",
            "execution_fees": "0.02",
            "mode": "one-way",
            "executed_at": "2026-12-03T10:10:00Z",
            "trace_id": f"trace-{tag}-{i}",
        }
        out.append(orjson.dumps(body))
    return out


def bare_hop(n: int, assets: int, loop: str) -> dict[str, float]:
    """The bare hop in a child process on the `loop` the pipeline's processes run;
    its rate and its own CPU per message."""
    tag = uuid.uuid4().hex[:8]
    queue, topic = f"bench-hop-{tag}", f"bench-hop-{tag}.in"
    asyncio.run(create_topics(topic))
    asyncio.run(fill_queue(queue, fills(n, assets, tag)))
    try:
        done = subprocess.run(
            [sys.executable, __file__, "--serve-bare-hop", queue, topic, str(n), loop],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))
    finally:
        asyncio.run(drop(app_ids=[f"bench-hop-{tag}"], queues=[queue]))


def serve_bare_hop(queue: str, topic: str, n: int, loop: str) -> None:
    started = time.process_time()
    with asyncio.Runner(loop_factory=partial(new_event_loop, loop)) as runner:
        rate = runner.run(raw_ceiling(queue, topic, n, prefetch=1000))
    cpu = time.process_time() - started
    print(json.dumps({"rate": rate, "cpu_ms": 1000 * cpu / n}))


async def ledger_rows(schema: str) -> int:
    connection = await asyncpg.connect(Settings().postgres_dsn)
    try:
        return int(await connection.fetchval(f'SELECT count(*) FROM "{schema}".position_fills'))
    except asyncpg.UndefinedTableError:
        return 0
    finally:
        await connection.close()


class Cpu:
    """CPU seconds of every process on the box that takes part, between two points."""

    def __init__(self, worker_pids: list[int], outputs_pids: Sequence[int] = ()) -> None:
        self.groups = {"worker": worker_pids, **service_pids()}
        if outputs_pids:
            self.groups["of which outputs"] = list(outputs_pids)
        self.start = self.read()

    def read(self) -> dict[str, float]:
        out = {name: sum(_cpu(pid) for pid in pids) for name, pids in self.groups.items()}
        out["bench"] = time.process_time()
        return out

    def per_event_ms(self, n: int) -> dict[str, float]:
        end = self.read()
        return {name: 1000 * (end[name] - self.start[name]) / n for name in end}


def _cpu(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except OSError:  # a Postgres backend that ended meanwhile
        return 0.0


def start_processes(deployment: Deployment, processes: int, loop: str) -> list[WorkerProcess]:
    """1: one worker with the outputs inside; more: the outputs (sink, republisher) in a
    process of their own, as `scripts/run` starts them, and `processes - 1` workers;
    each on the event loop `loop`."""
    deployment.extra_env["POSITION_MANAGER_EVENT_LOOP"] = loop
    if processes == 1:
        return [WorkerProcess(deployment).start()]
    deployment.extra_env["POSITION_MANAGER_OUTPUTS"] = "separate"
    workers = [WorkerProcess(deployment).start() for _ in range(processes - 1)]
    return [*workers, WorkerProcess(deployment, command="outputs").start()]


class Holder:
    """Keeps the order queue's single active consumer slot, so that the worker's bridge
    (a standby consumer of an `x-single-active-consumer` queue) takes nothing until
    `release`: the fills wait in the queue as the bare hop's do."""

    def __init__(self, queue: str) -> None:
        self.queue = queue
        self.connection: aio_pika.abc.AbstractConnection | None = None

    async def hold(self) -> None:
        self.connection = await aio_pika.connect(URL)
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=1)
        queue = await channel.declare_queue(self.queue, durable=True, arguments=queue_arguments())
        await queue.consume(_keep, no_ack=False)

    async def release(self) -> None:
        """The one fill delivered to the holder goes back to the queue's head."""
        connection, self.connection = self.connection, None
        if connection is not None:
            await connection.close()


async def _keep(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    """Neither acked nor rejected: requeued when the holder's connection closes."""


async def pipeline(
    n: int, assets: int, profile_s: int, mix: str, processes: int, loop: str, backlog: bool
) -> dict[str, Any]:
    deployment = Deployment(Path(tempfile.mkdtemp(prefix="bench-pipeline-")))
    holder = Holder(deployment.order_queue)
    if backlog:
        await holder.hold()  # before the bridge declares and consumes the queue
    started_ones = start_processes(deployment, processes, loop)
    worker = started_ones[0]
    try:
        for one in started_ones:
            if one.command == "worker":
                await one.wait_ready()
        events_queue = f"{deployment.output_prefix}.position_updated"
        bodies = fills(n, assets, deployment.run_id)
        if backlog:
            await fill_queue(deployment.order_queue, bodies)
            waiting = await message_count(deployment.order_queue)
            assert waiting >= n - 1, f"the bridge took fills early: {waiting} of {n} wait"
        pids = [one.proc.pid for one in started_ones if one.proc is not None]
        outputs = [o.proc.pid for o in started_ones if o.command == "outputs" and o.proc]
        cpu = Cpu(pids, outputs)
        started = time.monotonic()
        spies = {}
        if profile_s:
            spies[f"pipeline-{mix}"] = profile(pids[0], profile_s, _raw(f"pipeline-{mix}"))
            if outputs:
                name = f"pipeline-{mix}-outputs"
                spies[name] = profile(outputs[0], profile_s, _raw(name))
        publishing = None
        if backlog:
            await holder.release()
        else:
            publishing = asyncio.create_task(fill_queue(deployment.order_queue, bodies))
        while True:
            await asyncio.sleep(0.25)
            for one in started_ones:
                one.assert_running()
            events = await message_count(events_queue)
            rows = await ledger_rows(deployment.schema)
            if events >= n and rows >= n:
                break
            if time.monotonic() - started > 900:
                raise AssertionError(f"not done in 900 s: {events} events, {rows} rows")
        elapsed = time.monotonic() - started
        per_fill = cpu.per_event_ms(n)
        if publishing is not None:
            await publishing
        for name, spy in spies.items():
            spy.wait()
            raw = _raw(name)
            table = "\n".join(f"{share:5.1f}%  {stage}" for stage, share in stages(raw))
            raw.with_suffix(".txt").write_text(table + "\n\n" + top_frames(raw, 40))
            print(f"profile by stage ({name}):\n{table}", flush=True)
        await check_api(worker, n, assets)
        return {"rate": n / elapsed, "cpu_ms": per_fill}
    finally:
        await holder.release()
        for one in started_ones:
            one.ensure_stopped()
        deployment.drop(strict=False)


def _raw(name: str) -> Path:
    return ROOT / "var" / "bench" / f"{name}.raw"


async def latency(
    rate: float, seconds: float, assets: int, processes: int, loop: str
) -> list[float]:
    """Publish → `position_updated` on RabbitMQ, in ms, of fills sent one by one at
    `rate` per second for `seconds` (each fill's event found by its trace id)."""
    deployment = Deployment(Path(tempfile.mkdtemp(prefix="bench-latency-")))
    started_ones = start_processes(deployment, processes, loop)
    connection = await aio_pika.connect(URL)
    try:
        for one in started_ones:
            if one.command == "worker":
                await one.wait_ready()
        sent: dict[str, float] = {}
        arrived: dict[str, float] = {}
        all_in = asyncio.Event()
        bodies = fills(int(rate * seconds), assets, deployment.run_id)
        channel = await connection.channel(publisher_confirms=False)
        events = await channel.declare_queue(
            f"{deployment.output_prefix}.position_updated", durable=True, passive=True
        )

        async def on_event(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            arrived.setdefault(orjson.loads(message.body)["trace_id"], time.monotonic())
            if len(arrived) >= len(bodies):
                all_in.set()

        await events.consume(on_event, no_ack=True)
        publisher = await connection.channel(publisher_confirms=True)
        start = time.monotonic()
        for i, body in enumerate(bodies):
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            sent[orjson.loads(body)["trace_id"]] = time.monotonic()
            await publisher.default_exchange.publish(
                aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=deployment.order_queue,
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_in.wait(), 60)
        assert sent.keys() <= arrived.keys(), f"{len(sent.keys() - arrived.keys())} events missing"
        return sorted(1000 * (arrived[k] - t) for k, t in sent.items())
    finally:
        await connection.close()
        for one in started_ones:
            one.ensure_stopped()
        deployment.drop(strict=False)


async def check_api(worker: WorkerProcess, n: int, assets: int) -> None:
    """Every asset's version equals its number of fills (a sample of 50 on a wide mix)."""
    for a in range(0, assets, max(1, assets // 50)):
        want = n // assets + (1 if a < n % assets else 0)
        status, body = await worker.get(f"/api/v1/positions/P{a}USDT")
        assert status == 200 and body["version"] == want, (a, status, body)


STAGES = [
    ("bridges/inbound.py", "inbound bridge (parse, validate, produce)"),
    ("bridges/outbound.py", "republisher (events, AMQP publish)"),
    ("tables/", "Postgres sink (rows, ledger)"),
    ("pm_streams/consumer.py", "sink/republisher Kafka consumers (fetch, decode)"),
    ("pm_streams/agents.py", "positions agent (apply, table write)"),
    ("pm_streams/portfolio.py", "portfolio agent"),
    ("pm_streams/domain/portfolio.py", "portfolio agent"),
    ("pm_streams/exposure.py", "portfolio agent"),
    ("web/", "web server"),
    ("aiormq/", "AMQP client I/O (frames, confirms)"),
    ("aio_pika/", "AMQP client I/O (frames, confirms)"),
    ("pamqp/", "AMQP client I/O (frames, confirms)"),
    ("aiokafka/", "Kafka client I/O (fetch, produce)"),
    ("faust/", "Faust machinery (streams, producer buffer, tables)"),
    ("mode/", "Faust machinery (streams, producer buffer, tables)"),
    ("asyncpg/", "Postgres client I/O"),
]
"""(a path in a frame, the stage it stands for), in order: a sample belongs to the first
stage with a frame in its stack (the sink's rows under the consumer loop are the sink's;
an AMQP frame read with no frame of ours is AMQP I/O)."""


def stages(raw: Path) -> list[tuple[str, float]]:
    """Share of the worker's samples per pipeline stage (py-spy collapsed stacks)."""
    counts: dict[str, int] = {}
    total = 0
    for row in raw.read_text().splitlines():
        stack, _, n = row.rpartition(" ")
        if not n.isdigit():
            continue
        stage = next((name for mark, name in STAGES if mark in stack), "event loop, other")
        counts[stage] = counts.get(stage, 0) + int(n)
        total += int(n)
    return sorted(((k, 100 * v / total) for k, v in counts.items()), key=lambda kv: -kv[1])


def label(mix: str, loop: str) -> str:
    return f"{mix:5} {loop:7}"


def line(case: str, hop: dict[str, float], pipe: dict[str, Any]) -> str:
    cpu = pipe["cpu_ms"]
    return (
        f"{case} bare hop {hop['rate']:7,.0f} msg/s {hop['cpu_ms']:.3f} ms CPU/msg | "
        f"pipeline {pipe['rate']:6,.0f} fills/s ratio {pipe['rate'] / hop['rate']:.3f} | "
        f"worker {cpu['worker']:.3f} ms/fill = {cpu['worker'] / hop['cpu_ms']:.2f}x bare | "
        + " ".join(f"{k} {v:.3f}" for k, v in cpu.items() if k != "worker")
    )


def run_latency(
    rate: float, seconds: float, cases: list[tuple[str, str]], runs: int, processes: int
) -> None:
    medians: dict[str, list[float]] = {label(*case): [] for case in cases}
    for run in range(runs):
        for mix, loop in cases:
            ms = asyncio.run(latency(rate, seconds, MIXES[mix], processes, loop))
            medians[label(mix, loop)].append(pct(ms, 0.5))
            print(
                f"run {run + 1} {label(mix, loop)} {len(ms):,} fills at {rate:g}/s: "
                "publish → event "
                f"p50 {pct(ms, 0.5):.1f} ms, p90 {pct(ms, 0.9):.1f} ms, "
                f"p99 {pct(ms, 0.99):.1f} ms",
                flush=True,
            )
    for case, values in medians.items():
        print(f"{case} median of the runs' p50: {statistics.median(values):.1f} ms {values}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fills", type=int, default=20_000)
    parser.add_argument("--mix", nargs="*", default=list(MIXES), choices=list(MIXES))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", type=int, default=0)
    parser.add_argument(
        "--processes",
        type=int,
        default=2,
        help="2: a worker and its outputs process (as scripts/run); 1: one worker with"
        " the outputs inside; N > 2: N - 1 workers and one outputs process",
    )
    parser.add_argument(
        "--latency",
        nargs=2,
        type=float,
        metavar=("RATE", "SECONDS"),
        help="instead: publish → event latency at RATE fills/s for SECONDS, per run and mix",
    )
    parser.add_argument(
        "--loop",
        nargs="+",
        default=[Settings().event_loop],
        choices=["uvloop", "asyncio"],
        help="event loop of the processes and the bare hop (several: alternated per run)",
    )
    parser.add_argument(
        "--backlog",
        action="store_true",
        help="the fills wait in the order queue before the bridge may take them, as the bare"
        " hop's do (default: published while the pipeline runs)",
    )
    parser.add_argument("--serve-bare-hop", nargs=4, metavar=("QUEUE", "TOPIC", "N", "LOOP"))
    args = parser.parse_args()
    if args.serve_bare_hop:
        queue, topic, n, loop = args.serve_bare_hop
        serve_bare_hop(queue, topic, int(n), loop)
        return
    cases = [(mix, loop) for mix in args.mix for loop in args.loop]
    if args.latency:
        run_latency(args.latency[0], args.latency[1], cases, args.runs, args.processes)
        return
    results: dict[str, list[tuple[dict[str, float], dict[str, Any]]]] = {
        label(*case): [] for case in cases
    }
    for run in range(args.runs):
        for mix, loop in cases:
            hop = bare_hop(args.fills, MIXES[mix], loop)
            prof = args.profile if run == 0 else 0
            pipe = asyncio.run(
                pipeline(args.fills, MIXES[mix], prof, mix, args.processes, loop, args.backlog)
            )
            results[label(mix, loop)].append((hop, pipe))
            print(f"run {run + 1} " + line(label(mix, loop), hop, pipe), flush=True)
    print("medians:")
    for case, rows in results.items():
        hop = {k: statistics.median(h[k] for h, _ in rows) for k in ("rate", "cpu_ms")}
        names = rows[0][1]["cpu_ms"].keys()
        pipe = {
            "rate": statistics.median(p["rate"] for _, p in rows),
            "cpu_ms": {k: statistics.median(p["cpu_ms"][k] for _, p in rows) for k in names},
        }
        ratios = sorted(p["cpu_ms"]["worker"] / h["cpu_ms"] for h, p in rows)
        print(line(case, hop, pipe) + f" | worker/bare per run {ratios}")


if __name__ == "__main__":
    main()
