"""Every Grafana panel's SQL against a Postgres filled by a real run.

A real worker (per-test app id, queues and schema) takes fills, exchange updates and a
bad message over RabbitMQ; once the sink has written the positions, a 2 s portfolio
window has closed, a snapshot exists and the metrics writer has copied the counters,
each panel's `rawSql` is taken from `grafana/dashboards/*.json`, its Grafana macros
and variables are expanded as Grafana would, and it is run in the test's schema. It
must succeed, read only `v_*` views, return the columns its panel declares below, and
return rows wherever the run produced data.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import aiohttp
import asyncpg
import pytest

from pm_streams.deps import Deps
from pm_streams.settings import Settings
from tests.support.rabbit import fill
from tests.support.worker import API_KEY, ROOT, Deployment, WorkerProcess, publish

pytestmark = pytest.mark.integration

DASHBOARDS = ROOT / "grafana" / "dashboards"
DSN = Settings().postgres_dsn

Rows = list[asyncpg.Record]


@dataclass(frozen=True)
class Expect:
    """What one panel target must return: its columns in order, and rows if `rows`."""

    columns: tuple[str, ...]
    rows: bool = True
    check: Callable[[Rows], Any] | None = field(default=None, compare=False)


def _by(rows: Rows, key: str) -> dict[str, asyncpg.Record]:
    return {r[key]: r for r in rows}


TS_METRIC = ("time", "metric", "value")

# (dashboard file, panel title, refId) -> expectation. Every target must be listed.
EXPECTED: dict[tuple[str, str, str], Expect] = {
    # ---- Portfolio Management
    ("portfolio-management", "Open / long / short positions", "A"): Expect(
        ("open_positions", "long_positions", "short_positions"),
        check=lambda rows: tuple(rows[0]) == (3, 2, 1),
    ),
    ("portfolio-management", "Exposure and PnL now", "A"): Expect(
        (
            "total_exposure_usdt",
            "net_exposure_usdt",
            "total_unrealized_pnl_usdt",
            "total_realized_pnl_usdt",
        ),
        check=lambda rows: rows[0]["total_exposure_usdt"] > 50000,
    ),
    ("portfolio-management", "Total and net exposure", "A"): Expect(
        ("time", "total_exposure_usdt", "net_exposure_usdt"),
        check=lambda rows: max(r["total_exposure_usdt"] for r in rows) > 0,
    ),
    ("portfolio-management", "Portfolio PnL", "A"): Expect(
        ("time", "total_unrealized_pnl_usdt", "total_realized_pnl_usdt", "total_pnl_usdt")
    ),
    ("portfolio-management", "PnL by asset (realized, unrealized, funding)", "A"): Expect(
        ("asset", "realized_pnl", "unrealized_pnl", "funding_pnl"),
        # XRP was opened and closed: 100 x (0.6 - 0.5) = 10 realized, nothing open.
        check=lambda rows: _by(rows, "asset")["XRPUSDT"]["realized_pnl"] == Decimal(10)
        and set(_by(rows, "asset")) == {"BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"},
    ),
    ("portfolio-management", "Open, long and short positions over time", "A"): Expect(
        ("time", "open_positions_count", "long_positions_count", "short_positions_count")
    ),
    ("portfolio-management", "Position size distribution (position_size_norm)", "A"): Expect(
        ("label", "position_size_norm"),
        check=lambda rows: abs(sum(r["position_size_norm"] for r in rows) - 1) < Decimal("1e-9")
        and rows[0]["label"] == "BTCUSDT",
    ),
    ("portfolio-management", "Unrealized PnL % by asset", "A"): Expect(
        ("label", "unrealized_pnl_pct"),
        check=lambda rows: _by(rows, "label")["BTCUSDT"]["unrealized_pnl_pct"] == 3,
    ),
    ("portfolio-management", "Time held by position", "A"): Expect(
        (
            "label",
            "side",
            "size",
            "average_entry_price",
            "current_price",
            "opened_at",
            "time_held_minutes",
        ),
        check=lambda rows: len(rows) == 3 and all(r["time_held_minutes"] >= 0 for r in rows),
    ),
    ("portfolio-management", "Snapshot history: $asset $mode (size and PnL)", "A"): Expect(
        ("time", "size", "unrealized_pnl", "realized_pnl"),
        check=lambda rows: rows[-1]["size"] == 1,
    ),
    ("portfolio-management", "Snapshot history: $asset $mode (prices)", "A"): Expect(
        ("time", "average_entry_price", "current_price")
    ),
    # ---- Position Manager Health
    ("position-manager-health", "Events in per minute by source", "A"): Expect(
        TS_METRIC,
        check=lambda rows: {"order_executed forwarded", "order_executed rejected"}
        <= {r["metric"] for r in rows},
    ),
    ("position-manager-health", "Events out per minute by type", "A"): Expect(
        TS_METRIC, check=lambda rows: "position_updated" in {r["metric"] for r in rows}
    ),
    ("position-manager-health", "Events applied per minute by result", "A"): Expect(TS_METRIC),
    ("position-manager-health", "Rejects (dead-lettered) per minute", "A"): Expect(
        TS_METRIC, check=lambda rows: sum(r["value"] for r in rows) == 1
    ),
    ("position-manager-health", "Dead-lettered in range", "A"): Expect(
        ("dead_lettered",), check=lambda rows: rows[0]["dead_lettered"] == 1
    ),
    ("position-manager-health", "Validation discrepancies and fixes per minute", "A"): Expect(
        TS_METRIC,
        check=lambda rows: "exchange size_discrepancy" in {r["metric"] for r in rows},
    ),
    ("position-manager-health", "Consumer lag (seconds)", "A"): Expect(
        TS_METRIC, check=lambda rows: "sink" in {r["metric"] for r in rows}
    ),
    ("position-manager-health", "Rows written to Postgres per minute", "A"): Expect(
        TS_METRIC, check=lambda rows: "positions" in {r["metric"] for r in rows}
    ),
    # Nothing fails in this run: the query must work, rows are not required.
    ("position-manager-health", "Errors and restarts per minute", "A"): Expect(
        TS_METRIC, rows=False
    ),
    ("position-manager-health", "Workers", "A"): Expect(
        ("worker", "started_at", "last_seen", "seconds_since_report"),
        check=lambda rows: len(rows) == 1,
    ),
    # ---- Risk
    ("risk", "Total exposure vs limit", "A"): Expect(
        ("time", "total_exposure_usdt", "net_exposure_usdt", "max_exposure_usdt"),
        check=lambda rows: rows[-1]["max_exposure_usdt"] == 100000,
    ),
    ("risk", "Limit utilisation", "A"): Expect(
        ("limit_utilization_pct",),
        check=lambda rows: 50 < rows[0]["limit_utilization_pct"] < 100,
    ),
    ("risk", "position_size_norm by asset (BUY skipped above 0.8)", "A"): Expect(
        ("label", "position_size_norm"),
        check=lambda rows: rows[0]["label"] == "BTCUSDT" and rows[0]["position_size_norm"] > 0.8,
    ),
    ("risk", "unrealized_pnl_pct by asset (take profit at 3.0)", "A"): Expect(
        ("label", "unrealized_pnl_pct"),
        check=lambda rows: rows[0]["label"] == "BTCUSDT" and rows[0]["unrealized_pnl_pct"] == 3,
    ),
    ("risk", "Positions at a Model Service rule", "A"): Expect(
        (
            "label",
            "side",
            "size",
            "exposure_usdt",
            "position_size_norm",
            "unrealized_pnl_pct",
            "size_norm_breach",
            "take_profit_reached",
        ),
        check=lambda rows: [(r["label"], r["size_norm_breach"], r["take_profit_reached"])
                            for r in rows] == [("BTCUSDT", True, True)],
    ),
}  # fmt: skip


# --------------------------------------------------------------------- the dashboards


@dataclass(frozen=True)
class Query:
    dashboard: str
    title: str
    ref: str
    fmt: str
    sql: str


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows


def queries() -> list[Query]:
    return [
        Query(name, panel["title"], t["refId"], t.get("format", "time_series"), t["rawSql"])
        for name, d in dashboards().items()
        for panel in panels(d)
        for t in panel.get("targets", [])
    ]


def variables() -> list[tuple[str, str, str]]:
    return [
        (name, v["name"], v["query"] if isinstance(v["query"], str) else v["query"]["rawSql"])
        for name, d in dashboards().items()
        for v in d.get("templating", {}).get("list", [])
        if v["type"] == "query"
    ]


_RELATION = re.compile(r"\b(?:FROM|JOIN)\s+([A-Za-z_][A-Za-z0-9_.]*)", re.IGNORECASE)


def relations(sql: str) -> set[str]:
    return set(_RELATION.findall(sql))


# --------------------------------------------------------------------- Grafana macros

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
FILTER = "{col} BETWEEN now() - interval '1 day' AND now()"


def _seconds(interval: str) -> int:
    m = re.fullmatch(r"'?(\d+)([smhd])'?", interval.strip())
    assert m, f"unsupported interval {interval!r}"
    return int(m.group(1)) * _UNITS[m.group(2)]


def _group(col: str, interval: str) -> str:
    secs = _seconds(interval)
    return f"floor(extract(epoch from {col})/{secs})*{secs}"


def expand(sql: str, variables: dict[str, str]) -> str:
    """Grafana's Postgres macros as Grafana expands them, over the last day."""
    sql = re.sub(
        r"\$__timeGroupAlias\(\s*([^,()]+?)\s*,\s*([^,()]+?)\s*\)",
        lambda m: _group(m.group(1), m.group(2)) + ' AS "time"',
        sql,
    )
    sql = re.sub(
        r"\$__timeGroup\(\s*([^,()]+?)\s*,\s*([^,()]+?)\s*\)",
        lambda m: _group(m.group(1), m.group(2)),
        sql,
    )
    sql = re.sub(r"\$__timeFilter\(\s*([^()]+?)\s*\)", lambda m: FILTER.format(col=m.group(1)), sql)
    sql = re.sub(
        r"\$__unixEpochFilter\(\s*([^()]+?)\s*\)",
        lambda m: (
            f"{m.group(1)} >= extract(epoch from now() - interval '1 day')"
            f" AND {m.group(1)} <= extract(epoch from now())"
        ),
        sql,
    )
    sql = sql.replace("$__timeFrom()", "(now() - interval '1 day')").replace("$__timeTo()", "now()")
    for name, value in sorted(variables.items(), key=lambda kv: -len(kv[0])):
        sql = sql.replace("${" + name + "}", value).replace("$" + name, value)
    assert "$" not in sql, f"unexpanded macro or variable in: {sql}"
    return sql


