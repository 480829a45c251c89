"""The Postgres sink against a real Kafka changelog topic and a per-test Postgres schema."""

from __future__ import annotations

import asyncio
import random
import subprocess
from dataclasses import replace
from decimal import Decimal

import pytest

from pm_streams.domain import Book, LedgerEntry
from tables.ledger import SELECT_LEDGER, replay
from tables.validation import ledger_discrepancies
from tests.integration.test_sink_helpers import CFG, ROOT, random_events, rig, run_books

pytestmark = pytest.mark.integration

ASSETS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT"]


def final_versions(books: dict[str, Book]) -> dict[tuple[str, str], int]:
    return {(leg.asset, leg.mode): leg.version for b in books.values() for leg in b.legs}


def caught_up(r, want: dict[tuple[str, str], int]):  # type: ignore[no-untyped-def]
    async def check() -> bool | dict[tuple[str, str], int]:
        got = await r.versions()
        return True if got == want else got

    return check


async def test_replayed_twice_leaves_tables_identical_and_ledger_matches_live() -> None:
    written, final = run_books(random_events(random.Random(11), 1500, ASSETS))
    want = final_versions(final)
    async with rig() as r:
        await r.produce(written)
        first = await r.sink()
        await r.wait(caught_up(r, want))
        await r.wait(lambda: _consumed(r, len(written)))
        once = await r.dump()
        await r.stop_sink(first)

        # The whole changelog again, by a second consumer group: nothing changes.
        r.metrics.counters.clear()
        await r.sink(group=f"{r.settings.kafka.sink_group}.again")
        await r.wait(lambda: _consumed(r, len(written)))
        twice = await r.dump()
        assert twice == once
        assert len(once[0]) == len(want)
        fills = sum(1 for row in once[1])
        assert fills > 500

        # The ledger recomputation equals the live state of every leg.
        for book in final.values():
            for leg in book.legs:
                rows = await r.pool.fetch(SELECT_LEDGER, leg.asset, leg.mode, leg.version)
                replayed = replay(leg.asset, leg.mode, rows, CFG)
                assert ledger_discrepancies(leg, replayed.position) == [], (leg, replayed)
                stored = await r.pool.fetchrow(
                    "SELECT size, average_entry_price, version FROM positions"
                    " WHERE asset = $1 AND mode = $2",
                    leg.asset,
                    leg.mode,
                )
                assert stored["version"] == leg.version
                assert stored["size"] == leg.size
                assert abs(stored["average_entry_price"] - leg.average_entry_price) < Decimal(
                    "0.00000001"
                )


async def _consumed(r, n: int) -> bool | int:  # type: ignore[no-untyped-def]
    got = r.metrics.value("pm_consumer_records_total", consumer="sink")
    return True if got >= n else got


async def test_out_of_order_versions_never_move_a_row_back() -> None:
    written, final = run_books(random_events(random.Random(5), 300, ["BTCUSDT"]))
    newest = final["BTCUSDT"]
    older = [b for b in written if b.leg("one-way") is not None][:-1]
    assert older, "the run must have several one-way versions"
    async with rig() as r:
        await r.sink()
        # In one batch: newest first, then every older version of the same asset.
        await r.produce([newest, *reversed(older)])
        await r.wait(caught_up(r, final_versions(final)))
        # In later batches: old versions alone.
        await r.produce(older[:5])
        await asyncio.sleep(1.0)
        await r.produce([older[0]])
        await r.wait(lambda: _consumed(r, len(older) + 1 + 5 + 1))
        assert await r.versions() == final_versions(final)
        row = await r.pool.fetchrow(
            "SELECT size, version FROM positions WHERE asset = 'BTCUSDT' AND mode = 'one-way'"
        )
        leg = newest.leg("one-way")
        assert leg is not None and (row["size"], row["version"]) == (leg.size, leg.version)
        # A snapshot mark without a version bump still reaches the row.
        marked = replace(newest, legs=tuple(
            replace(x, last_snapshot_at=x.last_updated) if x.mode == "one-way" else x
            for x in newest.legs
        ), effects=())  # fmt: skip
        await r.produce([marked])

        async def snap_mark() -> bool:
            v = await r.pool.fetchval(
                "SELECT last_snapshot_at FROM positions WHERE asset='BTCUSDT' AND mode='one-way'"
            )
            return v is not None

        await r.wait(snap_mark)


