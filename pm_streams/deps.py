"""What every part of a worker process is built from: one of each per process."""

from __future__ import annotations

from typing import NamedTuple

from pm_streams.clock import Clock
from pm_streams.metrics import Metrics
from pm_streams.settings import Settings


class Deps(NamedTuple):
    """The settings, the metrics registry and the clock, passed as one
    (`self.settings, self.metrics, self.clock = deps`)."""

    settings: Settings
    metrics: Metrics
    clock: Clock
