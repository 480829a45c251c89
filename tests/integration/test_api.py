"""The REST API of SPEC §7 against one real worker (real Kafka, RabbitMQ, Postgres).

Seed cases TC-009…TC-016 and TC-021 as the SPEC decides them, the error shape, the
OpenAPI document (every registered route described; schemathesis finds no server
error and no response contradicting it), /metrics, portfolio events and history.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from pm_streams.domain import DECIMAL_CONTEXT, decimal_text
from tests.support.worker import API_KEY, Deployment, WorkerProcess, drain, publish

pytestmark = pytest.mark.integration

TIGHT_KEY = "tight-key-0123456789"
MAX_EXPOSURE = "500000"


def ws(asset: str, size: str, avg: str, mark: str, upnl: str, side: str = "Buy") -> dict[str, Any]:
    return {
        "event_type": "position",
        "trace_id": f"tr-{asset}-{size}-{mark}",
        "data": {
            "symbol": asset,
            "side": side,
            "size": size,
            "avgPrice": avg,
            "markPrice": mark,
            "unrealisedPnl": upnl,
            "realisedPnl": "0",
            "mode": "one-way",
        },
    }


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Deployment, WorkerProcess]]:
    deployment = Deployment(
        tmp_path_factory.mktemp("api"),
        extra_env={
            "POSITION_MANAGER_API_KEYS": f"tight:{TIGHT_KEY}:5,ui:ui-key-abcdefghij:1000",
            "POSITION_MANAGER_PORTFOLIO_WINDOW": "2",
            "POSITION_MANAGER_PORTFOLIO_EVENT_INTERVAL": "1",
            "POSITION_MANAGER_MAX_EXPOSURE_USDT": MAX_EXPOSURE,
        },
    )
    worker = WorkerProcess(deployment).start()
    try:
        asyncio.run(worker.wait_healthy())
        asyncio.run(
            publish(
                deployment.position_queue,
                [
                    ws("BTCUSDT", "1.0", "49850", "50000.00", "150.00"),
                    ws("ETHUSDT", "10.0", "3005", "3000.00", "-50.00"),
                ],
            )
        )
        yield deployment, worker
    finally:
        worker.ensure_stopped()
        deployment.drop(strict=False)


async def request(
    worker: WorkerProcess, path: str, key: str | None = API_KEY, method: str = "GET", **params: str
) -> tuple[int, Any, Any]:
    headers = {} if key is None else {"X-API-Key": key}
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, worker.url + path, params=params, headers=headers) as resp,
    ):
        raw = await resp.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = raw.decode()
        return resp.status, body, resp.headers


def D(x: Any) -> Decimal:
    return Decimal(str(x))


async def test_tc009_tc010_exposure_and_pnl(api: tuple[Deployment, WorkerProcess]) -> None:
    _, worker = api
    body = await worker.wait_for(
        "/api/v1/portfolio/exposure",
        lambda s, b: s == 200 and len(b["by_asset"]) == 2,
    )
    assert D(body["total_exposure_usdt"]) == D("80000.00")
    assert set(body["by_asset"]) == {"BTCUSDT", "ETHUSDT"}
    assert D(body["by_asset"]["ETHUSDT"]["exposure_usdt"]) == D("30000")
    status, pnl, _ = await request(worker, "/api/v1/portfolio/pnl")
    assert status == 200
    assert D(pnl["total_unrealized_pnl_usdt"]) == D("100.00")
    assert D(pnl["total_realized_pnl_usdt"]) == 0
    assert D(pnl["by_asset"]["BTCUSDT"]["unrealized_pnl_usdt"]) == D("150")


async def test_tc011_no_stale_cache_every_change_is_visible(
    api: tuple[Deployment, WorkerProcess],
) -> None:
    """The seed's 5-10 s cache is gone (SPEC §5): a change shows on the next reads."""
    deployment, worker = api
    await worker.wait_for("/api/v1/portfolio", lambda s, b: s == 200 and len(b["by_asset"]) >= 2)
    _, before, _ = await request(worker, "/api/v1/portfolio")
    await publish(deployment.position_queue, [ws("BTCUSDT", "1.0", "49850", "51000", "1150")])
    started = time.monotonic()
    after = await worker.wait_for(
        "/api/v1/portfolio",
        lambda s, b: s == 200 and D(b["by_asset"]["BTCUSDT"]["exposure_usdt"]) == D("51000"),
        timeout=10,
    )
    assert time.monotonic() - started < 2.0
    assert after["calculated_at"] > before["calculated_at"]
    assert D(after["total_unrealized_pnl_usdt"]) == D("1100")
    # Back to the seed's prices for the other tests.
    await publish(deployment.position_queue, [ws("BTCUSDT", "1.0", "49850", "50000.00", "150")])
    await worker.wait_for(
        "/api/v1/portfolio",
        lambda s, b: s == 200 and D(b["by_asset"]["BTCUSDT"]["exposure_usdt"]) == D("50000"),
    )


