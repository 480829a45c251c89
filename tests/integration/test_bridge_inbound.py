"""The inbound bridge against real RabbitMQ, Kafka and `pm-streams worker` subprocesses:
dead-lettering of every kind of bad input, no double application on redelivery, and
per-asset order across two workers (single-active-consumer with failover)."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import orjson
import pytest

from tests.support.rabbit import (
    collect,
    fill,
    fill_stream,
    matches,
    read_queue,
    recompute,
)
from tests.support.worker import Deployment, WorkerProcess, publish

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

POSITIONS = "/api/v1/positions/"


def _fill_bytes(**changes: Any) -> bytes:
    return orjson.dumps({**fill("bad", "BUY", "1", "100", asset="ETHUSDT"), **changes})


def _ws(**data: Any) -> bytes:
    base = {"symbol": "SOLUSDT", "side": "Buy", "size": "1", "avgPrice": "100"}
    return orjson.dumps({"event_type": "position", "data": {**base, **data}})


#: (body, field named in the reject header); every one of them must stay out of Kafka.
BAD_FILLS = [
    (b"{not json", "body"),
    (b"[1, 2]", "body"),
    (orjson.dumps({"event_type": "order_executed", "asset": "ETHUSDT"}), "execution_quantity"),
    (_fill_bytes(execution_quantity="abc"), "execution_quantity"),
    (_fill_bytes(execution_quantity="-1"), "execution_quantity"),
    (_fill_bytes(execution_price="-5"), "execution_price"),
    (_fill_bytes(asset="eth-usdt"), "asset"),
    (_fill_bytes(side="HOLD"), "side"),
    (_fill_bytes(mode="hedge"), "position_idx"),  # a hedge fill that names no leg
    (_fill_bytes(padding="x" * 200_000), "body"),
    # SPEC rev 2
    (_fill_bytes(execution_id="e\u0000-1"), "execution_id"),  # NUL
    (_fill_bytes(order_id="o-\u001b[31m"), "order_id"),  # an escape sequence
    (
        b'{"event_type": "order_executed", "asset": "ETHUSDT", "side": "BUY",'
        b' "execution_id": "d-1", "execution_price": "100", "execution_quantity": "1",'
        b' "execution_quantity": "9"}',
        "execution_quantity",
    ),  # duplicate key
    (_fill_bytes(execution_quantity="\u0661\u0662"), "execution_quantity"),  # Arabic-Indic
    (_fill_bytes(execution_price="1000000000000000000"), "execution_price"),  # 10^18
    (_fill_bytes(execution_fees="0.0000000000000000001"), "execution_fees"),  # 19 places
    (_fill_bytes(execution_id=None, executed_at=None), "execution_id"),  # unidentifiable
]
BAD_UPDATES = [
    (b"\xff\xfe", "body"),
    (orjson.dumps({"event_type": "position"}), "data"),
    (_ws(symbol="sol"), "symbol"),
    (_ws(size="many"), "size"),
    (_ws(size="-2"), "size"),
    (_ws(side="Up"), "side"),
    (_ws(seq="9223372036854775808"), "seq"),  # 2^63
    (_ws(updatedTime=9999999999999999999), "updatedTime"),
]


async def test_malformed_inputs_are_dead_lettered_and_change_nothing(
    deployment: Deployment, workers: list[WorkerProcess]
) -> None:
    worker = WorkerProcess(deployment).start()
    workers.append(worker)
    await worker.wait_healthy()

    # Bad messages first, then a good one behind them on each queue: the queue is not
    # blocked, and once the good ones are applied every bad one has been handled.
    await publish(deployment.order_queue, [b for b, _ in BAD_FILLS])
    await publish(deployment.position_queue, [b for b, _ in BAD_UPDATES])
    await publish(deployment.order_queue, [fill("ok-1", "BUY", "2", "10", asset="OKUSDT")])
    await publish(
        deployment.position_queue,
        [{"data": {"symbol": "OKWSUSDT", "side": "Sell", "size": "3", "avgPrice": "7"}}],
    )
    await worker.wait_for(POSITIONS + "OKUSDT", lambda s, b: s == 200 and b["size"] == "2")
    await worker.wait_for(POSITIONS + "OKWSUSDT", lambda s, b: s == 200 and b["size"] == "-3")

    for queue, cases in (
        (deployment.order_queue, BAD_FILLS),
        (deployment.position_queue, BAD_UPDATES),
    ):
        count = len(cases)
        dead = await collect(queue + ".dlq", lambda got, n=count: len(got) >= n, timeout=30)
        assert len(dead) == len(cases)
        # Same bodies, same order, each with the field and reason of its rejection.
        for (body, field), message in zip(cases, dead, strict=True):
            assert message.raw == body
            assert message.headers["x-reject-field"] == field, (field, message.headers)
            assert f"field '{field}'" in message.headers["x-reject-reason"]
            assert message.headers["x-source-queue"] == queue
            assert message.headers["x-trace-id"]
            assert message.persistent
        assert await read_queue(queue, ack=False) == []  # nothing left, nothing stuck

    # Positions unchanged: none of the assets in the bad messages exists.
    for asset in ("ETHUSDT", "SOLUSDT"):
        status, _ = await worker.get(POSITIONS + asset)
        assert status == 404, asset
    # Nothing published for them: only the two good inputs produced events.
    updated = await collect(
        f"{deployment.output_prefix}.position_updated", lambda got: len(got) >= 2
    )
    assert sorted(m.body["asset"] for m in updated if isinstance(m.body, dict)) == [
        "OKUSDT",
        "OKWSUSDT",
    ]
    assert await read_queue(f"{deployment.output_prefix}.position_closed") == []
    # Counted in metrics by field.
    _, text = await worker.get("/metrics")
    assert 'pm_rejects_total{field="body",source="order_executed"} 3' in text, text


async def test_forwarded_and_rejected_inputs_are_counted_exactly(
    deployment: Deployment, workers: list[WorkerProcess]
) -> None:
    # Queued before the worker starts, so they reach the bridge as one burst: good
    # fills with a rejected message last must still be counted as forwarded.
    good = [fill(f"cnt-{i}", "BUY", "1", "10", asset="CNTUSDT") for i in range(5)]
    await publish(deployment.order_queue, [*good, b"{not json"])
    worker = WorkerProcess(deployment).start()
    workers.append(worker)
    await worker.wait_healthy()
    await worker.wait_for(POSITIONS + "CNTUSDT", lambda s, b: s == 200 and b["size"] == "5")
    await collect(deployment.order_queue + ".dlq", lambda got: len(got) >= 1, timeout=30)
    expected = {
        'pm_events_in_total{result="forwarded",source="order_executed"} 5',
        'pm_events_in_total{result="rejected",source="order_executed"} 1',
    }
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        _, text = await worker.get("/metrics")
        lines = {line for line in text.splitlines() if line.startswith("pm_events_in_total")}
        if expected <= lines or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.2)
    assert expected <= lines, lines


async def test_redelivered_and_duplicate_fills_apply_once(
    deployment: Deployment, workers: list[WorkerProcess]
) -> None:
    worker = WorkerProcess(deployment).start()
    workers.append(worker)
    await worker.wait_healthy()

    # The same fill published twice (an upstream retry, or a redelivery of a message
    # already forwarded): applied once.
    first = fill("dup-1", "BUY", "1", "100", asset="DUPUSDT")
    await publish(
        deployment.order_queue,
        [first, first, fill("dup-2", "BUY", "1", "200", asset="DUPUSDT"), first],
    )
    body = await worker.wait_for(POSITIONS + "DUPUSDT", lambda s, b: s == 200 and b["size"] == "2")
    await asyncio.sleep(1.0)
    status, body = await worker.get(POSITIONS + "DUPUSDT")
    assert status == 200 and body["size"] == "2" and body["version"] == 2
    assert body["average_entry_price"] == "150"

    # SIGKILL mid-stream: deliveries forwarded to Kafka but not yet acked are
    # redelivered to the next worker and forwarded again; none is applied twice.
    fills = fill_stream(["KILLAUSDT", "KILLBUSDT", "KILLCUSDT"], 700, tag="k")
    await publish(deployment.order_queue, fills)
    await worker.wait_for(
        POSITIONS + "KILLAUSDT", lambda s, b: s == 200 and b["version"] >= 50, timeout=60
    )
    assert worker.signal(signal.SIGKILL) == -signal.SIGKILL
    worker = WorkerProcess(deployment, port=worker.port).start()
    workers.append(worker)
    await worker.wait_healthy()
    expected = recompute(fills)
    for asset, book in expected.items():
        await worker.wait_for(
            POSITIONS + asset, lambda s, b, bk=book: s == 200 and matches(b, bk), timeout=90
        )
    status, body = await worker.get(POSITIONS + "DUPUSDT")
    assert body["version"] == 2


async def test_single_active_consumer_keeps_per_asset_order_across_failover(
    deployment: Deployment, workers: list[WorkerProcess]
) -> None:
    first = WorkerProcess(deployment).start()
    workers.append(first)
    await first.wait_healthy()
    second = WorkerProcess(deployment).start()
    workers.append(second)
    await second.wait_healthy()

    # Order-dependent fills (reductions and flips) for a few assets, in several
    # bursts; the active bridge is killed in the middle and the other one takes over.
    fills = fill_stream(["SACAUSDT", "SACBUSDT"], 600, tag="s")
    half = len(fills) // 2
    await publish(deployment.order_queue, fills[:half])
    await second.wait_for(
        POSITIONS + "SACAUSDT", lambda s, b: s == 200 and b["version"] >= 100, timeout=60
    )
    # The first worker declared the queue first, so its bridge is the active consumer;
    # stopping it hands the queue to the other bridge. (SIGTERM: the SIGKILL case of
    # the bridge is covered above; a SIGKILL of one of two workers exercises the
    # agents' crash recovery, which has its own tests.)
    assert first.stop() == 0
    await publish(deployment.order_queue, fills[half:])
    expected = recompute(fills)
    for asset, book in expected.items():
        await second.wait_for(
            POSITIONS + asset, lambda s, b, bk=book: s == 200 and matches(b, bk), timeout=90
        )
    assert await read_queue(deployment.order_queue + ".dlq") == []


async def test_json_numbers_are_exact_and_the_same_seq_is_not_stale(
    deployment: Deployment, workers: list[WorkerProcess]
) -> None:
    """SPEC §3.1 rev 2: a JSON number is read from its own text; an exchange push with
    the same `seq` as the last applied one and a new mark price is applied."""
    worker = WorkerProcess(deployment).start()
    workers.append(worker)
    await worker.wait_healthy()
    body = orjson.dumps(fill("num-1", "BUY", "1", "100", asset="NUMUSDT"))
    body = body.replace(b'"execution_quantity":"1"', b'"execution_quantity":987654321.87654321')
    await publish(deployment.order_queue, [body])
    got = await worker.wait_for(POSITIONS + "NUMUSDT", lambda s, b: s == 200)
    assert got["size"] == "987654321.87654321"

    push = {"event_type": "position", "data": {"symbol": "NUMUSDT", "side": "Buy",
            "size": "987654321.87654321", "seq": 7, "markPrice": "101"}}  # fmt: skip
    await publish(deployment.position_queue, [push])
    await worker.wait_for(POSITIONS + "NUMUSDT", lambda s, b: b["current_price"] == "101")
    push["data"]["markPrice"] = "102"  # type: ignore[index]
    await publish(deployment.position_queue, [push])
    got = await worker.wait_for(POSITIONS + "NUMUSDT", lambda s, b: b["current_price"] == "102")
    assert got["version"] == 3


#: Five more kinds, for 30 in all with BAD_FILLS and BAD_UPDATES.
MORE_BAD_FILLS = [
    (_fill_bytes(execution_quantity="NaN"), "execution_quantity"),
    (_fill_bytes(asset="B"), "asset"),
    (_fill_bytes(event_type="order_cancelled"), "event_type"),
    (_fill_bytes(executed_at="yesterday"), "executed_at"),
    (_fill_bytes(execution_fees="1e400"), "execution_fees"),
]


async def test_a_thousand_malformed_messages_of_thirty_kinds_change_nothing(
    deployment: Deployment, workers: list[WorkerProcess]
) -> None:
    """Issue 24: 1,000 rejected messages (every rejection reason of SPEC §3.3 rev 2)
    interleaved with good fills: all dead-lettered with their reasons, the good fills
    applied exactly, nothing else changed."""
    kinds = [*BAD_FILLS, *MORE_BAD_FILLS]
    assert len(kinds) + len(BAD_UPDATES) >= 30
    good = fill_stream(["VOLAUSDT", "VOLBUSDT"], 50, tag="vol")
    orders = [kinds[i % len(kinds)][0] for i in range(900)]
    # 900 bad fills with the 100 good ones spread among them, and 100 bad updates.
    mixed: list[Any] = []
    for i, bad in enumerate(orders):
        mixed.append(bad)
        if i % 9 == 8:
            mixed.append(good[i // 9])
    updates = [BAD_UPDATES[i % len(BAD_UPDATES)][0] for i in range(100)]
    worker = WorkerProcess(deployment).start()
    workers.append(worker)
    await worker.wait_healthy()
    await publish(deployment.order_queue, mixed)
    await publish(deployment.position_queue, updates)

    want = recompute(good)
    for asset, book in want.items():
        await worker.wait_for(
            POSITIONS + asset, lambda s, b, book=book: s == 200 and matches(b, book), timeout=90
        )
    dead_orders = await collect(
        deployment.order_queue + ".dlq", lambda got: len(got) >= 900, timeout=60
    )
    dead_updates = await collect(
        deployment.position_queue + ".dlq", lambda got: len(got) >= 100, timeout=60
    )
    assert len(dead_orders) == 900 and len(dead_updates) == 100
    fields = {m.headers["x-reject-field"] for m in [*dead_orders, *dead_updates]}
    assert fields >= {f for _, f in [*kinds, *BAD_UPDATES]}
    assert all(m.headers["x-reject-reason"] for m in [*dead_orders, *dead_updates])
    status, body = await worker.get("/api/v1/positions", include_closed="true")
    assert status == 200
    assert sorted(p["asset"] for p in body["positions"]) == sorted(want)
