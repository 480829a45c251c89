"""REST API and live-portfolio benchmarks against a real worker (Kafka, RabbitMQ, Postgres).

    .venv/bin/python bench/bench_api.py [--positions 1000] [--seconds 5] [--connections 16]
                                        [--rate 500] [--visibility-seconds 10]
                                        [--warmup-seconds 40]
                                        [--separate-outputs] [--stages] [--env NAME=VALUE]
                                        [--profile SECONDS] [--pin] [--outputs-nice N]

Prints:
  1. at N open positions (default 1,000), `GET /api/v1/positions/{asset}` (rotating over
     every asset) and `GET /api/v1/portfolio` requests/s and p50/p99 next to a bare
     aiohttp JSON endpoint on the same machine serving the very same bodies (a dict
     serialized with orjson per request), and the ratios. Load: `wrk` (Debian package)
     with one thread; service and bare runs alternate (--runs pairs; the ratios are the
     medians of the per-pair ratios, the figures the medians of each side). `--pin`: both
     servers on CPU 0 and wrk on CPU 1.
     Targets: p99 <= 1.25x, throughput >= 0.8x.
  2. event -> portfolio visibility at R events/s (default 500) of exchange position
     updates for random assets (of the N), produced in canonical form to the input topic
     (the bridge is benched by bench_bridge.py): per event, from just before the send to
     the first portfolio-totals changelog record that includes it (the totals record
     names the last portfolio-topic offset it took, the portfolio topic carries the
     event's trace id); with `--stages` also to its positions changelog record. p50 / p99
     / max, and the CPU time per event of the worker, the outputs process and this
     client until idle again, each process's time on a CPU and runnable but waiting for
     one while sending (also Kafka, RabbitMQ, Postgres), and how many periodic snapshots
     the worker took meanwhile (its first round, one per open position, starts a minute
     after its start and is taken in groups paced over 5 % of the snapshot interval).
     Target p99 <= 50 ms. Before it, `--warmup-seconds` (40) of the same load,
     unmeasured: a broker whose JVM has just started gives a p99 of 100-200 ms for its
     first minute of load (README, Benchmarks, session 10).

`--separate-outputs`: the worker with `POSITION_MANAGER_OUTPUTS=separate` and a
`pm-streams outputs` process (sink + republisher) beside it; `--outputs-nice N` runs that
process at nice level N.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.bench_agent import (
    ROOT,
    cpu_seconds,
    profile,
    sched_seconds,
    service_pids,
    top_frames,
    wait_idle,
)
from pm_streams.domain import ExchangeUpdate, event_to_bytes
from tests.support.worker import API_KEY, Deployment, WorkerProcess, free_port

BARE_SERVER = textwrap.dedent(
    """
    import sys, orjson
    from aiohttp import web
    bodies = orjson.loads(open(sys.argv[2], "rb").read())
    positions, portfolio = bodies["positions"], bodies["portfolio"]

    async def position(request):
        return web.Response(body=orjson.dumps(positions[request.match_info["asset"]]),
                            content_type="application/json")

    async def whole(request):
        return web.Response(body=orjson.dumps(portfolio), content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/v1/positions/{asset}", position)
    app.router.add_get("/api/v1/portfolio", whole)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
    """
)


LAST_OFFSET = re.compile(rb'"last_offset":(-?[0-9]+)')
VIS_TRACE = re.compile(rb'"trace_id":"(vis-[0-9]+)"')


def asset_name(i: int) -> str:
    return f"B{i:04d}USDT"


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))]


# --------------------------------------------------------------------------- wrk

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


WRK_CPU = ["taskset", "-c", "1"]
"""`--pin`: the command prefix that puts wrk on its own CPU (see `pin_server`)."""


def pin_server(pid: int) -> None:
    """`--pin`: every thread of a server under test on CPU 0 (wrk runs on CPU 1), so the
    service and the bare endpoint are measured on the same core, not wherever the
    scheduler put them next to Kafka and wrk."""
    subprocess.run(["taskset", "-a", "-p", "-c", "0", str(pid)], check=True, capture_output=True)


def wrk(
    url: str,
    path_lua: str,
    seconds: int,
    connections: int,
    pid: int | None = None,
    *,
    pin: bool = False,
) -> dict[str, float]:
    """One wrk run (on CPU 1 with `pin`); with `pid`, also the server's CPU time per
    request (µs)."""
    cpu0 = cpu_seconds(pid) if pid else 0.0
    out = subprocess.run(
        [
            *(WRK_CPU if pin else []),
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            path_lua,
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def lat(p: str) -> float:
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)\b", out)
        assert m, out
        return float(m.group(1)) * _UNITS[m.group(2)]

    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    requests = float(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return {
        "cpu_us": (cpu_seconds(pid) - cpu0) / requests * 1e6 if pid else 0.0,
        "rps": rps,
        "p50": lat("50"),
        "p99": lat("99"),
        "non2xx": float(non2xx.group(1)) if non2xx else 0.0,
    }


def lua(tmp: Path, name: str, n: int, kind: str) -> str:
    if kind == "position":
        body = f"""
            local i = 0
            request = function()
              i = i + 1
              local path = string.format("/api/v1/positions/B%04dUSDT", i % {n})
              return wrk.format("GET", path, {{["X-API-Key"] = "{API_KEY}"}})
            end
        """
    else:
        body = f"""
            request = function()
              return wrk.format("GET", "/api/v1/portfolio", {{["X-API-Key"] = "{API_KEY}"}})
            end
        """
    path = tmp / f"{name}.lua"
    path.write_text(textwrap.dedent(body))
    return str(path)


# --------------------------------------------------------------------------- parts


async def seed(deployment: Deployment, worker: WorkerProcess, n: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9092", acks="all")
    await producer.start()
    try:
        for i in range(n):
            value = update(asset_name(i), str(1 + i % 7), str(100 + i % 13), f"seed-{i}")
            await producer.send(
                f"{deployment.app_id}.position-events", key=asset_name(i).encode(), value=value
            )
        await producer.flush()
    finally:
        await producer.stop()
    await worker.wait_for(
        "/api/v1/portfolio",
        lambda s, b: s == 200 and b["open_positions_count"] == n,
        timeout=120,
    )


async def capture(worker: WorkerProcess, n: int) -> dict[str, Any]:
    positions: dict[str, Any] = {}
    async with aiohttp.ClientSession(headers={"X-API-Key": API_KEY}) as s:
        for i in range(n):
            async with s.get(f"{worker.url}/api/v1/positions/{asset_name(i)}") as r:
                positions[asset_name(i)] = await r.json()
        async with s.get(f"{worker.url}/api/v1/portfolio") as r:
            portfolio = await r.json()
    return {"positions": positions, "portfolio": portfolio}


def throughput(
    worker: WorkerProcess,
    bodies: dict[str, Any],
    tmp: Path,
    n: int,
    seconds: int,
    conns: int,
    runs: int = 3,
    profile_seconds: int = 0,
    pin: bool = False,
) -> None:
    bodies_path = tmp / "bodies.json"
    bodies_path.write_bytes(orjson.dumps(bodies))
    port = free_port()
    bare = subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(port), str(bodies_path)])
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                subprocess.run(
                    ["curl", "-sf", f"http://127.0.0.1:{port}/api/v1/portfolio", "-o", "/dev/null"],
                    check=True,
                )
                break
            except subprocess.CalledProcessError:
                time.sleep(0.2)
        print(
            f"\n1. API at {n} open positions: wrk -t1 -c{conns} -d{seconds}s, "
            f"{runs} alternating pairs (medians){', pinned' if pin else ''}"
        )
        print(
            f"   portfolio body {len(orjson.dumps(bodies['portfolio'])):,} bytes; "
            f"position body ~{len(orjson.dumps(bodies['positions'][asset_name(0)])):,} bytes"
        )
        header = f"   {'route':<32}{'service req/s':>14}{'bare req/s':>12}{'ratio':>7}"
        header += f"{'p50 ms svc/bare':>18}{'p99 ms svc/bare':>18}{'p99 ratio':>10}"
        header += f"{'CPU us/req svc/bare':>21}"
        print(header)
        for kind, label in (
            ("position", "GET /api/v1/positions/{asset}"),
            ("portfolio", "GET /api/v1/portfolio"),
        ):
            script = lua(tmp, kind, n, kind)
            bare_url = f"http://127.0.0.1:{port}"
            assert worker.proc is not None
            worker_pid = worker.proc.pid
            if pin:
                pin_server(worker_pid)
                pin_server(bare.pid)
            wrk(worker.url, script, 1, conns, pin=pin)  # warm-up
            wrk(bare_url, script, 1, conns, pin=pin)
            # Alternate service and bare runs: this host's speed drifts by tens of per cent
            # within minutes, so each ratio compares runs seconds apart; medians of `runs`.
            svc_runs, base_runs = [], []
            for _ in range(runs):
                svc_runs.append(wrk(worker.url, script, seconds, conns, worker_pid, pin=pin))
                base_runs.append(wrk(bare_url, script, seconds, conns, bare.pid, pin=pin))
            assert all(r["non2xx"] == 0 for r in svc_runs + base_runs), (svc_runs, base_runs)
            svc, base = _median(svc_runs), _median(base_runs)
            pairs = list(zip(svc_runs, base_runs, strict=True))
            ratios = [a["rps"] / b["rps"] for a, b in pairs]
            p99s = [a["p99"] / b["p99"] for a, b in pairs]
            # The ratios are medians of the per-pair ratios: each pair is two runs seconds
            # apart, so a drift of the host's speed between pairs cancels out.
            print(
                f"   {label:<32}{svc['rps']:>14,.0f}{base['rps']:>12,.0f}"
                f"{statistics.median(ratios):>7.2f}"
                f"{svc['p50']:>9.2f}/{base['p50']:<8.2f}{svc['p99']:>9.2f}/{base['p99']:<8.2f}"
                f"{statistics.median(p99s):>10.2f}"
                f"{svc['cpu_us']:>11.0f}/{base['cpu_us']:<9.0f}"
            )
            if runs > 1:
                print(
                    f"   {'':<32}per run: req/s ratio "
                    + " ".join(f"{r:.2f}" for r in ratios)
                    + "; p99 ratio "
                    + " ".join(f"{r:.2f}" for r in p99s)
                )
                print(
                    f"   {'':<32}per run: CPU us/req svc/bare "
                    + " ".join(f"{a['cpu_us']:.0f}/{b['cpu_us']:.0f}" for a, b in pairs)
                )
            if profile_seconds:
                profiled(worker_pid, worker.url, script, kind, profile_seconds, conns, pin)
                profiled(bare.pid, bare_url, script, f"bare-{kind}", profile_seconds, conns, pin)
    finally:
        bare.terminate()
        bare.wait(timeout=10)


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def profiled(
    pid: int, url: str, script: str, name: str, seconds: int, conns: int, pin: bool
) -> None:
    """One more run under `py-spy record --gil`; top functions to a text file."""
    raw = ROOT / f"var/bench/api-{name}-profile.raw"
    spy = profile(pid, seconds, raw)
    time.sleep(1)  # py-spy attaches
    wrk(url, script, seconds, conns, pin=pin)
    spy.wait(timeout=seconds + 30)
    text = raw.with_suffix(".txt")
    text.write_text(top_frames(raw, 40))
    print(f"   (profile of one more run under py-spy: {text.relative_to(ROOT)})")


def update(asset: str, size: str, mark: str, trace: str) -> bytes:
    """The canonical input event the bridge would put on Kafka for a position push."""
    return event_to_bytes(
        ExchangeUpdate(
            asset=asset,
            mode="one-way",
            size=Decimal(size),
            avg_price=Decimal(100),
            unrealized_pnl=None,
            realized_pnl=None,
            mark_price=Decimal(mark),
            seq=None,
            updated_ms=None,
            trace_id=trace,
        )
    )


def build_events(n: int, total: int, prefix: str, seed: int) -> list[tuple[str, bytes, bytes]]:
    """(trace id, key, value) of `total` position updates for random assets of the `n`."""
    rng = random.Random(seed)
    events = []
    for k in range(total):
        i = rng.randrange(n)
        mark = f"{100 + i % 13}.{k % 97 + 1:02d}"
        key, trace = asset_name(i), f"{prefix}-{k}"
        events.append((trace, key.encode(), update(key, str(1 + i % 7), mark, trace)))
    return events


async def send_paced(
    producer: AIOKafkaProducer,
    topic: str,
    events: list[tuple[str, bytes, bytes]],
    rate: int,
    sent: dict[str, float],
) -> float:
    """Produce `events` at `rate`/s, noting each one's send time in `sent`; wait until the
    broker has them all and return the rate achieved."""
    start = time.monotonic()
    pending = []
    for k, (trace, key_bytes, value) in enumerate(events):
        delay = start + k / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        sent[trace] = time.time()
        pending.append(await producer.send(topic, key=key_bytes, value=value))
    achieved = len(events) / (time.monotonic() - start)
    await asyncio.gather(*pending)
    return achieved


async def visibility(
    deployment: Deployment,
    n: int,
    rate: int,
    seconds: float,
    pids: dict[str, int],
    stages: bool = False,
    warmup: float = 0.0,
    worker: WorkerProcess | None = None,
) -> None:
    """Produce canonical events to the input topic (the bridge is benched by bench_bridge)
    and watch the portfolio totals changelog for the record that includes each one.
    `pids` (name -> pid): processes whose CPU time per event is printed. `stages`: also
    read the positions changelog for the time to each event's position record (this
    client then scans every book record: ~10 % of a core more, on the worker's cores).
    `warmup`: seconds of the same load first, unmeasured, then until every process is idle
    again: a freshly started broker JVM is slow until its JIT has compiled the hot path.
    The worker's first round of periodic snapshots (one per open position, from a minute
    after its start, in groups paced over 5 % of the snapshot interval) runs on through the
    measured seconds, as it would in any hour of production."""
    app_id = deployment.app_id
    totals_topic = f"{app_id}-portfolio-totals-changelog"
    input_topic = f"{app_id}.position-events"
    book_topic = f"{app_id}-positions-changelog"
    contrib_topic = f"{app_id}.portfolio-changes"
    consumer = AIOKafkaConsumer(
        totals_topic,
        contrib_topic,
        *((book_topic,) if stages else ()),
        bootstrap_servers="127.0.0.1:9092",
        auto_offset_reset="latest",
        enable_auto_commit=False,
        group_id=None,
        # Visibility is read off the records' own timestamps, so this consumer may
        # fetch late and in bulk: fewer fetches for the broker and for this client,
        # which share the worker's two cores.
        fetch_max_wait_ms=200,
        fetch_min_bytes=1024 * 1024,
    )
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9092", acks="all")
    await producer.start()
    if warmup > 0:
        started = time.monotonic()
        warm = build_events(n, int(rate * warmup), "warm", seed=11)
        achieved = await send_paced(producer, input_topic, warm, rate, {})
        for pid in pids.values():
            await wait_idle(pid)
        print(
            f"   warm-up: {len(warm):,} events at {achieved:,.0f}/s, unmeasured; idle again "
            f"after {time.monotonic() - started:.1f} s"
        )
    await consumer.start()
    sent: dict[str, float] = {}
    written: dict[str, float] = {}
    contributed: dict[str, int] = {}  # trace -> offset of its contribution record
    totals: list[tuple[int, float]] = []  # (last contribution offset included, timestamp)
    done = asyncio.Event()

    def covered() -> int:
        newest = max((o for o, _ in totals), default=-1)
        return sum(1 for o in contributed.values() if o <= newest)

    async def consume() -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=100)
            for tp, records in batch.items():
                for rec in records:
                    # Trace ids and offsets are read from the raw records: decoding every
                    # book here cost this process a fifth of a core, on the worker's cores.
                    if tp.topic == book_topic:
                        for m in VIS_TRACE.finditer(rec.value):
                            written.setdefault(m.group(1).decode(), rec.timestamp / 1000)
                    elif tp.topic == contrib_topic:
                        for m in VIS_TRACE.finditer(rec.value):
                            contributed.setdefault(m.group(1).decode(), rec.offset)
                    else:
                        last = LAST_OFFSET.search(rec.value)
                        if last is not None:
                            totals.append((int(last.group(1)), rec.timestamp / 1000))
            if done.is_set() and (covered() >= len(sent) or time.monotonic() > drain_end):
                return

    await consumer.getmany(timeout_ms=500)  # positioned at the end before producing
    drain_end = float("inf")
    task = asyncio.create_task(consume())
    total = int(rate * seconds)
    # Built before the clock starts: this client shares the worker's two cores.
    events = build_events(n, total, "vis", seed=7)
    pids = {**pids, "bench client": os.getpid()}
    snapshots0 = await snapshots_taken(worker)
    cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
    groups = {name: [pid] for name, pid in pids.items()} | service_pids()
    sched0 = {name: sched_seconds(group) for name, group in groups.items()}
    sending = time.monotonic()
    achieved = await send_paced(producer, input_topic, events, rate, sent)
    sending = time.monotonic() - sending
    sched = {name: sched_seconds(group) for name, group in groups.items()}
    drain_end = time.monotonic() + 30
    done.set()
    await task
    for pid in pids.values():
        if pid != os.getpid():
            await wait_idle(pid)
    cpu = {name: cpu_seconds(pid) - cpu0[name] for name, pid in pids.items()}
    snapshots = await snapshots_taken(worker) - snapshots0
    await consumer.stop()
    await producer.stop()
    # An event is visible from the first totals record whose last applied contribution
    # is at or after the event's own contribution (the portfolio applies them in order).
    totals.sort()
    offsets = [o for o, _ in totals]
    # Totals are produced in order; the earliest record covering an offset is the first.
    firsts: list[float] = []
    earliest = float("inf")
    for _, ts in reversed(totals):
        earliest = min(earliest, ts)
        firsts.append(earliest)
    firsts.reverse()
    visible: dict[str, float] = {}
    for trace, offset in contributed.items():
        i = bisect.bisect_left(offsets, offset)
        if i < len(offsets):
            visible[trace] = firsts[i]
    xs = [(visible[t] - at) * 1000 for t, at in sent.items() if t in visible]
    print(
        f"\n2. event -> portfolio visibility: {len(sent):,} position updates produced to "
        f"the input topic at {achieved:,.0f}/s over {n} assets ({len(xs):,} seen in the "
        "totals changelog: each from the first totals record that includes its contribution)"
    )
    if os.environ.get("BENCH_VERBOSE"):
        t0 = min(sent.values())
        by_second: dict[int, list[float]] = {}
        for t, at in sent.items():
            if t in visible:
                by_second.setdefault(int(at - t0), []).append((visible[t] - at) * 1000)
        for sec, ys in sorted(by_second.items()):
            print(
                f"   second {sec:>3}: n={len(ys):>4} p50 {pct(ys, 50):8.1f} ms"
                f"  p99 {pct(ys, 99):8.1f} ms  max {max(ys):8.1f} ms"
            )
    if worker is not None:
        print(f"   periodic snapshots taken meanwhile: {snapshots:,.0f}")
    for name, used in cpu.items():
        print(
            f"   {name} CPU until idle: {used:.1f} s = {used / total * 1e6:,.0f} µs/event "
            f"({used / (total / rate):.0%} of a core at {rate}/s)"
        )
    shares = []
    for name, (run, wait) in sched.items():
        run0, wait0 = sched0[name]
        shares.append(f"{name} {(run - run0) / sending:.0%} / {(wait - wait0) / sending:.0%}")
    print(
        "   while sending, share of one core on a CPU / runnable but waiting for one: "
        + ", ".join(shares)
    )
    if stages:
        ws_ = [(written[t] - at) * 1000 for t, at in sent.items() if t in written]
        print(
            f"   produce -> position record p50 {pct(ws_, 50):7.1f} ms"
            f"   p99 {pct(ws_, 99):7.1f} ms   max {max(ws_, default=float('nan')):7.1f} ms"
        )
    print(
        f"   produce -> totals record   p50 {pct(xs, 50):7.1f} ms   p99 {pct(xs, 99):7.1f} ms"
        f"   max {max(xs, default=float('nan')):7.1f} ms"
    )


async def snapshots_taken(worker: WorkerProcess | None) -> float:
    """The worker's `pm_snapshots_total` (0 without a worker)."""
    if worker is None:
        return 0.0
    _, text = await worker.get("/metrics")
    return _metric(text, "pm_snapshots_total")