async def test_tc012_list_and_filters(api: tuple[Deployment, WorkerProcess]) -> None:
    deployment, worker = api
    await publish(deployment.position_queue, [ws("SOLUSDT", "100.0", "100", "100", "0")])
    body = await worker.wait_for("/api/v1/positions", lambda s, b: s == 200 and b["count"] == 3)
    assert [p["asset"] for p in body["positions"]] == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    for p in body["positions"]:
        assert {"unrealized_pnl_pct", "time_held_minutes", "position_size_norm"} <= set(p)
    # position_size_norm uses the live total exposure (50000 + 30000 + 10000)
    await worker.wait_for(
        "/api/v1/portfolio/exposure",
        lambda s, b: s == 200 and D(b["total_exposure_usdt"]) == D("90000"),
    )
    _, body, _ = await request(worker, "/api/v1/positions")
    btc = body["positions"][0]
    with localcontext(DECIMAL_CONTEXT):
        assert btc["position_size_norm"] == decimal_text(D(50000) / D(90000))
    status, body, _ = await request(worker, "/api/v1/positions", asset="BTCUSDT")
    assert status == 200 and [p["asset"] for p in body["positions"]] == ["BTCUSDT"]
    status, body, _ = await request(worker, "/api/v1/positions", size_min="5.0")
    assert status == 200 and [p["asset"] for p in body["positions"]] == ["ETHUSDT", "SOLUSDT"]
    status, body, _ = await request(worker, "/api/v1/positions", size_min="5", size_max="50")
    assert [p["asset"] for p in body["positions"]] == ["ETHUSDT"]
    status, body, _ = await request(worker, "/api/v1/positions", mode="hedge-long")
    assert status == 200 and body == {"positions": [], "count": 0}


@pytest.mark.parametrize(
    ("params", "status", "name"),
    [
        ({"asset": "btc-usdt"}, 400, "asset"),
        ({"mode": "sideways"}, 400, "mode"),
        ({"size_min": "abc"}, 400, "size_min"),
        ({"size_min": "-1"}, 400, "size_min"),
        ({"size_max": "1e400"}, 400, "size_max"),
        ({"size_min": "10", "size_max": "5"}, 422, "size_min"),
        ({"include_closed": "maybe"}, 400, "include_closed"),
    ],
)
async def test_bad_parameters_are_named(
    api: tuple[Deployment, WorkerProcess], params: dict[str, str], status: int, name: str
) -> None:
    _, worker = api
    got, body, _ = await request(worker, "/api/v1/positions", **params)
    assert got == status
    assert body["error"]["code"] == "invalid_parameter"
    assert body["error"]["message"].startswith(name + ":")


async def test_errors_404_and_history_params(api: tuple[Deployment, WorkerProcess]) -> None:
    _, worker = api
    status, body, _ = await request(worker, "/api/v1/positions/XRPUSDT")
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body, _ = await request(worker, "/api/v1/positions/bad!")
    assert status == 400 and body["error"]["message"].startswith("asset:")
    status, body, _ = await request(worker, "/api/v1/nothing-here")
    assert status == 404 and set(body["error"]) == {"code", "message"}
    status, body, _ = await request(worker, "/api/v1/portfolio/history", **{"from": "yesterday"})
    assert status == 400 and body["error"]["message"].startswith("from:")
    status, body, _ = await request(
        worker,
        "/api/v1/portfolio/history",
        **{"from": "2025-01-02T00:00:00Z", "to": "2025-01-01T00:00:00Z"},
    )
    assert status == 422
    status, body, _ = await request(worker, "/api/v1/positions/BTCUSDT", mode="hedge")
    assert status == 404


