"""The positions agent through real Kafka, in a real `pm-streams worker` subprocess.

    .venv/bin/python bench/bench_agent.py [--events 50000] [--rate 500] [--seconds 10]
        [--partitions 8] [--assets 8] [--profile SECONDS]
        [--agent-only | --floor | --separate-outputs]
        [--env NAME=VALUE]

A fresh app id (its own topics, Postgres schema, queues); the event mix of
`bench_apply.make_events` (60% fills, 25% exchange pushes of which half are no-op
repeats, 15% price updates, 8 assets) in canonical form (`event_to_bytes`) produced
straight to the input topic keyed by asset. By default everything the worker runs
beside the agent (Postgres sink, RabbitMQ republisher, portfolio agent, web server)
runs as in production, on the same 2 cores as the broker and this script.
`--agent-only`: the same app (positions + portfolio agents, tables, web) without
`Service.services`. `--floor`: a bare Faust agent that only writes the table and the
watermark per event: what Faust + aiokafka cost per event before any of our code.
`--separate-outputs`: the worker with `POSITION_MANAGER_OUTPUTS=separate` and a
`pm-streams outputs` process beside it (the sink and republisher under their own GIL);
the outputs' catch-up time and CPU are printed too.
`--env PRODUCER_LINGER=0.005` passes Faust settings (or ours) to the worker.

Prints
  1. throughput: N events produced *before* the worker starts (a backlog), then the
     worker started; events/s = N / (time between the agent's first processed event and
     its last, polled from /metrics; the floor agent: its watermark changelog). Also the
     worker's CPU time per event until it is idle again (portfolio, sink and
     republisher included) — the figure that does not depend on what else runs on
     the machine — and the Kafka records written per input event.
     Target >= 5,000 events/s.
  2. latency at a fixed rate (default 500 events/s for 10 s) once the worker is idle:
     per event, from just before `producer.send` (wall clock) to the timestamp of the
     positions-changelog record that carries it (`Stored.offset` names the input
     offset, the changelog partition is the input partition), p50/p90/p99/max over the
     events that changed the table; and to the watermark record (every event,
     no-ops included). The record timestamp is taken when the worker hands the record
     to its producer, i.e. when the in-memory table (what the API answers from)
     changed; a producer linger is not in it. Target p99 <= 20 ms.
  3. with --profile S: `py-spy record --gil` of the worker for S seconds during a second
     backlog, written to var/bench/agent-profile.{raw,txt} (top functions); with
     --separate-outputs also of the outputs process, var/bench/outputs-profile.*.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.bench_apply import make_events
from pm_streams.domain import event_to_bytes
from pm_streams.settings import Settings
from pm_streams.stored import stored_from_bytes
from pm_streams.topics import ensure_topics
from tests.support.worker import Deployment, WorkerProcess, free_port

ROOT = Path(__file__).resolve().parents[1]
DIGITS = re.compile(rb"\d+")
# The floor agent's own progress table (the real agent keeps its watermark in memory).
WATERMARKS_TABLE = "input-watermarks"


class AgentOnlyWorker(WorkerProcess):
    """The same worker without `Service.services` (no Postgres sink, no RabbitMQ bridge
    or republisher, no snapshots/validation/prices): Faust, the positions and portfolio
    agents, their tables and the web server only."""

    def start(self) -> WorkerProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve-agent-only", str(self.port)],
            cwd=ROOT,
            env=self.deployment.env(self.port),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        return self


def serve_agent_only(port: int) -> int:
    from pm_streams import logs
    from pm_streams.app import build
    from pm_streams.cli import prepared_loop, run

    settings = Settings.from_env().with_port(port)
    logs.configure(settings.log_level)
    loop = prepared_loop(settings)
    service = build(settings)
    return run(
        service.app, loop=loop, log_level=settings.log_level, workdir=str(settings.worker_dir)
    )


class FloorWorker(AgentOnlyWorker):
    """A bare Faust agent on the same app settings and input topic: per event only
    `table[asset] = payload` and the input watermark (two changelog records; with
    `--env BENCH_FLOOR_TABLE=0` the watermark only), no domain code: the per-event
    floor of Faust + aiokafka on this machine."""

    def start(self) -> WorkerProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve-floor", str(self.port)],
            cwd=ROOT,
            env=self.deployment.env(self.port),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        return self


def serve_floor(port: int) -> int:
    from typing import Any

    from pm_streams import logs
    from pm_streams.app import faust_app, raw_changelog
    from pm_streams.cli import prepared_loop, run
    from pm_streams.topics import raw_topic

    settings = Settings.from_env().with_port(port)
    logs.configure(settings.log_level)
    loop = prepared_loop(settings)
    app = faust_app(settings)
    names = settings.kafka
    topic = raw_topic(app, names.input_topic, settings.partitions, internal=True)
    table = app.Table(
        "floor",
        key_type=str,
        value_type=bytes,
        partitions=settings.partitions,
        changelog_topic=raw_changelog(app, names.changelog("floor"), settings.partitions),
    )
    marks = app.Table(
        WATERMARKS_TABLE, key_type=str, value_type=bytes, partitions=settings.partitions
    )

    write_table = os.environ.get("BENCH_FLOOR_TABLE", "1") == "1"

    @app.agent(topic, name="floor", concurrency=1)
    async def floor(stream: Any) -> None:
        async for event in stream.events():
            if write_table:
                table[event.key] = event.value
            marks[str(event.message.tp.partition)] = str(event.message.offset).encode()

    return run(app, loop=loop, log_level="WARNING")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


SERVICE_PROCESSES = {"kafka": "kafka.Kafka", "rabbitmq": "beam.smp", "postgres": "postgres"}
"""Name -> a string in the command line of the local services' processes (`scripts/services`)."""


