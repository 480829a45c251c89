"""Periodic snapshot rounds (`tables.snapshots.Snapshots._round`): taken in groups paced
over the spread, each leg read again just before its snapshot. Postgres and Kafka are left out here:
`take` and `stored_exposure` are recorded instead; the integration tests of
test_snapshots.py run the whole round against real services."""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Collection, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from pm_streams.clock import SystemClock
from pm_streams.deps import Deps
from pm_streams.domain import Position
from pm_streams.metrics import Metrics
from pm_streams.settings import Settings
from tables.snapshots import ROUND_GROUP, Snapshots


def leg(asset: str, *, size: str = "1", snapshot_age: float | None = None) -> Position:
    now = datetime.now(UTC)
    return Position(
        id=f"id-{asset}",
        asset=asset,
        mode="one-way",
        size=Decimal(size),
        average_entry_price=Decimal("100"),
        current_price=None,
        unrealized_pnl=Decimal(0),
        realized_pnl=Decimal(0),
        total_fees=Decimal(0),
        version=1,
        created_at=now,
        opened_at=now,
        last_updated=now,
        last_snapshot_at=None if snapshot_age is None else now - timedelta(seconds=snapshot_age),
    )


class Live:
    """The live positions a round reads: `legs` by asset, `owned` assets."""

    def __init__(self, legs: list[Position]) -> None:
        self.legs = {p.asset: p for p in legs}
        self.owned = set(self.legs)

    def leg(self, asset: str, mode: str) -> Position | None:
        found = self.legs.get(asset)
        return found if found is not None and found.mode == mode else None

    def owns(self, asset: str) -> bool:
        return asset in self.owned

    def owned_open_legs(self) -> Iterator[Position]:
        return (p for a, p in self.legs.items() if a in self.owned and p.is_open)


class Recorded(Snapshots):
    def __init__(self, live: Live, interval: float = 3600.0, fail: Collection[str] = ()) -> None:
        settings = dataclasses.replace(
            Settings.from_env({"POSITION_MANAGER_APP_ID": "pmtest-rounds"}),
            snapshot_interval=interval,
        )
        super().__init__(Deps(settings, Metrics(), SystemClock()), None, live, None)  # type: ignore[arg-type]
        self.taken: list[tuple[float, str, Decimal]] = []  # (monotonic s, asset, exposure)
        self.exposure_reads = 0
        self.fail = fail  # assets whose snapshot raises

    async def stored_exposure(self) -> Decimal:
        self.exposure_reads += 1
        return Decimal(1000 * self.exposure_reads)

    async def take(
        self, leg: Position, trace_id: str | None = None, *, exposure: Decimal
    ) -> dict[str, Any]:
        if leg.asset in self.fail:
            raise ConnectionError("postgres: connection refused")
        self.taken.append((time.monotonic(), leg.asset, exposure))
        return {}


async def test_a_round_is_taken_in_groups_paced_evenly_over_its_spread() -> None:
    assets = [f"A{i}USDT" for i in range(2 * ROUND_GROUP + 3)]  # three groups
    snapshots = Recorded(Live([leg(a) for a in assets]))
    started = time.monotonic()
    await snapshots._round([(a, "one-way") for a in assets], spread=0.6)
    assert sorted(a for _, a, _ in snapshots.taken) == sorted(assets)
    times = sorted(t - started for t, _, _ in snapshots.taken)
    groups = [times[:ROUND_GROUP], times[ROUND_GROUP : 2 * ROUND_GROUP], times[2 * ROUND_GROUP :]]
    assert all(g[-1] - g[0] < 0.1 for g in groups), times  # a group is taken together
    assert groups[0][0] < 0.1  # the first one at once
    gaps = [b[0] - a[-1] for a, b in itertools.pairwise(groups)]
    assert all(0.15 <= g < 1.0 for g in gaps), gaps  # 0.6 s / 3 groups
    # One exposure read serves the whole (short) round.
    assert snapshots.exposure_reads == 1
    assert {e for _, _, e in snapshots.taken} == {Decimal(1000)}


async def test_a_failed_snapshot_ends_the_round_after_its_group() -> None:
    assets = [f"F{i}USDT" for i in range(2 * ROUND_GROUP)]
    snapshots = Recorded(Live([leg(a) for a in assets]), fail={"F3USDT"})
    await snapshots._round([(a, "one-way") for a in assets], spread=0)
    assert sorted(a for _, a, _ in snapshots.taken) == sorted(
        a for a in assets[:ROUND_GROUP] if a != "F3USDT"
    )


async def test_legs_are_read_again_before_their_snapshot() -> None:
    assets = ["AAUSDT", "BBUSDT", "CCUSDT", "DDUSDT", "EEUSDT"]
    live = Live([leg(a) for a in assets])
    snapshots = Recorded(live)
    due = [(a, "one-way") for a in assets]
    # Between the round's start and their turn: one closed, one moved to another
    # worker, one snapshotted on demand, one gone.
    live.legs["BBUSDT"] = leg("BBUSDT", size="0")
    live.owned.discard("CCUSDT")
    live.legs["DDUSDT"] = leg("DDUSDT", snapshot_age=5)
    del live.legs["EEUSDT"]
    await snapshots._round(due, spread=0)
    assert [a for _, a, _ in snapshots.taken] == ["AAUSDT"]


async def test_a_stopping_worker_ends_the_round() -> None:
    assets = [f"S{i}USDT" for i in range(4)]
    snapshots = Recorded(Live([leg(a) for a in assets]))
    snapshots._stopped.set()  # what `Service.stop` sets; `sleep` returns at once
    await snapshots._round([(a, "one-way") for a in assets], spread=60)
    assert snapshots.taken == []