async def test_tc013_portfolio_with_positions(api: tuple[Deployment, WorkerProcess]) -> None:
    _, worker = api
    body = await worker.wait_for(
        "/api/v1/portfolio", lambda s, b: s == 200 and b["open_positions_count"] >= 2
    )
    status, body, _ = await request(worker, "/api/v1/portfolio", include_positions="true")
    assert status == 200 and body["positions"]
    assert {p["asset"] for p in body["positions"]} == set(body["by_asset"])
    for p in body["positions"]:
        assert "position_size_norm" in p and "unrealized_pnl_pct" in p
    total = sum(D(v["exposure_usdt"]) for v in body["by_asset"].values())
    assert D(body["total_exposure_usdt"]) == total
    assert D(body["total_pnl_usdt"]) == D(body["total_unrealized_pnl_usdt"]) + D(
        body["total_realized_pnl_usdt"]
    )
    assert body["limit_exceeded"] is False
    status, one, _ = await request(worker, "/api/v1/portfolio", asset="ETHUSDT")
    assert status == 200 and set(one["by_asset"]) == {"ETHUSDT"}
    assert D(one["total_exposure_usdt"]) == D("30000")


async def test_history_windows_are_served_and_persisted(
    api: tuple[Deployment, WorkerProcess],
) -> None:
    deployment, worker = api
    body = await worker.wait_for(
        "/api/v1/portfolio/history", lambda s, b: s == 200 and b["count"] >= 1
    )
    starts = [w["window_start"] for w in body["windows"]]
    assert starts == sorted(starts)
    last = body["windows"][-1]
    _, now, _ = await request(worker, "/api/v1/portfolio")
    assert D(last["total_exposure_usdt"]) == D(now["total_exposure_usdt"])
    # Closed windows reach Postgres (window = 2 s) without blocking the agent.
    import asyncpg

    conn = await asyncpg.connect(
        "postgresql://position_manager:position_manager@127.0.0.1:5432/position_manager",
        server_settings={"search_path": deployment.schema},
    )
    try:
        deadline = time.monotonic() + 20
        rows = []
        while time.monotonic() < deadline:
            rows = await conn.fetch("SELECT * FROM portfolio_metrics ORDER BY window_start")
            if rows:
                break
            await asyncio.sleep(0.5)
        assert rows, "no closed window persisted"
        assert rows[0]["total_exposure_usdt"] >= 0
    finally:
        await conn.close()


async def test_portfolio_events_rate_limited_with_deterministic_ids(
    api: tuple[Deployment, WorkerProcess],
) -> None:
    deployment, worker = api
    queue = f"{deployment.output_prefix}.portfolio_updated"
    await asyncio.sleep(1.2)
    await drain(queue)
    started = time.monotonic()
    for i in range(15):
        mark = str(3000 + i)
        await publish(deployment.position_queue, [ws("ETHUSDT", "10.0", "3005", mark, "0")])
        await asyncio.sleep(0.1)
    await worker.wait_for(
        "/api/v1/portfolio/exposure",
        lambda s, b: s == 200 and D(b["by_asset"]["ETHUSDT"]["exposure_usdt"]) == D("30140"),
    )
    await asyncio.sleep(2.5)
    elapsed = time.monotonic() - started
    events = [orjson.loads(m.body) for m in await drain(queue)]
    assert 1 <= len(events) <= elapsed / 1.0 + 1
    assert all(e["event_type"] == "portfolio_updated" for e in events)
    assert len({e["event_id"] for e in events}) == len(events)
    assert all(e["trace_id"] and e["timestamp"] for e in events)
    # The trailing event carries the final totals.
    assert D(events[-1]["total_exposure_usdt"]) == D("30140") + D(50000) + D(10000)