def test_macro_expansion_is_what_grafana_sends() -> None:
    sql = expand(
        "SELECT $__timeGroupAlias(time, '1m'), x FROM v WHERE $__timeFilter(time)"
        " AND a = '$asset' AND m = '${mode}'",
        {"asset": "BTCUSDT", "mode": "one-way"},
    )
    assert sql == (
        'SELECT floor(extract(epoch from time)/60)*60 AS "time", x FROM v'
        " WHERE time BETWEEN now() - interval '1 day' AND now()"
        " AND a = 'BTCUSDT' AND m = 'one-way'"
    )
    assert expand("$__timeGroup(at, '5m')", {}) == "floor(extract(epoch from at)/300)*300"


def test_every_panel_is_declared_and_reads_only_views() -> None:
    found = queries()
    keys = [(q.dashboard, q.title, q.ref) for q in found]
    assert set(dashboards()) == {"portfolio-management", "position-manager-health", "risk"}
    assert len(keys) == len(set(keys)), "two targets share a (dashboard, title, refId)"
    assert set(keys) == set(EXPECTED), (
        f"undeclared: {set(keys) - set(EXPECTED)}; gone: {set(EXPECTED) - set(keys)}"
    )
    for q in found:
        assert q.fmt in {"time_series", "table"}, q
        rels = relations(q.sql)
        assert rels, q
        assert all(r.startswith("v_") for r in rels), (q.title, rels)
        if q.fmt == "time_series":
            assert EXPECTED[(q.dashboard, q.title, q.ref)].columns[0] == "time", q.title
    for _, _, sql in variables():
        assert all(r.startswith("v_") for r in relations(sql)), sql
    for d in dashboards().values():
        assert d["schemaVersion"] >= 36 and d["uid"]
        for panel in panels(d):
            for t in panel.get("targets", []):
                assert t["datasource"]["uid"] == "pm-postgres"


