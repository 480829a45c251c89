"""The reconnect delay every supervisor loop uses: 0.5 s doubling to 10 s, jittered,
back to the start after a success or a session that stayed up."""

from __future__ import annotations

import random
import time


class Backoff:
    def __init__(self, first: float = 0.5, cap: float = 10.0, healthy: float | None = None) -> None:
        self.first = first
        self.cap = cap
        self.healthy = healthy
        self._next = first
        self._started = time.monotonic()

    def started(self) -> None:
        """A session begins: with `healthy`, if it lasts that long the next failure
        starts over."""
        self._started = time.monotonic()

    def reset(self) -> None:
        self._next = self.first

    def failed(self) -> float:
        """The delay before the next attempt (±20 % jitter); doubles for the one after."""
        if self.healthy is not None and time.monotonic() - self._started > self.healthy:
            self._next = self.first
        delay = self._next * random.uniform(0.8, 1.2)
        self._next = min(self._next * 2, self.cap)
        return round(delay, 2)