async def test_exposure_limit_flag_and_one_event_per_crossing(
    api: tuple[Deployment, WorkerProcess],
) -> None:
    deployment, worker = api
    queue = f"{deployment.output_prefix}.portfolio_limit_exceeded"
    await publish(deployment.position_queue, [ws("BNBUSDT", "1000", "600", "600", "0")])
    body = await worker.wait_for("/api/v1/portfolio", lambda s, b: s == 200 and b["limit_exceeded"])
    assert D(body["total_exposure_usdt"]) > D(MAX_EXPOSURE)
    await publish(deployment.position_queue, [ws("BNBUSDT", "1000", "600", "601", "0")])
    await worker.wait_for(
        "/api/v1/portfolio",
        lambda s, b: s == 200 and D(b["by_asset"]["BNBUSDT"]["exposure_usdt"]) == D("601000"),
    )
    await asyncio.sleep(1.5)
    events = [orjson.loads(m.body) for m in await drain(queue)]
    assert len(events) == 1, events  # still above: no second event
    assert events[0]["event_type"] == "portfolio_limit_exceeded"
    # Back below the limit, for the other tests.
    await publish(deployment.position_queue, [ws("BNBUSDT", "0", "600", "601", "0", side="")])
    await worker.wait_for("/api/v1/portfolio", lambda s, b: s == 200 and not b["limit_exceeded"])


async def test_tc016_auth(api: tuple[Deployment, WorkerProcess]) -> None:
    _, worker = api
    status, body, _ = await request(worker, "/api/v1/positions", key=None)
    assert status == 401 and body["error"]["code"] == "unauthorized"
    status, body, _ = await request(worker, "/api/v1/positions", key="wrong-key-123")
    assert status == 401
    status, body, _ = await request(worker, "/api/v1/positions")
    assert status == 200
    for open_path in ("/health", "/metrics", "/api/v1/openapi.json"):
        status, _, _ = await request(worker, open_path, key=None)
        assert status == 200, open_path
    log = worker.log_path.read_text()
    assert '"unauthorized"' in log and "missing key" in log and "unknown key" in log
    assert "wrong-key-123" not in log


async def test_rate_limit_per_key(api: tuple[Deployment, WorkerProcess]) -> None:
    _, worker = api
    statuses = []
    for _ in range(7):
        status, body, headers = await request(worker, "/api/v1/portfolio/pnl", key=TIGHT_KEY)
        statuses.append(status)
    assert statuses == [200] * 5 + [429] * 2
    assert int(headers["Retry-After"]) >= 1 and body["error"]["code"] == "rate_limited"
    # Other keys are not affected.
    status, _, _ = await request(worker, "/api/v1/portfolio/pnl", key="ui-key-abcdefghij")
    assert status == 200
    status, _, _ = await request(worker, "/api/v1/portfolio/pnl")
    assert status == 200
    status, text, _ = await request(worker, "/metrics", key=None)
    assert 'pm_rate_limited_total{client="tight"} 2' in text


async def test_metrics_show_no_money(api: tuple[Deployment, WorkerProcess]) -> None:
    """/metrics needs no key, so it carries no exposure, PnL or price of the book (those
    are behind the API's keys); the portfolio here is open and valued."""
    _, worker = api
    await worker.wait_for("/api/v1/portfolio", lambda s, b: s == 200 and len(b["by_asset"]) >= 2)
    status, text, _ = await request(worker, "/metrics", key=None)
    assert status == 200
    series = {line.split("{")[0].split()[0] for line in text.splitlines() if line[:1] != "#"}
    money = [s for s in series if any(w in s for w in ("exposure", "pnl", "usdt", "price"))]
    assert series and not money, money


async def test_metrics_names(api: tuple[Deployment, WorkerProcess]) -> None:
    _, worker = api
    await request(worker, "/api/v1/positions/BTCUSDT")
    status, text, headers = await request(worker, "/metrics", key=None)
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    for name in (
        "pm_events_processed_total",
        "pm_api_request_seconds_bucket",
        'route="/api/v1/positions/{asset}"',
        "pm_apply_seconds",
        "pm_portfolio_visibility_seconds",
        "pm_api_unauthorized_total",
    ):
        assert name in text, name