# --------------------------------------------------------------------- the real run


def exchange(asset: str, seq: int, side: str, size: str, avg: str, mark: str, upnl: str) -> Any:
    return {
        "event_type": "position",
        "trace_id": f"ws-{asset}-{seq}",
        "data": {
            "symbol": asset,
            "side": side,
            "size": size,
            "avgPrice": avg,
            "markPrice": mark,
            "unrealisedPnl": upnl,
            "positionIdx": 0,
            "seq": seq,
        },
    }


def _ready_sql() -> dict[str, str]:
    """What must be in Postgres before the panels are queried (each true when done)."""
    counter = "SELECT EXISTS (SELECT 1 FROM service_metrics WHERE kind = 'counter' AND {})"
    return {
        "positions": "SELECT count(*) = 4 AND bool_and(CASE asset WHEN 'BTCUSDT'"
        " THEN current_price = 51500 ELSE TRUE END) FROM positions",
        "window after the marks": "SELECT EXISTS (SELECT 1 FROM portfolio_metrics"
        " WHERE open_positions_count = 3 AND total_unrealized_pnl_usdt <> 0)",
        "snapshot": "SELECT EXISTS (SELECT 1 FROM position_snapshots WHERE asset = 'BTCUSDT')",
        "events in": counter.format(
            "name = 'pm_events_in_total' AND labels->>'source' = 'order_executed'"
            " AND labels->>'result' = 'forwarded'"
        ),
        "reject": counter.format("name = 'pm_rejects_total'"),
        "events out": counter.format("name = 'pm_events_out_total'"),
        "discrepancy": counter.format(
            "name = 'pm_engine_notes_total' AND labels->>'kind' = 'size_discrepancy'"
        ),
        "sink rows": counter.format(
            "name = 'pm_sink_rows_total' AND labels->>'table' = 'positions'"
            " AND value >= (SELECT count(*) FROM positions)"
        ),
        "lag": "SELECT EXISTS (SELECT 1 FROM service_metrics WHERE kind = 'gauge'"
        " AND name = 'pm_consumer_lag_seconds' AND labels->>'consumer' = 'sink')",
        "limit": "SELECT EXISTS (SELECT 1 FROM service_metrics WHERE kind = 'setting'"
        " AND value = 100000)",
    }