async def test_postgres_restart_mid_stream_catches_up_with_nothing_lost() -> None:
    written, final = run_books(random_events(random.Random(23), 3000, ASSETS))
    want = final_versions(final)
    async with rig() as r:
        await r.sink()
        expected_fills = None

        async def feed() -> None:
            step = 100
            for i in range(0, len(written), step):
                await r.produce(written[i : i + step])
                await asyncio.sleep(0.1)

        feeder = asyncio.create_task(feed())
        await asyncio.sleep(0.5)
        restart = await asyncio.to_thread(
            subprocess.run,
            [str(ROOT / "scripts/services"), "restart", "postgres"],
            capture_output=True,
            timeout=120,
        )
        assert restart.returncode == 0, restart.stderr.decode()[-2000:]
        await feeder
        await r.wait(caught_up(r, want), timeout=90)
        assert r.metrics.total("pm_consumer_errors_total") >= 1, "the outage was not seen"
        # Every ledger row: one per applied fill plus the adjustments, none lost.
        expected_fills = {
            (e.fill.asset, e.fill.mode, e.fill.fill_id)
            for b in written
            for e in b.effects
            if isinstance(e, LedgerEntry)
        }
        got = {
            (row["asset"], row["mode"], row["fill_id"])
            for row in await r.pool.fetch(
                "SELECT asset, mode, fill_id FROM position_fills WHERE kind <> 'adjustment'"
            )
        }
        assert got == expected_fills


async def test_meme_coin_magnitudes_are_held_digit_for_digit() -> None:
    """SPEC §9 rev 2: 7·10^12 units at 0.0000000035, and the largest accepted values,
    are in Postgres exactly as the API shows them."""
    from pm_streams.domain import decimal_text, position_to_dict
    from tests.unit.helpers import fill, price

    big = "999999999999999999.999999999999999999"
    written, final = run_books(
        [
            fill("7000000000000", "0.0000000035", "0.000000000000000001", asset="PEPEUSDT"),
            price("0.0000000048", asset="PEPEUSDT"),
            fill(big, big, asset="BIGUSDT"),
        ]
    )
    async with rig() as r:
        await r.produce(written)
        await r.sink()
        await r.wait(caught_up(r, final_versions(final)))
        for asset in ("PEPEUSDT", "BIGUSDT"):
            leg = final[asset].legs[0]
            shown = position_to_dict(leg)
            row = await r.pool.fetchrow(
                "SELECT size, average_entry_price, current_price, unrealized_pnl, realized_pnl,"
                " total_fees, funding_pnl FROM positions WHERE asset = $1",
                asset,
            )
            for column, value in dict(row).items():
                text = None if value is None else decimal_text(value)
                assert text == shown[column], (asset, column)
        pepe = await r.pool.fetchrow(
            "SELECT size, current_price FROM positions WHERE asset = 'PEPEUSDT'"
        )
        assert (pepe["size"], pepe["current_price"]) == (
            Decimal("7000000000000"),
            Decimal("0.0000000048"),
        )


async def test_a_refused_or_undecodable_record_goes_to_sink_rejects_and_the_rest_lands() -> None:
    """SPEC §9 rev 2: the sink never stalls. One record Postgres refuses (an asset
    longer than the column) and one it cannot decode are kept in `sink_rejects` with
    their errors; every other record of the same batches still lands."""
    from tests.unit.helpers import fill

    long_asset = "X" * 30 + "USDT"
    written, _ = run_books(
        [
            fill("1", "100", asset="BTCUSDT"),
            fill("2", "200", asset=long_asset),
            fill("1", "100", asset="BTCUSDT"),
            fill("3", "50", asset="ETHUSDT"),
        ]
    )
    future = b'{"v": 99, "from": "a newer version"}'
    async with rig() as r:
        assert r.producer is not None
        await r.produce(written[:2])
        topic = r.settings.kafka.positions_changelog
        await (await r.producer.send(topic, key=b"SOLUSDT", value=future))
        await r.produce(written[2:])
        await r.sink()
        want = {("BTCUSDT", "one-way"): 2, ("ETHUSDT", "one-way"): 1}
        await r.wait(caught_up(r, want))
        rejects = await r.pool.fetch(
            "SELECT kafka_key, record, error FROM sink_rejects ORDER BY id"
        )
        assert len(rejects) == 2
        errors = " ".join(row["error"] for row in rejects)
        assert "undecodable" in errors and "value too long" in errors.lower()
        assert {row["kafka_key"] for row in rejects} == {"SOLUSDT", long_asset}
        assert r.metrics.value("pm_quarantined_records_total", consumer="sink") == 1
        assert r.metrics.value("pm_sink_rejects_total", consumer="sink") == 1
        ledger = await r.pool.fetchval("SELECT count(*) FROM position_fills")
        assert ledger == 3