async def test_unmatched_paths_and_methods(api: tuple[Deployment, WorkerProcess]) -> None:
    """What no route matches gets the JSON error shape: 404, or 405 naming the allowed
    methods; an unknown API path still needs a key; GET routes answer HEAD."""
    _, worker = api
    status, body, headers = await request(worker, "/api/v1/positions", method="DELETE")
    assert status == 405 and body["error"]["code"] == "method_not_allowed"
    assert set(headers["Allow"].split(", ")) == {"GET", "HEAD"}
    status, body, headers = await request(worker, "/api/v1/positions/BTCUSDT/validate")
    assert status == 405 and headers["Allow"] == "POST"
    status, body, _ = await request(worker, "/api/v1/nothing-here", key=None)
    assert status == 401 and body["error"]["code"] == "unauthorized"
    status, body, _ = await request(worker, "/nothing-here", key=None)
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body, _ = await request(worker, "/health", key=None, method="POST")
    assert status == 405 and body["error"]["code"] == "method_not_allowed"
    status, _, headers = await request(worker, "/api/v1/portfolio", method="HEAD")
    assert status == 200 and headers["Content-Type"] == "application/json"
    _, text, _ = await request(worker, "/metrics", key=None)
    counts = {
        line.rsplit(" ", 1)[0]: int(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("pm_api_requests_total{")
    }
    name = "pm_api_requests_total"
    assert counts[f'{name}{{method="DELETE",route="unmatched",status="405"}}'] >= 1
    assert counts[f'{name}{{method="HEAD",route="/api/v1/portfolio",status="200"}}'] >= 1


async def test_tc014_tc015_tc021_commands_through_the_api(
    api: tuple[Deployment, WorkerProcess],
) -> None:
    _, worker = api
    await worker.wait_for("/api/v1/positions/BTCUSDT", lambda s, b: s == 200)
    status, result, _ = await request(worker, "/api/v1/positions/BTCUSDT/validate", method="POST")
    assert status == 200 and isinstance(result["is_valid"], bool)
    assert isinstance(result["discrepancies"], list)
    ids = []
    for _ in range(2):
        _, live, _ = await request(worker, "/api/v1/positions/BTCUSDT")
        status, snap, _ = await request(worker, "/api/v1/positions/BTCUSDT/snapshot", method="POST")
        assert status == 201, snap
        assert snap["snapshot_data"]["size"] == "1"
        # The ML feature with the live total exposure, as the position route answers it.
        norm = snap["snapshot_data"]["position_size_norm"]
        assert D(norm) > 0 and norm == live["position_size_norm"]
        ids.append(snap["id"])
    status, page, _ = await request(worker, "/api/v1/positions/BTCUSDT/snapshots")
    assert status == 200
    got = [s["id"] for s in page["snapshots"]]
    assert got[:2] == ids[::-1]  # newest first
    created = [s["created_at"] for s in page["snapshots"]]
    assert created == sorted(created, reverse=True)
    status, body, _ = await request(worker, "/api/v1/positions/BTCUSDT/snapshots", limit="-1")
    assert status in (400, 422) and body["error"]["message"].startswith("limit")
    status, body, _ = await request(
        worker, "/api/v1/positions/BTCUSDT/snapshots", limit="100000000"
    )
    assert status in (400, 422)


def test_every_registered_route_is_described(tmp_path: Path) -> None:
    from pm_streams.app import build
    from pm_streams.settings import Settings
    from web.openapi import described, document, undescribed
    from web.routes import registered_routes

    service = build(Settings(app_id="pmtest-openapi", data_dir=tmp_path))
    routes = registered_routes(service.app.web.web_app)
    assert ("GET", "/api/v1/portfolio/history") in routes
    assert undescribed(routes) == set()
    assert described() == routes  # and nothing described that is not served
    doc = document(routes)
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == {path for _, path in routes}


async def test_openapi_served_and_schemathesis_finds_nothing(
    api: tuple[Deployment, WorkerProcess],
) -> None:
    _, worker = api
    status, doc, _ = await request(worker, "/api/v1/openapi.json", key=None)
    assert status == 200 and doc["openapi"].startswith("3.")
    await worker.wait_for("/api/v1/positions/BTCUSDT", lambda s, b: s == 200)
    proc = await asyncio.to_thread(
        subprocess.run,
        [
            str(Path(sys.executable).with_name("schemathesis")),
            "run",
            f"{worker.url}/api/v1/openapi.json",
            "-H",
            "X-API-Key: ui-key-abcdefghij",
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,"
            "response_schema_conformance,response_headers_conformance",
            "--max-examples",
            "100",
            "--phases",
            "examples,coverage,fuzzing",
            "--generation-deterministic",
            "--no-color",
            "--request-timeout",
            "10",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=worker.deployment.tmp,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert " passed" in out and "failed" not in out.split("SUMMARY")[-1]
