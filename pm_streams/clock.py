"""Time as a dependency, so the engine and tests never read the wall clock directly."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...

    def timestamp(self) -> float:
        """`now()` as epoch seconds (cheaper where only a comparison is needed)."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def timestamp(self) -> float:
        return time.time()