def service_pids() -> dict[str, list[int]]:
    """The pids of the local Kafka, RabbitMQ and Postgres processes, by service."""
    found: dict[str, list[int]] = {name: [] for name in SERVICE_PROCESSES}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        for name, marker in SERVICE_PROCESSES.items():
            if marker in cmdline:
                found[name].append(int(entry.name))
    return found


def sched_seconds(pids: list[int]) -> tuple[float, float]:
    """(on a CPU, runnable but waiting for one) seconds so far, summed over every thread of
    `pids` (Linux `/proc/<pid>/task/<tid>/schedstat`). Waiting close to running means the
    processes queue for the machine's CPUs, whatever their own code does."""
    run = wait = 0
    for pid in pids:
        try:
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                on_cpu, queued, _ = (task / "schedstat").read_text().split()
            except (OSError, ValueError):
                continue
            run += int(on_cpu)
            wait += int(queued)
    return run / 1e9, wait / 1e9


async def wait_idle(pid: int, below: float = 0.15, timeout: float = 120.0) -> float:
    """Wait until the process uses less than `below` of a core over 1 s; return the wait."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        before = cpu_seconds(pid)
        await asyncio.sleep(1.0)
        if cpu_seconds(pid) - before < below:
            break
    return time.monotonic() - started


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(label: str, ms: list[float]) -> str:
    if not ms:
        return f"{label}: no samples"
    return (
        f"{label}: n={len(ms):,} p50 {pct(ms, 0.50):.1f} ms  p90 {pct(ms, 0.90):.1f} ms  "
        f"p99 {pct(ms, 0.99):.1f} ms  max {max(ms):.1f} ms  mean {statistics.fmean(ms):.1f} ms"
    )


class Tail:
    """Reads a topic from given offsets (all partitions) with an aiokafka consumer."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.consumer: AIOKafkaConsumer | None = None

    async def start(self, start: dict[int, int] | None = None) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=50,
        )
        await self.consumer.start()
        parts: set[int] | None = None
        for _ in range(100):
            parts = self.consumer.partitions_for_topic(self.topic)
            if parts:
                break
            await self.consumer._client.force_metadata_update()
            await asyncio.sleep(0.1)
        assert parts, f"topic {self.topic} not found"
        tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        self.consumer.assign(tps)
        for tp in tps:
            offset = (start or {}).get(tp.partition)
            if offset is None:
                await self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, offset)

    async def end_offsets(self) -> dict[int, int]:
        assert self.consumer is not None
        tps = list(self.consumer.assignment())
        ends = await self.consumer.end_offsets(tps)
        return {tp.partition: off for tp, off in ends.items()}

    async def getmany(self) -> list[tuple[int, int, bytes | None, bytes | None, int]]:
        assert self.consumer is not None
        batch = await self.consumer.getmany(timeout_ms=200, max_records=10_000)
        return [
            (r.partition, r.offset, r.key, r.value, r.timestamp)
            for records in batch.values()
            for r in records
        ]

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()


