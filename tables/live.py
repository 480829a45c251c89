"""The live positions as seen by the worker that owns them (for snapshots, validation).

Reads the changelog-backed table, tells which assets this worker *actively* owns
(Faust's memory tables also hold standby partitions, which must not be acted on),
and sends command events (`Correction`, `SnapshotTaken`) through the asset's own
input partition, so that they are serialized with every other change of the asset.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

from pm_streams.domain import Book, Event, Position, event_to_bytes
from pm_streams.names import POSITIONS_TABLE
from pm_streams.processing import BookCache
from pm_streams.runtime import ownership
from pm_streams.runtime.reads import stored


class NotOwner(Exception):
    """This worker does not (or no longer) actively own the asset's partition."""


class LivePositions:
    def __init__(self, app: Any, table: Any, input_topic: Any, books: BookCache) -> None:
        self.app = app
        self.table = table
        self.input_topic = input_topic
        self.books = books

    def book(self, asset: str) -> Book | None:
        return self.books.readable(asset, stored(self.table, asset))

    def leg(self, asset: str, mode: str) -> Position | None:
        book = self.book(asset)
        return book.leg(mode) if book is not None else None

    def owns(self, asset: str) -> bool:
        """Whether this worker is the active owner of `asset` right now."""
        return ownership.owns(self.app, POSITIONS_TABLE, asset)

    def owned_open_legs(self) -> Iterator[Position]:
        """Every open leg of every asset this worker actively owns."""
        for asset in list(self.table.keys()):
            if not self.owns(asset):
                continue
            book = self.book(asset)
            if book is None:
                continue
            yield from (leg for leg in book.legs if leg.is_open)

    async def send(self, event: Event, timeout: float = 10.0) -> None:
        """Produce a command event to the asset's input partition; wait for the ack."""
        async with asyncio.timeout(timeout):
            fut = await self.input_topic.send(key=event.asset, value=event_to_bytes(event))
            await fut

    async def wait_version(
        self, asset: str, mode: str, above: int, timeout: float = 10.0
    ) -> Position | None:
        """Wait until the table shows `(asset, mode)` at a version > `above`."""
        deadline = time.monotonic() + timeout
        while True:
            leg = self.leg(asset, mode)
            if leg is not None and leg.version > above:
                return leg
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(0.02)