async def _wait_filled(conn: asyncpg.Connection, worker: WorkerProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = _ready_sql()
    while pending:
        worker.assert_running()
        for name, sql in list(pending.items()):
            try:
                if await conn.fetchval(sql):
                    del pending[name]
            except asyncpg.UndefinedTableError:
                break  # migrations not applied yet
        if pending and time.monotonic() > deadline:
            raise AssertionError(f"not in Postgres after {timeout}s: {sorted(pending)}")
        await asyncio.sleep(0.3)


async def test_every_panel_query_runs_on_a_filled_database(
    deployment: Deployment, workers: list[WorkerProcess]
) -> None:
    deployment.extra_env.update(
        {
            "POSITION_MANAGER_PORTFOLIO_WINDOW": "2",
            "POSITION_MANAGER_METRICS_WRITE_INTERVAL": "1",
            "POSITION_MANAGER_SNAPSHOT_INTERVAL": "10",
            "POSITION_MANAGER_MAX_EXPOSURE_USDT": "100000",
            "POSITION_MANAGER_SIZE_RECONCILE_GRACE": "1",
        }
    )
    worker = WorkerProcess(deployment).start()
    workers.append(worker)
    conn = await asyncpg.connect(DSN, timeout=5)
    try:
        await worker.wait_healthy()
        await publish(
            deployment.order_queue,
            [
                fill("BTCUSDT-1", "BUY", "1.0", "50000", asset="BTCUSDT", fee="10"),
                fill("ETHUSDT-1", "BUY", "2", "3000", asset="ETHUSDT"),
                fill("SOLUSDT-1", "SELL", "10", "100", asset="SOLUSDT"),
                fill("XRPUSDT-1", "BUY", "100", "0.5", asset="XRPUSDT"),
                fill("XRPUSDT-2", "SELL", "100", "0.6", asset="XRPUSDT"),
                b"{not json",
            ],
        )
        await worker.wait_for(
            "/api/v1/portfolio", lambda s, b: s == 200 and b.get("open_positions_count") == 3
        )
        # Marks after the fills (the exchange is the source of PnL); ETH's size
        # disagrees with its fills, a discrepancy the health dashboard shows.
        await publish(
            deployment.position_queue,
            [
                exchange("BTCUSDT", 1, "Buy", "1.0", "50000", "51500", "1500"),
                exchange("ETHUSDT", 1, "Buy", "2.5", "3000", "2950", "-100"),
            ],
        )
        await conn.execute(f'SET search_path TO "{deployment.schema}"')
        await _wait_filled(conn, worker, timeout=45)
        await run_every_panel(conn)
        await run_docs_client(worker)
    finally:
        worker.ensure_stopped()
        await conn.close()  # the `workers` fixture drops the schema


async def run_every_panel(conn: asyncpg.Connection) -> None:
    # Template variables first: their values feed the panels that use them.
    values: dict[str, str] = {}
    for _, name, sql in variables():
        stmt = await conn.prepare(expand(sql, values))
        assert len(stmt.get_attributes()) == 1, sql
        options = [r[0] for r in await stmt.fetch()]
        assert options, f"variable {name} has no values: {sql}"
        values[name] = {"asset": "BTCUSDT", "mode": "one-way"}.get(name, options[0])
        assert values[name] in options, (name, options)

    failures: list[str] = []
    for q in queries():
        want = EXPECTED[(q.dashboard, q.title, q.ref)]
        label = f"{q.dashboard} / {q.title} / {q.ref}"
        try:
            stmt = await conn.prepare(expand(q.sql, values))
            rows = await stmt.fetch()
        except asyncpg.PostgresError as exc:
            failures.append(f"{label}: {exc!r}")
            continue
        columns = tuple(a.name for a in stmt.get_attributes())
        if columns != want.columns:
            failures.append(f"{label}: columns {columns}, panel expects {want.columns}")
            continue
        if want.rows and not rows:
            failures.append(f"{label}: no rows")
            continue
        if q.fmt == "time_series":
            for r in rows:
                values_ok = all(
                    v is None or isinstance(v, int | float | Decimal)
                    for k, v in r.items()
                    if k not in ("time", "metric")
                )
                if r["time"] is None or not values_ok:
                    failures.append(f"{label}: a time series row with a non-numeric value {r}")
                    break
        if want.check is not None and rows and not want.check(rows):
            failures.append(f"{label}: unexpected values {[dict(r) for r in rows]}")
    assert not failures, "\n".join(failures)


# --------------------------------------------------------------------- the operator's docs

DOCS = ROOT / "docs" / "operations.md"


def setting_names() -> set[str]:
    """Every environment variable `pm_streams/settings.py` reads."""
    text = (ROOT / "pm_streams" / "settings.py").read_text()
    own = {"POSITION_MANAGER_" + n for n in re.findall(r'P \+ "([A-Z_]+)"', text)}
    return own | set(re.findall(r'(?<!P \+ )"((?:POSTGRES|RABBITMQ)_[A-Z]+)"', text))


def test_env_example_and_docs_list_every_setting() -> None:
    names = setting_names()
    assert len(names) > 40 and "POSITION_MANAGER_API_KEYS" in names
    example = dict(
        line.split("=", 1)
        for line in (ROOT / "env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert names <= set(example), sorted(names - set(example))
    defaults = Settings()
    assert example["POSITION_MANAGER_PORT"] == str(defaults.port)
    assert example["POSITION_MANAGER_PARTITIONS"] == str(defaults.partitions)
    assert float(example["POSITION_MANAGER_METRICS_WRITE_INTERVAL"]) == (
        defaults.metrics_write_interval
    )
    docs = DOCS.read_text()
    for name in names:
        short = name.rsplit("_", 1)[-1]
        assert f"`{name}`" in docs or f"_{short}`" in docs, name


async def run_docs_client(worker: WorkerProcess) -> None:
    """The integration snippet of docs/operations.md, run against the real worker."""
    block = DOCS.read_text().split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile(block.replace("http://position-manager:4800", worker.url), "docs", "exec"),
         namespace)  # fmt: skip
    async with aiohttp.ClientSession() as session:
        client = namespace["PositionManager"](session, API_KEY)
        exposure = await client.total_exposure()
        assert isinstance(exposure, Decimal) and exposure > 50000
        btc = await client.features("BTCUSDT")
        assert btc["unrealized_pnl_pct"] == 3 and btc["position_size_norm"] > Decimal("0.8")
        assert (await client.features("ADAUSDT"))["size"] == 0  # 404: no position


# --------------------------------------------------------------------- the metrics writer


def test_metrics_writer_rows_carry_increments_and_skip_unchanged_counters() -> None:
    from dataclasses import replace as _replace

    from pm_streams.clock import SystemClock
    from pm_streams.metrics import Metrics
    from tables.db import Database
    from tables.metrics_writer import MetricsWriter

    settings = _replace(Settings(), max_exposure_usdt=Decimal("250000.5"), instance_id="w-1")
    metrics = Metrics()
    writer = MetricsWriter(Deps(settings, metrics, SystemClock()), Database(settings))
    now = SystemClock().now()

    def by_name(rows: list[Any]) -> dict[tuple[str, str], tuple[Any, Any]]:
        return {(r[4], r[5]): (r[6], r[7]) for r in rows}

    metrics.inc("pm_rejects_total", 3, source="order_executed", field="body")
    metrics.set("pm_consumer_lag_seconds", 0.25, consumer="sink")
    rows, seen = writer.rows(now)
    assert all(r[1] == "w-1" for r in rows)
    got = by_name(rows)
    key = ("pm_rejects_total", '{"field":"body","source":"order_executed"}')
    assert got[key] == (3, 3)
    assert got[("pm_consumer_lag_seconds", '{"consumer":"sink"}')] == (Decimal("0.25"), None)
    assert got[("max_exposure_usdt", "{}")] == (Decimal("250000.5"), None)

    # Not written yet (the insert failed): the next round still carries the whole growth.
    metrics.inc("pm_rejects_total", 2, source="order_executed", field="body")
    assert by_name(writer.rows(now)[0])[key] == (5, 5)
    writer._written.update(writer.rows(now)[1])  # as after a successful insert
    assert key not in by_name(writer.rows(now)[0])  # unchanged: no row
    metrics.inc("pm_rejects_total", 1, source="order_executed", field="body")
    assert by_name(writer.rows(now)[0])[key] == (6, 1)
    assert seen[("pm_rejects_total", (("field", "body"), ("source", "order_executed")))] == 3