async def records_per_topic(bootstrap: str, app_id: str) -> dict[str, int]:
    """Records written so far to each of the app's topics (sum of end offsets)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        out: dict[str, int] = {}
        topics = sorted(t for t in await consumer.topics() if t.startswith(app_id))
        consumer.subscribe(topics)  # metadata (partitions) for exactly these topics
        await consumer._client.force_metadata_update()
        for topic in topics:
            parts = consumer.partitions_for_topic(topic) or set()
            ends = await consumer.end_offsets([TopicPartition(topic, p) for p in parts])
            out[topic.removeprefix(app_id).lstrip(".-")] = sum(ends.values())
        return out
    finally:
        await consumer.stop()


async def produce_backlog(
    producer: AIOKafkaProducer, topic: str, payloads: list[tuple[str, bytes]]
) -> dict[int, int]:
    """Send everything; return partition → last offset."""
    last: dict[int, int] = {}
    pending = []
    for asset, value in payloads:
        pending.append(await producer.send(topic, value=value, key=asset.encode()))
        if len(pending) >= 5000:
            for md in await asyncio.gather(*pending):
                last[md.partition] = max(last.get(md.partition, -1), md.offset)
            pending.clear()
    for md in await asyncio.gather(*pending):
        last[md.partition] = max(last.get(md.partition, -1), md.offset)
    return last


async def wait_processed(worker: WorkerProcess, total: int, timeout: float) -> tuple[float, float]:
    """Poll /metrics until the agent has processed `total` input events (applied, no-op,
    duplicate or replay); return wall times (first seen > 0, all done)."""
    first = 0.0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = await worker.get("/metrics")
        done = 0
        if status == 200 and isinstance(body, str):
            for line in body.splitlines():
                if line.startswith("pm_events_processed_total"):
                    done += int(float(line.rsplit(" ", 1)[1]))
        now = time.time()
        if done and not first:
            first = now
        if done >= total:
            return first, now
        await asyncio.sleep(0.05)
    raise SystemExit(f"worker processed fewer than {total} events in {timeout}s")


def counter(text: str, name: str, **labels: str) -> int:
    """Sum of a Prometheus counter's samples with these labels in /metrics text."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    total = 0
    for line in text.splitlines():
        if line.startswith(name) and want in line:
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


