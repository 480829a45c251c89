"""Chaos run: a mixed input stream through several workers while they are SIGKILLed and
Kafka, RabbitMQ and Postgres restart; at the end every output equals a naive model.

    .venv/bin/python bench/chaos.py                 # full: 3 workers, 50,000 events
    .venv/bin/python bench/chaos.py --ci            # short: 2 workers, 3,000 events

Injected: fills with fees (flips included), hedge legs, funding settlements, exchange
pushes (a quarter of them stale), fills re-sent up to thousands of events later, and
malformed messages of many kinds, published at a steady rate to the two input queues.
Meanwhile one process is SIGKILLed every `--kill-every` seconds and started again (a
worker, or the outputs process that `scripts/run` runs beside them; `--outputs worker`
keeps the sink and republisher inside each worker), and `scripts/services restart`
restarts Kafka, RabbitMQ and Postgres once each.

Checked against `Model` (written here from the message contract, sharing no code with
the engine): every leg on the API and its Postgres row (size, entry price, realized
PnL, fees, funding, mark price, exchange size, unrealized PnL), the fill ledger (one
row per distinct fill, sizes summing to the position), the event stream (every version
of every position delivered at least once, first deliveries in order, one content per
event id), every malformed message in a dead-letter queue with its reason, and no
worker exiting by itself. Exit status 0 only when all of that holds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import signal
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pm_streams.names import QueueNames
from pm_streams.settings import Settings
from tests.support.rabbit import services
from tests.support.worker import Deployment, WorkerProcess, queue_arguments

AMQP = "amqp://guest:guest@127.0.0.1/"
TOL = Fraction(1, 10**17)


@dataclass
class Leg:
    """One leg, long-hand: signed size, cost basis of the open size, cash results."""

    size: Fraction = Fraction(0)
    basis: Fraction = Fraction(0)
    realized: Fraction = Fraction(0)
    fees: Fraction = Fraction(0)
    funding: Fraction = Fraction(0)
    mark: Fraction | None = None
    exchange_size: Fraction | None = None
    seq: int = -1
    fill_ids: set[str] = field(default_factory=set)
    ledger_size: Fraction = Fraction(0)

    def fill(self, fill_id: str, qty: Fraction, price: Fraction, fee: Fraction) -> None:
        if fill_id in self.fill_ids:
            return  # a re-sent fill
        self.fill_ids.add(fill_id)
        self.fees += fee
        self.realized -= fee
        self.ledger_size += qty
        closing = min(abs(qty), abs(self.size)) if self.size * qty < 0 else Fraction(0)
        if closing:
            avg = self.basis / abs(self.size)
            self.realized += (price - avg) * closing * (1 if self.size > 0 else -1)
            self.basis -= avg * closing
            self.size += closing if qty > 0 else -closing
        opening = abs(qty) - closing
        if opening:
            self.basis += price * opening
            self.size += opening if qty > 0 else -opening
        if self.size == 0:
            self.basis = Fraction(0)

    def funding_paid(self, fill_id: str, amount: Fraction) -> None:
        if fill_id in self.fill_ids:
            return
        self.fill_ids.add(fill_id)
        self.fees += amount
        self.realized -= amount
        self.funding -= amount

    def push(self, seq: int, size: Fraction, mark: Fraction) -> None:
        if seq < self.seq:
            return  # stale
        self.seq, self.exchange_size, self.mark = seq, size, mark

    @property
    def avg(self) -> Fraction:
        return self.basis / abs(self.size) if self.size else Fraction(0)

    @property
    def unrealized(self) -> Fraction:
        if self.size == 0 or self.mark is None:
            return Fraction(0)
        return (self.mark - self.avg) * self.size


@dataclass
class Mix:
    """The generated input, in publish order per queue, and the model it implies."""

    orders: list[bytes] = field(default_factory=list)
    pushes: list[bytes] = field(default_factory=list)
    warmup: list[bytes] = field(default_factory=list)
    legs: dict[tuple[str, str], Leg] = field(default_factory=lambda: defaultdict(Leg))
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def _dec(x: Fraction | Decimal) -> str:
    return str(Decimal(x.numerator) / Decimal(x.denominator) if isinstance(x, Fraction) else x)


def _fill_msg(
    fid: str,
    asset: str,
    side: str,
    qty: Decimal,
    price: Decimal,
    fee: Decimal,
    mode: str,
    **extra: Any,
) -> dict[str, Any]:
    body = {
        "event_type": "order_executed",
        "order_id": f"o-{fid}",
        "execution_id": fid,
        "asset": asset,
        "side": side,
        "execution_price": str(price),
        "execution_quantity": str(qty),
        "execution_fees": str(fee),
        "mode": mode,
        "executed_at": "2026-12-03T10:00:00Z",
        "trace_id": f"t-{fid}",
    }
    body.update(extra)
    return body


def _bad_fill(n: int, **changes: Any) -> bytes:
    """A good fill with `changes` applied (None removes the field)."""
    body = _fill_msg(f"m{n}", "CH0USDT", "BUY", Decimal(1), Decimal(1), Decimal(0), "one-way")
    body.update(changes)
    return orjson.dumps({k: v for k, v in body.items() if v is not None})


def _bad_push(**changes: Any) -> bytes:
    data = {
        "symbol": "CH0USDT",
        "side": "Buy",
        "size": "1",
        "markPrice": "100",
        "mode": "one-way",
        "positionIdx": 0,
        "seq": 1,
    }
    data.update(changes)
    body = {"event_type": "position", "data": {k: v for k, v in data.items() if v is not None}}
    return orjson.dumps(body)


MALFORMED_ORDERS: list[Callable[[int], bytes]] = [
    lambda n: b"{not json " + str(n).encode(),
    lambda n: b'{"asset":"CH0USDT","asset":"X","side":"BUY"}',
    lambda n: _bad_fill(n, asset="CH0USDT\u0000"),
    lambda n: _bad_fill(n, asset=None),
    lambda n: _bad_fill(n, asset="btc-usdt"),
    lambda n: _bad_fill(n, execution_quantity="-1"),
    lambda n: _bad_fill(n, execution_price="0"),
    lambda n: _bad_fill(n, execution_quantity="0.1234567890123456789"),
    lambda n: _bad_fill(n, execution_quantity="1000000000000000000"),
    lambda n: _bad_fill(n, side="HOLD"),
    lambda n: _bad_fill(n, execution_id=None, order_id=None),
    lambda n: _bad_fill(n, execution_quantity="\u0661"),
]
"""Fills the bridge must dead-letter, one kind per entry (`n` makes each unique)."""

MALFORMED_PUSHES: list[Callable[[int], bytes]] = [
    lambda n: b"[" + str(n).encode(),
    lambda n: _bad_push(seq=2**63),
    lambda n: _bad_push(markPrice="1e400"),
    lambda n: _bad_push(symbol=None),
]


def generate(events: int, assets: int, hedged: int, seed: int) -> Mix:
    """The input mix and its expected result (the model follows each queue's order)."""
    rng = random.Random(seed)
    mix = Mix()
    one_way = [f"CH{i}USDT" for i in range(assets)]
    hedge = [f"HG{i}USDT" for i in range(hedged)]
    sent_fills: list[bytes] = []
    seqs: dict[str, int] = defaultdict(int)

    def price() -> Decimal:
        return Decimal(rng.randint(9000, 11000)) / 100

    def qty() -> Decimal:
        return Decimal(rng.randint(1, 5000)) / 1000

    def order(
        fid: str, asset: str, side: str, q: Decimal, p: Decimal, mode: str, out: list[bytes]
    ) -> None:
        fee = (q * p * Decimal("0.0004")).quantize(Decimal("0.000001"))
        raw = orjson.dumps(_fill_msg(fid, asset, side, q, p, fee, mode))
        sign = 1 if side == "BUY" else -1
        mix.legs[(asset, mode)].fill(fid, Fraction(q) * sign, Fraction(p), Fraction(fee))
        out.append(raw)
        sent_fills.append(raw)

    for asset in one_way:  # every leg exists before pushes arrive (their order is free)
        order(f"w-{asset}", asset, "BUY", qty(), price(), "one-way", mix.warmup)
    for asset in hedge:
        for leg, side in (("hedge-long", "BUY"), ("hedge-short", "SELL")):
            order(f"w-{asset}-{leg}", asset, side, qty(), price(), leg, mix.warmup)

    for n in range(events):
        roll = rng.random()
        if roll < 0.03:
            mix.orders.append(rng.choice(MALFORMED_ORDERS)(n))
            mix.counts["malformed_order"] += 1
        elif roll < 0.04:
            mix.pushes.append(rng.choice(MALFORMED_PUSHES)(n))
            mix.counts["malformed_push"] += 1
        elif roll < 0.09:
            mix.orders.append(rng.choice(sent_fills))  # re-sent, any number of fills later
            mix.counts["resent"] += 1
        elif roll < 0.11:
            asset = rng.choice(one_way)
            leg = mix.legs[(asset, "one-way")]
            if leg.size == 0:
                continue
            amount = Decimal(rng.randint(-500, 500) or 1) / 1000
            fid = f"fund-{n}"
            mix.orders.append(
                orjson.dumps(
                    {
                        "event_type": "order_executed",
                        "exec_type": "Funding",
                        "execution_id": fid,
                        "asset": asset,
                        "side": "BUY",
                        "execution_fees": str(amount),
                        "mode": "one-way",
                        "trace_id": f"t-{fid}",
                    }
                )
            )
            leg.funding_paid(fid, Fraction(amount))
            mix.counts["funding"] += 1
        elif roll < 0.23:
            asset = rng.choice(one_way)
            seqs[asset] += 1
            seq = seqs[asset]
            if seq > 5 and rng.random() < 0.25:
                seq = seq - rng.randint(1, 5)  # stale: an older update arriving late
                mix.counts["stale_push"] += 1
            size, mark = qty(), price()
            mix.pushes.append(
                orjson.dumps(
                    {
                        "event_type": "position",
                        "trace_id": f"p-{n}",
                        "data": {
                            "symbol": asset,
                            "side": "Buy",
                            "size": str(size),
                            "markPrice": str(mark),
                            "mode": "one-way",
                            "positionIdx": 0,
                            "updatedTime": str(1_700_000_000_000 + seq),
                            "seq": seq,
                        },
                    }
                )
            )
            mix.legs[(asset, "one-way")].push(seq, Fraction(size), Fraction(mark))
            mix.counts["push"] += 1
        elif roll < 0.33 and hedge:
            asset = rng.choice(hedge)
            leg_mode = rng.choice(("hedge-long", "hedge-short"))
            leg = mix.legs[(asset, leg_mode)]
            opening = "BUY" if leg_mode == "hedge-long" else "SELL"
            closing = "SELL" if opening == "BUY" else "BUY"
            q = qty()
            if rng.random() < 0.4 and leg.size != 0:  # reduce, never past flat
                q = min(q, Decimal(_dec(abs(leg.size))))
                order(f"h-{n}", asset, closing, q, price(), leg_mode, mix.orders)
            else:
                order(f"h-{n}", asset, opening, q, price(), leg_mode, mix.orders)
            mix.counts["hedge_fill"] += 1
        else:
            asset = rng.choice(one_way)
            order(
                f"f-{n}", asset, rng.choice(("BUY", "SELL")), qty(), price(), "one-way", mix.orders
            )
            mix.counts["fill"] += 1
    return mix


async def publish_paced(queue: str, bodies: list[bytes], rate: float) -> None:
    """Publish in order at `rate`/s with confirms, riding out a RabbitMQ restart."""
    sent, start = 0, time.monotonic()
    while sent < len(bodies):
        try:
            connection = await aio_pika.connect(AMQP, timeout=5)
            async with connection:
                channel = await connection.channel(publisher_confirms=True)
                await channel.declare_queue(queue, durable=True, arguments=queue_arguments())
                while sent < len(bodies):
                    due = start + sent / rate
                    if (wait := due - time.monotonic()) > 0:
                        await asyncio.sleep(wait)
                    await channel.default_exchange.publish(
                        aio_pika.Message(
                            bodies[sent], delivery_mode=aio_pika.DeliveryMode.PERSISTENT
                        ),
                        routing_key=queue,
                        timeout=10,
                    )
                    sent += 1
        except Exception:  # aio-pika's errors while the broker restarts share no base
            await asyncio.sleep(1)  # the broker restarts: a message may go twice, as in life


async def drain(queue: str, idle: float = 2.0) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Everything in `queue` until it stays empty for `idle` seconds (removed)."""
    out: list[Any] = []
    connection = await aio_pika.connect(AMQP)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=2000)
        q = await channel.declare_queue(queue, passive=True)
        got: asyncio.Queue[Any] = asyncio.Queue()
        tag = await q.consume(got.put, no_ack=True)
        while True:
            try:
                out.append(await asyncio.wait_for(got.get(), idle))
            except TimeoutError:
                break
        await q.cancel(tag)
    return out


class Fleet:
    """The workers (and, as `scripts/run` runs them, the outputs process): started,
    SIGKILLed and restarted; an exit nobody asked for is noted."""

    def __init__(self, deployment: Deployment, count: int, outputs: int) -> None:
        self.deployment = deployment
        self.workers = [WorkerProcess(deployment) for _ in range(count)]
        self.outputs = [WorkerProcess(deployment, command="outputs") for _ in range(outputs)]
        self.kills = 0
        self.unasked_exits: list[str] = []

    @property
    def members(self) -> list[tuple[list[WorkerProcess], int]]:
        return [(group, i) for group in (self.workers, self.outputs) for i in range(len(group))]

    def start(self) -> None:
        for group, i in self.members:
            group[i].start()

    def _restart(self, group: list[WorkerProcess], i: int) -> None:
        old = group[i]
        group[i] = WorkerProcess(self.deployment, port=old.port, command=old.command).start()

    def check(self) -> None:
        for group, i in self.members:
            member = group[i]
            if member.proc is not None and member.proc.poll() is not None:
                what = f"{member.command} {i}"
                self.unasked_exits.append(f"{what} exit {member.proc.returncode}")
                print(f"  !! {what} exited by itself ({member.proc.returncode})")
                print(member.tail(30))
                self._restart(group, i)

    async def kill_one(self) -> str:
        """SIGKILL the next process in turn (every one is killed as often as the others)
        and start it again a second later; which one it was."""
        group, i = self.members[self.kills % len(self.members)]
        group[i].kill()
        self.kills += 1
        await asyncio.sleep(1)
        self._restart(group, i)
        return f"{group[i].command} {i}"

    def stop(self) -> None:
        for group, i in self.members:
            group[i].ensure_stopped()


async def chaos(fleet: Fleet, args: argparse.Namespace, done: asyncio.Event) -> list[str]:
    """Kill a process every `kill_every` s, in turn; restart each service once along the
    way (at 15 %, 40 %, 65 % ... of the publishing time)."""
    injected: list[str] = []
    started = time.monotonic()

    def note(what: str) -> None:
        injected.append(f"{time.monotonic() - started:6.1f}s {what}")

    async def restarts() -> None:
        for n, name in enumerate(args.restart):
            due = started + (0.15 + 0.25 * n) * args.duration
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            note(f"restart {name}")
            await asyncio.to_thread(services, "restart", name)
            note(f"{name} back")

    restarter = asyncio.create_task(restarts())
    next_kill = started + args.kill_every
    while not done.is_set():
        await asyncio.sleep(0.5)
        fleet.check()
        if time.monotonic() >= next_kill:
            killed = await fleet.kill_one()
            note(f"SIGKILL {killed} (restarted 1 s later)")
            next_kill = time.monotonic() + args.kill_every
    await restarter
    return injected


async def api_state(worker: WorkerProcess, asset: str, mode: str) -> tuple[int, Any]:
    return await worker.get(f"/api/v1/positions/{asset}", mode=mode)


def _close(a: Any, b: Fraction | None) -> bool:
    if b is None:
        return a is None
    return a is not None and abs(Fraction(Decimal(str(a))) - b) <= TOL


def compare(body: dict[str, Any], leg: Leg) -> list[str]:
    """Field by field: the API body (or a Postgres row) against the model's leg."""
    want = {
        "size": leg.size,
        "average_entry_price": leg.avg if leg.size else None,
        "realized_pnl": leg.realized,
        "total_fees": leg.fees,
        "funding_pnl": leg.funding,
        "current_price": leg.mark,
        "exchange_size": leg.exchange_size,
        "unrealized_pnl": leg.unrealized,
    }
    out = []
    for name, value in want.items():
        if name == "average_entry_price" and value is None:
            continue  # a flat leg's entry price is not defined by the contract
        if name in body and not _close(body[name], value):
            out.append(f"{name} {body[name]} != {_dec(value) if value is not None else None}")
    return out


async def converge(fleet: Fleet, mix: Mix, timeout: float) -> dict[tuple[str, str], Any]:
    """Poll the API until every leg equals the model (or the timeout); the last bodies."""
    deadline = time.monotonic() + timeout
    last: dict[tuple[str, str], Any] = {}
    while True:
        fleet.check()
        worker = fleet.workers[0]
        bad = []
        for (asset, mode), leg in mix.legs.items():
            with contextlib.suppress(Exception):
                status, body = await api_state(worker, asset, mode)
                last[(asset, mode)] = (status, body)
            status, body = last.get((asset, mode), (0, None))
            if status == 404 and leg.size == 0:
                continue
            if status != 200 or compare(body, leg):
                bad.append((asset, mode))
        if not bad or time.monotonic() > deadline:
            return last
        await asyncio.sleep(1)


async def postgres_rows(deployment: Deployment) -> tuple[dict[Any, Any], dict[Any, Any]]:
    settings = Settings()
    connection = await asyncpg.connect(settings.postgres_dsn)
    try:
        schema = deployment.schema
        rows = await connection.fetch(f'SELECT * FROM "{schema}".positions')
        ledger = await connection.fetch(
            f"SELECT asset, mode, count(*) AS n, count(DISTINCT fill_id) AS ids, "
            f'sum(quantity) AS qty FROM "{schema}".position_fills GROUP BY asset, mode'
        )
    finally:
        await connection.close()
    return {(r["asset"], r["mode"]): dict(r) for r in rows}, {
        (r["asset"], r["mode"]): dict(r) for r in ledger
    }


def check_events(queues: list[list[Any]], finals: dict[tuple[str, str], Any]) -> list[str]:
    """Every version of every position at least once (over the queues), first deliveries
    in version order within each queue, one content per event id."""
    problems = []
    seen: dict[str, list[int]] = defaultdict(list)
    content: dict[str, tuple[Any, ...]] = {}
    for messages in queues:
        order: dict[str, list[int]] = defaultdict(list)
        for message in messages:
            body = orjson.loads(message.body)
            key = (body["version"], body["size"], body["realized_pnl"], body["event_type"])
            if content.setdefault(body["event_id"], key) != key:
                problems.append(f"event {body['event_id']} delivered with two contents")
            if body["version"] not in order[body["id"]]:
                order[body["id"]].append(body["version"])
        for pid, versions in order.items():
            if versions != sorted(versions):
                problems.append(f"position {pid}: first deliveries out of order {versions[:20]}")
            seen[pid] = sorted({*seen[pid], *versions})
    for pid, versions in seen.items():
        if sorted(versions) != list(range(1, max(versions) + 1)):
            missing = set(range(1, max(versions) + 1)) - set(versions)
            problems.append(f"position {pid}: versions missing {sorted(missing)[:10]}")
    for (asset, mode), (status, body) in finals.items():
        if status == 200 and max(seen.get(body["id"], [0])) != body["version"]:
            problems.append(f"{asset} {mode}: no event for the final version {body['version']}")
    return problems


async def inject(fleet: Fleet, mix: Mix, args: argparse.Namespace) -> None:
    """Publish the warm-up, then the mix at a steady rate while `chaos` runs."""
    deployment = fleet.deployment
    await publish_paced(deployment.order_queue, mix.warmup, 500)
    await converge(fleet, _warmup_model(mix), 120)
    started = time.monotonic()
    done = asyncio.Event()
    injecting = asyncio.create_task(chaos(fleet, args, done))
    await asyncio.gather(
        publish_paced(deployment.order_queue, mix.orders, len(mix.orders) / args.duration),
        publish_paced(deployment.position_queue, mix.pushes, len(mix.pushes) / args.duration),
    )
    done.set()
    injected = await injecting
    print(f"published in {time.monotonic() - started:.1f}s; injected:")
    for line in injected:
        print("  " + line)


def check_legs(
    mix: Mix, finals: dict[tuple[str, str], Any], rows: dict[Any, Any], ledger: dict[Any, Any]
) -> list[str]:
    """Each leg on the API, its Postgres row and its ledger rows against the model."""
    failures = []
    for (asset, mode), leg in sorted(mix.legs.items()):
        status, body = finals.get((asset, mode), (0, None))
        if status == 200:
            failures += [f"API {asset} {mode}: {d}" for d in compare(body, leg)]
        elif not (status == 404 and leg.size == 0):
            failures.append(f"API {asset} {mode}: {status} {body}")
        row = rows.get((asset, mode))
        if row is None:
            failures.append(f"Postgres {asset} {mode}: no row")
            continue
        failures += [f"Postgres {asset} {mode}: {d}" for d in compare(row, leg)]
        led = ledger.get((asset, mode), {"n": 0, "ids": 0, "qty": 0})
        if led["n"] != len(leg.fill_ids) or led["ids"] != led["n"]:
            failures.append(f"ledger {asset} {mode}: {led['n']} rows, {len(leg.fill_ids)} fills")
        if not _close(led["qty"] or 0, leg.ledger_size):
            failures.append(f"ledger {asset} {mode}: sizes sum to {led['qty']}")
    return failures


async def check_dead_letters(deployment: Deployment, mix: Mix) -> tuple[list[str], str]:
    """Every malformed message dead-lettered with a reason (a re-publish after a broker
    restart may add a copy)."""
    dead = [
        *await drain(QueueNames.dlq(deployment.order_queue)),
        *await drain(QueueNames.dlq(deployment.position_queue)),
    ]
    malformed = mix.counts["malformed_order"] + mix.counts["malformed_push"]
    reasons = {str((m.headers or {}).get("x-reject-reason")) for m in dead}
    no_reason = sum(1 for m in dead if not (m.headers or {}).get("x-reject-reason"))
    failures = []
    if len(dead) < malformed or no_reason:
        failures.append(f"DLQ: {len(dead)} for {malformed} malformed, {no_reason} without reason")
    return failures, f"{len(dead)} dead letters ({malformed} sent, {len(reasons)} reasons)"


async def verify(fleet: Fleet, mix: Mix, args: argparse.Namespace) -> list[str]:
    """Everything the run promises, against the model; prints what it checked."""
    deployment = fleet.deployment
    started = time.monotonic()
    finals = await converge(fleet, mix, args.settle)
    settled = time.monotonic() - started
    rows, ledger = await _settled_postgres(deployment, finals)
    failures = [*fleet.unasked_exits, *check_legs(mix, finals, rows, ledger)]
    events = [
        await drain(f"{deployment.output_prefix}.position_updated"),
        await drain(f"{deployment.output_prefix}.position_closed"),
    ]
    failures += check_events(events, finals)
    dead_failures, dead = await check_dead_letters(deployment, mix)
    failures += dead_failures
    fills = sum(len(leg.fill_ids) for leg in mix.legs.values())
    print(
        f"checked {settled:.1f}s after the last publish: {len(mix.legs)} legs on the API and "
        f"in Postgres, a ledger of {fills} fills, {sum(map(len, events))} events, {dead}, "
        f"{fleet.kills} SIGKILLs, {len(fleet.unasked_exits)} unasked exits"
    )
    return failures


async def run(args: argparse.Namespace) -> int:
    mix = generate(args.events, args.assets, args.hedged, args.seed)
    print(
        f"mix: {len(mix.orders)} order messages, {len(mix.pushes)} exchange pushes, "
        f"{dict(sorted(mix.counts.items()))}"
    )
    deployment = Deployment(
        Path(tempfile.mkdtemp(prefix="pm-chaos-")),
        partitions=args.partitions,
        extra_env={
            "POSITION_MANAGER_SIZE_VALIDATION_THRESHOLD": "100000000000000000",
            "POSITION_MANAGER_OUTPUTS": args.outputs,
        },
    )
    fleet = Fleet(deployment, args.workers, outputs=int(args.outputs == "separate"))
    try:
        fleet.start()
        for worker in fleet.workers:
            await worker.wait_ready()
        for outputs in fleet.outputs:
            await outputs.wait_healthy()
        await inject(fleet, mix, args)
        failures = await verify(fleet, mix, args)
    finally:
        fleet.stop()
        if not args.keep:
            deployment.drop(strict=False)
    for line in failures[:50]:
        print("FAIL " + line)
    print("RESULT " + ("ok" if not failures else f"{len(failures)} failures"))
    return 0 if not failures else 1


def _warmup_model(mix: Mix) -> Mix:
    """The model of the warm-up alone (for waiting until it is applied)."""
    warm = Mix()
    for raw in mix.warmup:
        body = orjson.loads(raw)
        mode = body["mode"]
        sign = 1 if body["side"] == "BUY" else -1
        warm.legs[(body["asset"], mode)].fill(
            body["execution_id"],
            Fraction(Decimal(body["execution_quantity"])) * sign,
            Fraction(Decimal(body["execution_price"])),
            Fraction(Decimal(body["execution_fees"])),
        )
    return warm


async def _settled_postgres(
    deployment: Deployment, finals: dict[tuple[str, str], Any]
) -> tuple[dict[Any, Any], dict[Any, Any]]:
    """Postgres once the sink caught up with the API's final versions (60 s at most)."""
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(Exception):
            rows, ledger = await postgres_rows(deployment)
            behind = [
                key
                for key, (status, body) in finals.items()
                if status == 200 and (rows.get(key) or {}).get("version") != body["version"]
            ]
            if not behind or time.monotonic() > deadline:
                return rows, ledger
        await asyncio.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ci", action="store_true", help="the short variant for the test suite")
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--assets", type=int, default=16)
    parser.add_argument("--hedged", type=int, default=4)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument(
        "--outputs",
        choices=["separate", "worker"],
        default="separate",
        help="the sink and republisher in their own process (as scripts/run) or in each worker",
    )
    parser.add_argument("--duration", type=float, default=150.0, help="seconds of publishing")
    parser.add_argument("--kill-every", type=float, default=10.0)
    parser.add_argument("--restart", nargs="*", default=["kafka", "rabbitmq", "postgres"])
    parser.add_argument("--settle", type=float, default=240.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep topics, queues and schema")
    args = parser.parse_args()
    for noisy in ("aio_pika", "aiormq"):  # reconnect attempts while RabbitMQ restarts
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    if args.ci:
        args.events, args.workers, args.duration, args.settle = 3_000, 2, 45.0, 120.0
    with contextlib.suppress(KeyboardInterrupt):
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
