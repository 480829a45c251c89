"""Position validation (SPEC §6): against the fill ledger and the exchange's last report.

Runs on the worker that actively owns the asset:

* **Ledger.** The sink writes the ledger asynchronously, in the same transaction as
  the position row. Validation waits (up to `LEDGER_WAIT` s) until Postgres holds the
  position at the live version or newer; the ledger rows up to the live version are
  then complete, and their replay (`tables.ledger.replay`) must give the live size,
  average entry price and total fees. When the sink is behind or Postgres is down,
  the ledger check is skipped and the result says so (`error_message`).
* **Exchange.** `exchange_size` / `exchange_avg_price` are the last values the
  exchange reported. None means no report was ever received: it is never read as a
  flat position, and nothing is compared or fixed.
* **Fix** (`fix_discrepancies=true`): the exchange's size and average price win. The
  fix is a `Correction` event sent through the asset's input partition (applied by
  the agent: version bump, `position_updated`/`position_closed` with
  `update_source=validation`, log line `position_corrected`); validation waits until
  the table shows it. A fix is withheld when the exchange report is older than the
  newest fill in the ledger (the report cannot know about that fill yet).

Periodic validation of every open leg on the actively owned partitions runs every
`VALIDATION_INTERVAL` s; the engine's `ScheduleValidation` (size discrepancy grace)
is handed over by the agent through `schedule()`; pending requests for the same leg
are coalesced.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from mode import Service

from pm_streams.deps import Deps
from pm_streams.domain import (
    Correction,
    EngineConfig,
    Position,
    ScheduleValidation,
    features,
    iso,
    position_to_dict,
)
from pm_streams.logs import bound_trace, get_logger, new_trace_id
from tables.db import Database
from tables.ledger import SELECT_LEDGER, Replayed, replay
from tables.live import LivePositions

log = get_logger("tables.validation")

LEDGER_WAIT = 5.0
AVG_TOLERANCE = Decimal("0.000001")  # relative, ledger vs stored (DECIMAL(20,8) storage)
FEE_TOLERANCE = Decimal("0.000001")

SELECT_VERSION = "SELECT version FROM positions WHERE asset = $1 AND mode = $2"


@dataclass(frozen=True, slots=True)
class Discrepancy:
    field: str
    stored: Decimal | None
    expected: Decimal | None
    source: str  # "ledger" | "exchange"

    def as_dict(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "stored": None if self.stored is None else format(self.stored, "f"),
            "expected": None if self.expected is None else format(self.expected, "f"),
            "source": self.source,
        }


@dataclass
class Counts:
    validations: int = 0
    discrepancies: int = 0
    fixes: int = 0
    errors: int = 0
    last_run_at: datetime | None = None
    pending: set[tuple[str, str]] = field(default_factory=set)

    def as_dict(self) -> dict[str, Any]:
        return {
            "validations": self.validations,
            "discrepancies": self.discrepancies,
            "fixes": self.fixes,
            "errors": self.errors,
            "pending": len(self.pending),
            "last_run_at": iso(self.last_run_at),
        }


def _rel(a: Decimal, b: Decimal) -> Decimal:
    base = abs(b) if b != 0 else abs(a)
    return abs(a - b) / base if base != 0 else Decimal(0)


def ledger_discrepancies(leg: Position, expected: Position | None) -> list[Discrepancy]:
    size = expected.size if expected is not None else Decimal(0)
    avg = expected.average_entry_price if expected is not None else Decimal(0)
    fees = expected.total_fees if expected is not None else Decimal(0)
    out = []
    if leg.size != size:
        out.append(Discrepancy("size", leg.size, size, "ledger"))
    elif leg.size != 0 and _rel(leg.average_entry_price, avg) > AVG_TOLERANCE:
        out.append(Discrepancy("average_entry_price", leg.average_entry_price, avg, "ledger"))
    if abs(leg.total_fees - fees) > FEE_TOLERANCE:
        out.append(Discrepancy("total_fees", leg.total_fees, fees, "ledger"))
    return out


def exchange_discrepancies(leg: Position, cfg: EngineConfig) -> list[Discrepancy]:
    """Differences from the last exchange report; none when nothing was reported."""
    out: list[Discrepancy] = []
    ex_size, ex_avg = leg.exchange_size, leg.exchange_avg_price
    if ex_size is None:
        return out
    if abs(ex_size - leg.size) > cfg.size_validation_threshold:
        out.append(Discrepancy("size", leg.size, ex_size, "exchange"))
    if (
        ex_avg is not None
        and ex_avg > 0
        and ex_size != 0
        and (
            leg.average_entry_price <= 0
            or _rel(ex_avg, leg.average_entry_price) > cfg.avg_price_diff_threshold
        )
    ):
        out.append(Discrepancy("average_entry_price", leg.average_entry_price, ex_avg, "exchange"))
    return out


class Validator(Service):
    def __init__(
        self, deps: Deps, db: Database, live: LivePositions, engine: EngineConfig, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.settings, self.metrics, self.clock = deps
        self.db = db
        self.live = live
        self.engine = engine
        self.counts = Counts()
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._deadlines: dict[tuple[str, str], float] = {}

    def summary(self) -> dict[str, Any]:
        return self.counts.as_dict()

    # ------------------------------------------------------------------ ledger

    async def _ledger(self, leg: Position) -> tuple[Replayed | None, str | None]:
        pool = self.db.pool
        if pool is None:
            return None, "fill ledger unavailable: postgres is not reachable"
        try:
            deadline = time.monotonic() + LEDGER_WAIT
            stored = -1
            while True:
                async with asyncio.timeout(5):
                    stored = await pool.fetchval(SELECT_VERSION, leg.asset, leg.mode) or -1
                if stored >= leg.version or time.monotonic() >= deadline:
                    break
                await asyncio.sleep(0.05)
            if stored < leg.version:
                return None, (
                    f"fill ledger behind: postgres has version {stored}, "
                    f"the position is at {leg.version}; ledger check skipped"
                )
            async with asyncio.timeout(10):
                rows = await pool.fetch(SELECT_LEDGER, leg.asset, leg.mode, leg.version)
        except Exception as exc:  # any database failure: report, do not fail the validation
            return None, f"fill ledger unavailable: {exc!r}"
        return replay(leg.asset, leg.mode, rows, self.engine), None

    # ------------------------------------------------------------------ validate

    async def validate(
        self,
        asset: str,
        mode: str,
        *,
        fix: bool = True,
        reason: str = "request",
        trace_id: str | None = None,
    ) -> dict[str, Any] | None:
        """Validate the live `(asset, mode)`; None when there is no such position."""
        key = (asset, mode)
        lock = self._locks.setdefault(key, asyncio.Lock())
        trace_id = trace_id or new_trace_id()
        async with lock:
            with bound_trace(trace_id):
                return await self._validate(asset, mode, fix, reason, trace_id)

    async def _validate(
        self, asset: str, mode: str, fix: bool, reason: str, trace_id: str
    ) -> dict[str, Any] | None:
        leg = self.live.leg(asset, mode)
        if leg is None:
            return None
        messages: list[str] = []
        replayed, problem = await self._ledger(leg)
        if problem:
            messages.append(problem)
        found: list[Discrepancy] = []
        if replayed is not None:
            found += ledger_discrepancies(leg, replayed.position)
        ex_found = exchange_discrepancies(leg, self.engine)
        if leg.exchange_size is None:
            messages.append("no exchange report received: exchange check skipped")
        found += ex_found

        fixed = False
        updated = leg
        if fix and ex_found:
            withheld = self._fix_withheld(leg, replayed)
            if withheld:
                messages.append(withheld)
            else:
                updated, fixed, note = await self._fix(leg, ex_found, reason, trace_id)
                if note:
                    messages.append(note)

        self._count(found, fixed, reason)
        log.info(
            "position_validated",
            asset=asset,
            mode=mode,
            reason=reason,
            is_valid=not found,
            discrepancies=[d.as_dict() for d in found],
            fixed=fixed,
            version=leg.version,
        )
        now = self.clock.now()
        return {
            "is_valid": not found,
            "error_message": "; ".join(
                ([f"{len(found)} discrepancies found"] if found else []) + messages
            )
            or None,
            "discrepancies": [d.as_dict() for d in found],
            "fixed": fixed,
            "ledger_checked": replayed is not None,
            "exchange_checked": leg.exchange_size is not None,
            "validated_version": leg.version,
            "updated_position": position_to_dict(updated, features=features(updated, now, 0)),
            "validated_at": iso(now),
        }

    @staticmethod
    def _fix_withheld(leg: Position, replayed: Replayed | None) -> str | None:
        if (
            replayed is not None
            and replayed.last_fill_at is not None
            and leg.exchange_updated_ms is not None
        ):
            reported = datetime.fromtimestamp(leg.exchange_updated_ms / 1000, tz=UTC)
            if replayed.last_fill_at > reported:
                return (
                    "fix withheld: the exchange report "
                    f"({iso(reported)}) predates the last fill ({iso(replayed.last_fill_at)})"
                )
        return None

    async def _fix(
        self, leg: Position, found: list[Discrepancy], reason: str, trace_id: str
    ) -> tuple[Position, bool, str | None]:
        fields = {d.field for d in found}
        size = leg.exchange_size if "size" in fields else None
        avg = leg.exchange_avg_price if "average_entry_price" in fields else None
        correction = Correction(
            asset=leg.asset,
            mode=leg.mode,
            size=size,
            avg_price=avg,
            trace_id=trace_id,
            reason=f"validation:{reason}",
        )
        try:
            await self.live.send(correction)
        except Exception as exc:
            self.counts.errors += 1
            return leg, False, f"fix not sent: {exc!r}"
        updated = await self.live.wait_version(leg.asset, leg.mode, leg.version)
        if updated is None:
            return leg, False, "fix sent, not yet applied"
        self.counts.fixes += 1
        self.metrics.inc("pm_validation_fixes_total")
        log.info(
            "position_corrected",
            asset=leg.asset,
            mode=leg.mode,
            old_size=str(leg.size),
            size=str(updated.size),
            old_avg_price=str(leg.average_entry_price),
            avg_price=str(updated.average_entry_price),
            version=updated.version,
            reason=reason,
        )
        return updated, True, None

    def _count(self, found: list[Discrepancy], fixed: bool, reason: str) -> None:
        c = self.counts
        c.validations += 1
        c.discrepancies += len(found)
        c.last_run_at = self.clock.now()
        self.metrics.inc(
            "pm_validations_total", result="invalid" if found else "valid", reason=reason
        )
        for d in found:
            self.metrics.inc("pm_validation_discrepancies_total", field=d.field, source=d.source)

    # ------------------------------------------------------------------ scheduled

    def schedule(self, request: ScheduleValidation) -> None:
        """Validate `(asset, mode)` `after_seconds` from now.

        Requests for a leg that already has one pending are coalesced into it, and the
        pending one is pushed back to the latest deadline: every discrepancy gets its
        full grace for in-flight fills to explain it.
        """
        key = (request.asset, request.mode)
        if self.should_stop:
            return
        deadline = time.monotonic() + request.after_seconds
        pending = key in self.counts.pending
        self._deadlines[key] = max(deadline, self._deadlines.get(key, deadline))
        if pending:
            return
        self.counts.pending.add(key)
        self.add_future(self._later(request))

    async def _later(self, request: ScheduleValidation) -> None:
        key = (request.asset, request.mode)
        try:
            # The deadline may move while waiting (coalesced requests): re-check it.
            while (left := self._deadlines.get(key, 0.0) - time.monotonic()) > 0:  # noqa: ASYNC110
                await asyncio.sleep(left)
            if self.live.owns(request.asset):
                await self.validate(request.asset, request.mode, reason=request.reason)
        except Exception as exc:
            self.counts.errors += 1
            log.warning("scheduled_validation_failed", asset=request.asset, error=repr(exc))
        finally:
            self.counts.pending.discard(key)
            self._deadlines.pop(key, None)

    async def on_start(self) -> None:
        self.add_future(self._periodic_loop())

    async def _periodic_loop(self) -> None:
        while not self.should_stop:
            await self.sleep(self.settings.validation_interval)  # early on stop
            if self.should_stop:
                return
            for leg in list(self.live.owned_open_legs()):
                if self.should_stop:
                    return
                try:
                    await self.validate(leg.asset, leg.mode, reason="periodic")
                except Exception as exc:
                    self.counts.errors += 1
                    log.warning(
                        "periodic_validation_failed",
                        asset=leg.asset,
                        mode=leg.mode,
                        error=repr(exc),
                    )