async def wait_outputs(outputs: WorkerProcess, sink: int, republisher: int) -> float:
    """Poll the outputs process until its sink and republisher handled that many
    records; return the wall time then."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        status, body = await outputs.get("/metrics")
        if status == 200 and isinstance(body, str):
            got_sink = counter(body, "pm_consumer_records_total", consumer="sink")
            got_rep = counter(body, "pm_consumer_records_total", consumer="republisher")
            if got_sink >= sink and got_rep >= republisher:
                return time.time()
        await asyncio.sleep(0.05)
    raise SystemExit("outputs did not catch up in 600 s")


async def wait_watermarks(
    marks: Tail, want: dict[int, int], timeout: float
) -> tuple[list[int], dict[tuple[int, int], int]]:
    """Read the watermarks changelog until every input partition reached `want`.

    Returns the record timestamps (ms) and input (partition, offset) → timestamp."""
    seen: dict[int, int] = {}
    stamps: list[int] = []
    at: dict[tuple[int, int], int] = {}
    deadline = time.monotonic() + timeout
    while any(seen.get(p, -1) < off for p, off in want.items()):
        if time.monotonic() > deadline:
            raise SystemExit(f"watermarks stuck: want {want}, seen {seen}")
        for _p, _o, key, value, ts in await marks.getmany():
            if key is None or value is None:
                continue
            part = int(DIGITS.search(key).group())  # type: ignore[union-attr]
            off = int(DIGITS.search(value).group())  # type: ignore[union-attr]
            seen[part] = max(seen.get(part, -1), off)
            stamps.append(ts)
            at.setdefault((part, off), ts)
    return stamps, at


async def fixed_rate(
    producer: AIOKafkaProducer, topic: str, payloads: list[tuple[str, bytes]], rate: float
) -> tuple[dict[tuple[int, int], float], dict[int, int]]:
    """Produce at `rate`/s; return (partition, offset) → wall time just before send."""
    sent_at: list[float] = []
    futures = []
    loop = asyncio.get_running_loop()
    t0 = loop.time() + 0.05
    for i, (asset, value) in enumerate(payloads):
        delay = t0 + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        sent_at.append(time.time())
        futures.append(await producer.send(topic, value=value, key=asset.encode()))
    mds = await asyncio.gather(*futures)
    by_offset = {(md.partition, md.offset): t for md, t in zip(mds, sent_at, strict=True)}
    last: dict[int, int] = {}
    for md in mds:
        last[md.partition] = max(last.get(md.partition, -1), md.offset)
    return by_offset, last


def profile(pid: int, seconds: int, out: Path) -> subprocess.Popen[bytes]:
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [
            str(ROOT / ".venv/bin/py-spy"),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(seconds),
            "--gil",
            "--format",
            "raw",
            "--rate",
            "200",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def top_frames(raw: Path, n: int = 25) -> str:
    """Own time and total time per function from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not count_s.isdigit():
            continue
        count = int(count_s)
        samples += count
        frames = stack.split(";")
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    lines = [f"{samples} samples"]
    lines.append("-- own time")
    lines += [f"{100 * c / samples:5.1f}%  {f}" for f, c in own.most_common(n)]
    lines.append("-- total time (inclusive)")
    lines += [f"{100 * c / samples:5.1f}%  {f}" for f, c in total.most_common(n)]
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-agent-"))
    dead = free_port()  # no exchange: the price refresher's calls fail fast, nothing sent
    deployment = Deployment(
        tmp,
        partitions=args.partitions,
        extra_env={
            "POSITION_MANAGER_PRICE_API_URL": f"http://127.0.0.1:{dead}",
            **dict(kv.split("=", 1) for kv in args.env),
        },
    )
    if args.separate_outputs:
        deployment.extra_env["POSITION_MANAGER_OUTPUTS"] = "separate"
    port = free_port()
    settings = Settings.from_env(deployment.env(port))
    names = settings.kafka
    await ensure_topics(settings)
    latency_n = int(args.rate * args.seconds)
    extra = args.events if args.profile else 0
    events = make_events(args.events + latency_n + extra, assets=args.assets)
    payloads = [(e.asset, event_to_bytes(e)) for e in events]
    backlog = payloads[: args.events]
    paced = payloads[args.events : args.events + latency_n]
    second = payloads[args.events + latency_n :]

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=0)
    await producer.start()
    kind: type[WorkerProcess] = WorkerProcess
    if args.floor:
        kind = FloorWorker
    elif args.agent_only:
        kind = AgentOnlyWorker
    worker = kind(deployment, port=port)
    outputs = WorkerProcess(deployment, command="outputs") if args.separate_outputs else None
    marks = Tail(settings.kafka_bootstrap, names.changelog(WATERMARKS_TABLE))
    changes = Tail(settings.kafka_bootstrap, names.positions_changelog)
    try:
        t = time.perf_counter()
        last = await produce_backlog(producer, names.input_topic, backlog)
        print(
            f"app {settings.app_id}: {len(backlog):,} events produced in "
            f"{time.perf_counter() - t:.1f} s over {len(last)} partitions"
        )

        # ---------------------------------------------------------------- 1. throughput
        if outputs is not None:
            outputs.start()
            await outputs.wait_healthy(timeout=120)
            assert outputs.proc is not None
            out_cpu0 = cpu_seconds(outputs.proc.pid)
        worker.start()
        assert worker.proc is not None
        pid = worker.proc.pid
        if args.floor:  # no routes: any answer of the web server will do
            await worker.wait_for("/health", lambda status, _body: status == 404)
        elif args.agent_only:  # /health reports the missing Postgres/RabbitMQ services
            await worker.wait_for("/health", lambda status, _body: status in (200, 503))
        else:
            await worker.wait_healthy(timeout=120)
        healthy = time.time()
        cpu0 = cpu_seconds(pid)
        if args.floor:
            await marks.start()
            stamps, _ = await wait_watermarks(marks, last, timeout=600)
            first_ms, last_ms = min(stamps), max(stamps)
        else:
            first_s, last_s = await wait_processed(worker, len(backlog), timeout=600)
            first_ms, last_ms = int(first_s * 1000), int(last_s * 1000)
        # the portfolio agent, sink and republisher finish their share of the work
        idle = await wait_idle(pid)
        cpu = cpu_seconds(pid) - cpu0
        span = (last_ms - first_ms) / 1000
        print(
            f"throughput ({kind.__name__}, "
            f"backlog of {len(backlog):,}): "
            f"{len(backlog) / span:,.0f} events/s  ({span:.2f} s first→last applied; "
            f"last applied {last_ms / 1000 - healthy:.2f} s after /health said healthy)"
        )
        print(
            f"  worker CPU until idle: {cpu:.1f} s = {1e6 * cpu / len(backlog):,.0f} µs/event "
            f"→ {len(backlog) / cpu:,.0f} events per CPU-second "
            f"(machine load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
        )

        written = await records_per_topic(settings.kafka_bootstrap, settings.app_id)
        if outputs is not None:
            assert outputs.proc is not None
            key = names.positions_changelog.removeprefix(settings.app_id).lstrip(".-")
            out_key = names.outbox_topic.removeprefix(settings.app_id).lstrip(".-")
            caught_up = await wait_outputs(
                outputs, written[key], written[key] + written.get(out_key, 0)
            )
            await wait_idle(outputs.proc.pid)
            out_cpu = cpu_seconds(outputs.proc.pid) - out_cpu0
            print(
                f"  outputs process (sink + republisher) caught up "
                f"{caught_up - last_ms / 1000:.2f} s after the last event was applied; "
                f"its CPU {out_cpu:.1f} s = {1e6 * out_cpu / len(backlog):,.0f} µs/event; "
                f"worker + outputs {1e6 * (cpu + out_cpu) / len(backlog):,.0f} µs/event"
            )
        inputs = written.pop(names.input_topic.removeprefix(settings.app_id).lstrip(".-"), 0)
        print(
            f"  Kafka records written per input event: {sum(written.values()) / inputs:.2f} ("
            + ", ".join(f"{t} {n / inputs:.2f}" for t, n in written.items() if n)
            + ")"
        )

        # ---------------------------------------------------------------- 2. latency
        print(f"  worker idle {idle:.1f} s after the last input event was applied")
        start_marks = await marks.end_offsets() if args.floor else {}
        await changes.start()
        start_changes = await changes.end_offsets()
        await changes.stop()
        changes = Tail(settings.kafka_bootstrap, names.positions_changelog)
        await changes.start(start_changes)
        if args.floor:
            await marks.stop()
            marks = Tail(settings.kafka_bootstrap, names.changelog(WATERMARKS_TABLE))
            await marks.start(start_marks)
        sent, last2 = await fixed_rate(producer, names.input_topic, paced, args.rate)
        mark_at: dict[tuple[int, int], int] = {}
        if args.floor:
            _, mark_at = await wait_watermarks(marks, last2, timeout=120)
        else:
            await wait_processed(worker, len(backlog) + len(paced), timeout=120)
        table_ms: list[float] = []
        deadline = time.monotonic() + (0 if args.floor else 10)
        while time.monotonic() < deadline:
            records = await changes.getmany()
            if not records and table_ms:
                break
            for part, _off, _key, value, ts in records:
                if value is None:
                    continue
                for view in stored_from_bytes(value).steps():  # every change of the batch
                    t_sent = sent.get((part, view.offset))
                    if t_sent is not None:
                        table_ms.append(ts - t_sent * 1000)
        all_ms = [mark_at[k] - t * 1000 for k, t in sent.items() if k in mark_at]
        print(f"latency at {args.rate:g} events/s for {args.seconds:g} s ({len(paced):,} events):")
        print("  " + summary("event→table (positions changelog, changed events)", table_ms))
        if args.floor:
            print("  " + summary("event→applied (watermark, every event)", all_ms))

        # ---------------------------------------------------------------- 3. profile
        if args.profile:
            assert worker.proc is not None
            out = ROOT / "var/bench/agent-profile.raw"
            spy = profile(worker.proc.pid, args.profile, out)
            out_spy = None
            if outputs is not None and outputs.proc is not None:
                out_raw = ROOT / "var/bench/outputs-profile.raw"
                out_spy = profile(outputs.proc.pid, args.profile, out_raw)
            await asyncio.sleep(1.0)
            last3 = await produce_backlog(producer, names.input_topic, second)
            if args.floor:
                await wait_watermarks(marks, last3, timeout=600)
            else:
                await wait_processed(worker, len(backlog) + len(paced) + len(second), 600)
            spy.wait(timeout=args.profile + 60)
            text = top_frames(out)
            (ROOT / "var/bench/agent-profile.txt").write_text(text)
            print(f"profile (py-spy, {args.profile} s during a second backlog):")
            print("\n".join("  " + line for line in text.splitlines()))
            if out_spy is not None:
                out_spy.wait(timeout=args.profile + 60)
                text = top_frames(out_raw)
                (ROOT / "var/bench/outputs-profile.txt").write_text(text)
                print("profile of the outputs process: var/bench/outputs-profile.txt")
    finally:
        await marks.stop()
        await changes.stop()
        await producer.stop()
        for proc in (worker, outputs):
            if proc is not None and proc.proc is not None and proc.proc.poll() is None:
                proc.stop()
        deployment.drop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--assets", type=int, default=8, help="assets in the event mix")
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--profile", type=int, default=0, metavar="SECONDS")
    parser.add_argument(
        "--agent-only",
        action="store_true",
        help="run the worker without the sink, bridges and periodic services",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="a bare Faust agent (table write + watermark per event) instead of the worker",
    )
    parser.add_argument(
        "--separate-outputs",
        action="store_true",
        help="POSITION_MANAGER_OUTPUTS=separate and a `pm-streams outputs` process",
    )
    parser.add_argument("--serve-agent-only", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-floor", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra worker environment, e.g. PRODUCER_LINGER=0.002 (a Faust setting)",
    )
    args = parser.parse_args()
    if args.serve_floor:
        sys.exit(serve_floor(args.serve_floor))
    if args.serve_agent_only:
        sys.exit(serve_agent_only(args.serve_agent_only))
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
