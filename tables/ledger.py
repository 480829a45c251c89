"""The fill ledger (`position_fills`): rows written by the sink, replay for validation.

A ledger row is written for every change that moved a leg's size or average price:

* `fill` / `funding`: an applied order execution or funding settlement (the
  `LedgerEntry` effect of the change), with its signed quantity, price and fee;
* `adjustment`: a change that set size or average price without a fill: a leg created
  from an exchange push, an exchange avg price adopted beyond the threshold, or a
  validation `Correction`. It carries the leg's new absolute size (`quantity`) and
  average price (`price`).

Replaying the rows of one `(asset, mode)` in `position_version` order through the
engine itself (fills as `Fill`, adjustments as `Correction`) reproduces the leg's
size, average entry price and total fees, which is what validation compares.
Realized and unrealized PnL are not compared: the exchange overwrites them (§4.2).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pm_streams.domain import (
    Book,
    Correction,
    EngineConfig,
    Fill,
    LedgerEntry,
    Note,
    Position,
    Publish,
    apply,
)

KIND_FILL = "fill"
KIND_FUNDING = "funding"
KIND_ADJUSTMENT = "adjustment"

LEDGER_COLUMNS = (
    "fill_id", "position_id", "asset", "mode", "quantity", "price", "fee", "is_funding",
    "order_id", "executed_at", "trace_id", "position_version", "kind",
)  # fmt: skip

INSERT_LEDGER = f"""
INSERT INTO position_fills ({", ".join(LEDGER_COLUMNS)})
VALUES ({", ".join(f"${i}" for i in range(1, len(LEDGER_COLUMNS) + 1))})
ON CONFLICT (asset, mode, fill_id) DO NOTHING
"""

SELECT_LEDGER = """
SELECT fill_id, kind, quantity, price, fee, is_funding, order_id, executed_at, trace_id,
       position_version
FROM position_fills
WHERE asset = $1 AND mode = $2 AND position_version <= $3
ORDER BY position_version, recorded_at, fill_id
"""

_ADJUSTING_NOTES = ("position_corrected", "avg_price_replaced")


def _adjusted_modes(book: Book) -> set[str]:
    """Modes whose size or avg price the change that wrote `book` set without a fill."""
    modes: set[str] = set()
    for effect in book.effects:
        if isinstance(effect, Note) and effect.kind in _ADJUSTING_NOTES:
            mode = effect.get("mode")
            if mode:
                modes.add(mode)
        elif isinstance(effect, Publish) and effect.update_source == "websocket":
            leg = book.leg(effect.mode)
            # A leg at version 1 after an exchange push was created by that push.
            if leg is not None and leg.version == 1 and leg.size != 0:
                modes.add(effect.mode)
    return modes


def ledger_rows(book: Book) -> Iterable[tuple[Any, ...]]:
    """The ledger rows of the change that wrote `book` (its effects)."""
    for effect in book.effects:
        if not isinstance(effect, LedgerEntry):
            continue
        fill = effect.fill
        leg = book.leg(fill.mode)
        yield (
            fill.fill_id, effect.position_id, fill.asset, fill.mode, fill.quantity, fill.price,
            fill.fee, fill.is_funding, fill.order_id, fill.executed_at, fill.trace_id,
            leg.version if leg else 0, KIND_FUNDING if fill.is_funding else KIND_FILL,
        )  # fmt: skip
    for mode in sorted(_adjusted_modes(book)):
        leg = book.leg(mode)
        if leg is None:
            continue
        yield (
            f"adjustment:{leg.id}:{leg.version}", leg.id, leg.asset, leg.mode, leg.size,
            leg.average_entry_price, Decimal(0), False, None, leg.last_updated, None,
            leg.version, KIND_ADJUSTMENT,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Replayed:
    """A leg recomputed from the ledger, and what the replay saw."""

    position: Position | None
    rows: int
    version: int
    last_fill_at: datetime | None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def replay(asset: str, mode: str, rows: Sequence[Any], cfg: EngineConfig) -> Replayed:
    """Recompute `(asset, mode)` from its ledger rows (in `position_version` order)."""
    book: Book | None = None
    version = 0
    last_fill_at: datetime | None = None
    # Every fill id is distinct in the ledger (unique constraint): remember them all.
    cfg = EngineConfig(
        use_ws_avg_price=cfg.use_ws_avg_price,
        avg_price_diff_threshold=cfg.avg_price_diff_threshold,
        size_validation_threshold=cfg.size_validation_threshold,
        size_reconcile_grace=cfg.size_reconcile_grace,
        fill_id_capacity=max(len(rows), 1),
    )
    for row in rows:
        version = max(version, int(row["position_version"]))
        event: Fill | Correction
        if row["kind"] == KIND_ADJUSTMENT:
            event = Correction(
                asset=asset,
                mode=mode,
                size=Decimal(row["quantity"]),
                avg_price=Decimal(row["price"]),
                trace_id=row["trace_id"] or "ledger",
                reason="ledger_replay",
            )
        else:
            executed_at = row["executed_at"]
            if executed_at is not None and (last_fill_at is None or executed_at > last_fill_at):
                last_fill_at = executed_at
            event = Fill(
                asset=asset,
                mode=mode,
                quantity=Decimal(row["quantity"]),
                price=Decimal(row["price"]),
                fee=Decimal(row["fee"]),
                fill_id=str(row["fill_id"]),
                order_id=row["order_id"],
                executed_at=executed_at,
                trace_id=row["trace_id"] or "ledger",
                is_funding=bool(row["is_funding"]),
            )
        book, _ = apply(book, event, _EPOCH, cfg, new_id=lambda: str(uuid.uuid4()))
    leg = book.leg(mode) if book is not None else None
    return Replayed(leg, len(rows), version, last_fill_at)
