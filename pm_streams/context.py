"""What one worker owns, wired once by the composition root (`pm_streams.app.build`).

Every part is built before the context exists, so every field is set and typed; the
agents and the web routes receive it, nothing imports the root.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust

from bridges.inbound import InboundBridge
from bridges.outbound import Republisher
from pm_streams.clock import Clock
from pm_streams.domain import EngineConfig, Event
from pm_streams.exposure import ExposureFollower
from pm_streams.handoff import Handoff
from pm_streams.metrics import Metrics
from pm_streams.portfolio import Portfolio
from pm_streams.prices import PriceRefresher
from pm_streams.processing import BookCache
from pm_streams.runtime.heap import HeapKeeper
from pm_streams.runtime.recovery import RecoveryGuard
from pm_streams.settings import Settings
from tables.db import Database
from tables.metrics_writer import MetricsWriter
from tables.sink import PostgresSink
from tables.snapshots import Snapshots
from tables.validation import Validator


@dataclass(frozen=True)
class Service:
    """Everything one worker owns."""

    settings: Settings
    app: faust.App
    input_topic: Any
    """The canonical input topic (`faust.TopicT`; Faust's types are not generic-friendly)."""
    dead_letter_topic: Any
    positions: Any
    """The positions table (`faust.types.TableT`): asset -> book record."""
    fill_ids: Any
    """The fill-id table (`pm_streams.fill_ids`)."""
    engine: EngineConfig
    metrics: Metrics
    clock: Clock
    db: Database
    bridge: InboundBridge
    sink: PostgresSink
    republisher: Republisher
    exposure: ExposureFollower
    books: BookCache
    events: Handoff[Event]
    """Input events the bridge forwarded, for the positions agent (`pm_streams.handoff`)."""
    portfolio: Portfolio
    metrics_writer: MetricsWriter
    snapshots: Snapshots
    validator: Validator
    prices: PriceRefresher
    heap: HeapKeeper
    recovery: RecoveryGuard

    @property
    def services(self) -> tuple[Any, ...]:
        """The services a worker runs beside the Faust app."""
        outputs = (
            (self.exposure, self.sink, self.republisher)
            if self.settings.outputs == "worker"
            else ()
        )
        extra = (
            self.snapshots, self.validator, self.prices, self.metrics_writer, self.heap,
            self.recovery,
        )  # fmt: skip
        return (self.db, self.bridge, *outputs, *extra)
