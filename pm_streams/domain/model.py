"""Domain data: positions, the per-asset book, input events, effects, engine settings.

Everything here is an immutable value. Money and sizes are `Decimal`, never float.
Timestamps are timezone-aware (UTC) `datetime`s.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TypeAlias

MODES: tuple[str, ...] = ("one-way", "hedge-long", "hedge-short")

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Position:
    """One position (one-way) or one hedge leg, keyed by `(asset, mode)`.

    `size` is signed: long > 0, short < 0. A `hedge-long` leg is never negative and a
    `hedge-short` leg never positive. `average_entry_price` is kept at full precision;
    round only for display.
    """

    id: str
    asset: str
    mode: str
    size: Decimal
    average_entry_price: Decimal
    current_price: Decimal | None
    unrealized_pnl: Decimal
    realized_pnl: Decimal
    total_fees: Decimal
    version: int
    created_at: datetime
    opened_at: datetime | None
    last_updated: datetime
    closed_at: datetime | None = None
    last_snapshot_at: datetime | None = None
    last_price_at: datetime | None = None
    exchange_size: Decimal | None = None
    exchange_avg_price: Decimal | None = None
    exchange_seq: int | None = None
    exchange_updated_ms: int | None = None
    funding_pnl: Decimal = ZERO
    """Cumulative funding: negative when paid, positive when received (also part of
    `realized_pnl`, SPEC §4.1 rev 2)."""

    @property
    def side(self) -> str:
        """`long`, `short` or `flat`, from the sign of `size`."""
        if self.size > 0:
            return "long"
        if self.size < 0:
            return "short"
        return "flat"

    @property
    def long_size(self) -> Decimal:
        """The long quantity (≥ 0): `size` when positive, else 0."""
        return self.size if self.size > 0 else ZERO

    @property
    def short_size(self) -> Decimal:
        """The short quantity as a positive number: `-size` when negative, else 0."""
        return -self.size if self.size < 0 else ZERO

    @property
    def is_open(self) -> bool:
        return self.size != 0


@dataclass(frozen=True, slots=True)
class Fill:
    """An order execution, or a funding settlement when `is_funding`.

    `quantity` is signed (BUY +, SELL -) and 0 for funding. `fee` is what was paid
    (negative for a rebate or received funding).
    """

    asset: str
    mode: str
    quantity: Decimal
    price: Decimal
    fee: Decimal
    fill_id: str
    order_id: str | None
    executed_at: datetime | None
    trace_id: str
    is_funding: bool = False


@dataclass(frozen=True, slots=True)
class ExchangeUpdate:
    """A position push from the exchange; every value is optional (None = not sent).

    `size` is signed from the exchange's side.
    """

    asset: str
    mode: str
    size: Decimal | None
    avg_price: Decimal | None
    unrealized_pnl: Decimal | None
    realized_pnl: Decimal | None
    mark_price: Decimal | None
    seq: int | None
    updated_ms: int | None
    trace_id: str


@dataclass(frozen=True, slots=True)
class PriceUpdate:
    """A mark price from the tickers endpoint; applies to every open leg of the asset."""

    asset: str
    mark_price: Decimal
    trace_id: str


@dataclass(frozen=True, slots=True)
class Correction:
    """A validation fix: adopt the given size and/or average price (None = keep)."""

    asset: str
    mode: str
    size: Decimal | None
    avg_price: Decimal | None
    trace_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class SnapshotTaken:
    """Records that a snapshot of the position was written (no version bump)."""

    asset: str
    mode: str
    at: datetime
    trace_id: str


Event: TypeAlias = Fill | ExchangeUpdate | PriceUpdate | Correction | SnapshotTaken


@dataclass(frozen=True, slots=True)
class Publish:
    """Publish an event about the stored position of `mode` (payload built later)."""

    event_type: str  # "position_updated" | "position_closed"
    mode: str
    update_source: str  # "order_execution" | "websocket" | "validation"
    trace_id: str


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """An applied fill, to be written to the fill ledger (`position_fills`)."""

    fill: Fill
    position_id: str


@dataclass(frozen=True, slots=True)
class ScheduleValidation:
    """Ask for a validation of `(asset, mode)` after `after_seconds`.

    Several requests for the same position may be coalesced into one pending timer.
    """

    asset: str
    mode: str
    after_seconds: float
    reason: str


@dataclass(frozen=True, slots=True)
class Note:
    """Something to log and count; `fields` are string pairs for the log line."""

    kind: str
    fields: tuple[tuple[str, str], ...] = ()

    def get(self, key: str) -> str | None:
        for k, v in self.fields:
            if k == key:
                return v
        return None


Effect: TypeAlias = Publish | LedgerEntry | ScheduleValidation | Note


@dataclass(frozen=True, slots=True)
class Book:
    """One asset's positions: its legs, the ids of its recent fills, and the effects of
    the change that made this book.

    `legs` holds at most one position per mode, sorted by mode. `fill_ids` is bounded
    (newest last): the engine's own guard against a fill applied twice. Where the book
    is stored and which input offset it reflects are the store's business
    (`pm_streams.stored`), not the book's.
    """

    asset: str
    legs: tuple[Position, ...]
    fill_ids: tuple[str, ...]
    effects: tuple[Effect, ...] = ()

    def leg(self, mode: str) -> Position | None:
        for p in self.legs:
            if p.mode == mode:
                return p
        return None


@dataclass(frozen=True, slots=True)
class EngineConfig:
    use_ws_avg_price: bool = True
    avg_price_diff_threshold: Decimal = Decimal("0.001")
    size_validation_threshold: Decimal = Decimal("0.0001")
    size_reconcile_grace: float = 10.0
    fill_id_capacity: int = 256

    def __post_init__(self) -> None:
        if self.fill_id_capacity < 1:
            raise ValueError("fill_id_capacity must be at least 1")
        if self.avg_price_diff_threshold < 0 or self.size_validation_threshold < 0:
            raise ValueError("thresholds must not be negative")
