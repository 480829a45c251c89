"""The portfolio's total exposure as the outputs (sink, republisher) see it, so that every
`position_updated` / `position_closed` event and every Postgres row carries
`position_size_norm` against the real total (SPEC §4.4 rev 2), never a placeholder 0.

The portfolio agent owns the totals; the outputs may run in another process. They read
the agent's contributions changelog (one partition): every asset's latest contribution.
The total *as of a change* of asset A is the sum of the known contributions with A's
replaced by A's contribution after the change, which is what the portfolio agent
computes once it takes that change (its total exposure is the same sum, kept
incrementally). Other assets' changes still in flight are not in it; they are at most
one agent batch behind.

The known total is summed here from the contributions, not read from the agent's totals
changelog: the two changelogs are separate topics, so a totals record that already
holds A's new contribution can be read before A's contribution record, and the total
would count A twice (a 300 of 400 change came out as 300 of 700).
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from mode import Service

from pm_streams.backoff import Backoff
from pm_streams.domain import AGGREGATE_CONTEXT, UNDECODABLE, Book
from pm_streams.domain.portfolio import exposure_from_bytes, exposure_of
from pm_streams.logs import get_logger
from pm_streams.names import PORTFOLIO_CONTRIB_TABLE
from pm_streams.settings import Settings

log = get_logger("pm_streams.exposure")

ZERO = Decimal(0)
TOPICS_POLL = 0.5
"""Seconds between looks for the portfolio changelogs before they exist."""


class Exposure:
    """The known contributions and their sum; `as_of(book)` for one change. Sums use the
    aggregate context's operations directly (exact, no context entered per call)."""

    def __init__(self) -> None:
        self.total = ZERO
        self._by_asset: dict[str, Decimal] = {}

    def take_contribution(self, raw: bytes | None) -> None:
        if raw:
            asset, exposure = exposure_from_bytes(raw)
            ctx = AGGREGATE_CONTEXT
            self.total = ctx.add(
                self.total, ctx.subtract(exposure, self._by_asset.get(asset, ZERO))
            )
            self._by_asset[asset] = exposure

    def as_of(self, book: Book) -> Decimal:
        """The total exposure with `book`'s asset at its state in `book`."""
        ctx = AGGREGATE_CONTEXT
        known = self._by_asset.get(book.asset, ZERO)
        return max(ZERO, ctx.add(ctx.subtract(self.total, known), exposure_of(book)))


class ExposureFollower(Service):
    """Keeps an `Exposure` up to date from the portfolio agent's contributions changelog."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        names = settings.kafka
        self.settings = settings
        self.exposure = Exposure()
        self.topics = {
            names.changelog(PORTFOLIO_CONTRIB_TABLE): self.exposure.take_contribution,
        }
        self.caught_up = asyncio.Event()

    async def on_start(self) -> None:
        self.add_future(self._follow())
        if not await self.wait_caught_up():
            log.warning("exposure_not_caught_up", timeout=10.0)

    async def wait_caught_up(self, timeout: float = 10.0) -> bool:
        """Until what the changelog held at start was read (bounded: a deployment
        whose portfolio agent never ran yet has nothing to read)."""
        try:
            async with asyncio.timeout(timeout):
                await self.caught_up.wait()
            return True
        except TimeoutError:
            return False

    async def _follow(self) -> None:
        backoff = Backoff()
        while not self.should_stop:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.settings.kafka_bootstrap,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
            )
            try:
                await consumer.start()
                await self._read(consumer)
            except asyncio.CancelledError:
                raise
            except LookupError:
                # Not an outage: the agent creates them at its start. Look again soon,
                # not after a growing backoff, or the outputs would miss the first
                # changes of a fresh deployment for up to `Backoff.cap` seconds.
                await asyncio.sleep(TOPICS_POLL)
            except Exception as exc:
                delay = backoff.failed()
                log.warning("exposure_follow_retry", error=repr(exc), retry_in=delay)
                await asyncio.sleep(delay)
            finally:
                await consumer.stop()

    async def _read(self, consumer: AIOKafkaConsumer) -> None:
        existing = await consumer.topics()
        parts = [TopicPartition(t, 0) for t in self.topics if t in existing]
        if len(parts) < len(self.topics):
            self.caught_up.set()  # nothing to read yet: the agent has not started
            raise LookupError("portfolio changelog not created yet")  # see `_follow`
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        while not self.should_stop:
            batches = await consumer.getmany(timeout_ms=200, max_records=1000)
            for tp, records in batches.items():
                take = self.topics[tp.topic]
                for record in records:
                    try:
                        take(record.value)
                    except UNDECODABLE as exc:
                        log.error("record_quarantined", topic=tp.topic, error=repr(exc))
            if not self.caught_up.is_set():
                positions = [await consumer.position(tp) for tp in parts]
                if all(pos >= ends[tp] for pos, tp in zip(positions, parts, strict=True)):
                    self.caught_up.set()