def _metric(text: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in str(text).splitlines()
        if line.startswith(name + " ") or line.startswith(name + "{")
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--positions", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3, help="alternating runs per side")
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--visibility-seconds", type=float, default=10.0)
    parser.add_argument(
        "--warmup-seconds",
        type=float,
        default=40.0,
        help="unmeasured load at --rate before the visibility run (0: none)",
    )
    parser.add_argument("--only", choices=("api", "visibility"), default=None)
    parser.add_argument("--separate-outputs", action="store_true")
    parser.add_argument("--stages", action="store_true")
    parser.add_argument("--outputs-nice", type=int, default=0)
    parser.add_argument(
        "--pin", action="store_true", help="servers under test on CPU 0, wrk on CPU 1"
    )
    parser.add_argument(
        "--profile", type=int, default=0, metavar="S", help="py-spy the worker for S s per route"
    )
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="extra worker environment"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench_api: needs wrk (apt-get install wrk)")
    tmp = Path(tempfile.mkdtemp(prefix="bench-api-"))
    deployment = Deployment(
        tmp,
        extra_env={
            "POSITION_MANAGER_LOG_LEVEL": "WARNING",
            "POSITION_MANAGER_RATE_LIMIT_DEFAULT": "100000000",
            **dict(kv.split("=", 1) for kv in args.env),
        },
    )
    outputs = None
    if args.separate_outputs:
        deployment.extra_env["POSITION_MANAGER_OUTPUTS"] = "separate"
        outputs = WorkerProcess(deployment, command="outputs").start()
        assert outputs.proc is not None
        if args.outputs_nice:
            os.setpriority(os.PRIO_PROCESS, outputs.proc.pid, args.outputs_nice)
    worker = WorkerProcess(deployment).start()
    try:
        # Kafka and the partitions are what this bench needs (it produces to Kafka itself).
        await worker.wait_for(
            "/health",
            lambda s, b: b.get("kafka_connected") and b.get("portfolio_owner"),
            timeout=120,
        )
        t0 = time.monotonic()
        await seed(deployment, worker, args.positions)
        print(
            f"seeded {args.positions} open positions in {time.monotonic() - t0:.1f} s "
            f"(app id {deployment.app_id}, cpus {os.cpu_count()})"
        )
        if args.only != "visibility":
            bodies = await capture(worker, args.positions)
            await asyncio.to_thread(
                throughput,
                worker,
                bodies,
                tmp,
                args.positions,
                args.seconds,
                args.connections,
                args.runs,
                args.profile,
                args.pin,
            )
        if args.only != "api":
            assert worker.proc is not None
            pids = {"worker": worker.proc.pid}
            if outputs is not None:
                assert outputs.proc is not None
                pids["outputs"] = outputs.proc.pid
            await visibility(
                deployment,
                args.positions,
                args.rate,
                args.visibility_seconds,
                pids,
                args.stages,
                args.warmup_seconds,
                worker,
            )
            _, metrics = await worker.get("/metrics")
            print("   worker means (ms):")
            for name in (
                "pm_apply_seconds",
                "pm_portfolio_apply_seconds",
                "pm_portfolio_visibility_seconds",
            ):
                total = _metric(metrics, name + "_sum")
                count = _metric(metrics, name + "_count")
                print(f"     {name:<34} {1000 * total / max(count, 1):8.2f}  (n={count:.0f})")
    finally:
        worker.ensure_stopped()
        if outputs is not None:
            outputs.ensure_stopped()
        deployment.drop()
        if not os.environ.get("BENCH_VERBOSE"):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print("kept", tmp)


if __name__ == "__main__":
    asyncio.run(main())
