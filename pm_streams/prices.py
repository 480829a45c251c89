"""Mark prices from the exchange's public tickers endpoint (SPEC §4.3).

`TickerClient.fetch(symbol)` asks
`GET {PRICE_API_URL}/v5/market/tickers?category=linear&symbol=…` and reads
`result.list[0].markPrice` (a string, kept as `Decimal`). Each attempt has a 5 s
timeout; a failed attempt is retried 3 times after 1 s, 2 s and 4 s. When every attempt
fails the answer is `None` and the position keeps its last known price (or null).
Every attempt is logged with the symbol, attempt number, status and latency.

What is retried: timeouts, connection errors, HTTP 5xx/429 and unreadable bodies (a
proxy's error page, a truncated answer). What is not: an answer that says the symbol
does not exist (`retCode != 0`, an empty list, HTTP 4xx), as asking again cannot help.

`PriceRefresher` (a mode.Service on every worker) looks, every
`min(30 s, threshold / 2)`, at the assets whose partitions this worker *actively* owns
(`LivePositions.owned_open_legs`, shared with snapshots and validation) and fetches the
price of each asset that has an open leg whose `current_price` is missing or older than
the staleness threshold. A fetched price goes to the asset's own input partition as a
`PriceUpdate`, so the positions agent applies it in order with every other change.
At most one fetch per asset is in flight, and at most `max_concurrent` in all. An asset
is not asked again before the threshold has passed after an answer (the engine leaves
`last_price_at` alone when the price did not change, so the leg alone cannot tell), nor
before the next check after a transient failure.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import aiohttp
import orjson
from mode import Service

from pm_streams.deps import Deps
from pm_streams.domain import Position, PriceUpdate
from pm_streams.logs import bound_trace, get_logger, new_trace_id
from pm_streams.metrics import Metrics

log = get_logger("pm_streams.prices")

TICKERS_PATH = "/v5/market/tickers"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Per-attempt timeout and the sleeps before each retry (production: 5 s; 1, 2, 4 s)."""

    timeout: float = 5.0
    backoff: Sequence[float] = (1.0, 2.0, 4.0)

    @property
    def attempts(self) -> int:
        return 1 + len(self.backoff)


class _Retry(Exception):
    """A transient failure: worth another attempt."""


class _GiveUp(Exception):
    """A definite answer that the price cannot be had (unknown symbol, 4xx)."""


@dataclass(frozen=True, slots=True)
class Fetched:
    """The outcome of one `fetch`: a price, or None with the reason and whether it is final."""

    symbol: str
    price: Decimal | None
    attempts: int
    reason: str = "ok"
    permanent: bool = False


def parse_mark_price(body: bytes, symbol: str) -> Decimal:
    """`result.list[0].markPrice` of a tickers answer; raises `_Retry`/`_GiveUp`."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _Retry("body is not JSON") from None
    if not isinstance(obj, dict):
        raise _Retry("body is not a JSON object")
    code = obj.get("retCode", 0)
    if code not in (0, "0"):
        raise _GiveUp(f"retCode {code}: {str(obj.get('retMsg', ''))[:200]}")
    result = obj.get("result")
    items = result.get("list") if isinstance(result, dict) else None
    if not isinstance(items, list):
        raise _Retry("no result.list")
    if not items:
        raise _GiveUp("unknown symbol (empty result.list)")
    first = items[0]
    if not isinstance(first, dict):
        raise _Retry("result.list[0] is not an object")
    if first.get("symbol", symbol) != symbol:
        raise _Retry(f"answer is for {first.get('symbol')!r}")
    raw = first.get("markPrice")
    if not isinstance(raw, str):
        raise _Retry("markPrice missing or not a string")
    try:
        price = Decimal(raw)
    except InvalidOperation:
        raise _Retry(f"markPrice {raw[:40]!r} is not a number") from None
    if not price.is_finite() or price <= 0:
        raise _Retry(f"markPrice {raw[:40]!r} is not a positive price")
    return price


class TickerClient:
    """The tickers endpoint with timeout and retries; uses the given aiohttp session."""

    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        policy: RetryPolicy | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.url = base_url.rstrip("/") + TICKERS_PATH
        self.session = session
        self.policy = policy or RetryPolicy()
        self.metrics = metrics

    async def fetch(self, symbol: str, trace_id: str | None = None) -> Fetched:
        trace_id = trace_id or new_trace_id()
        policy = self.policy
        reason = "no attempt"
        with bound_trace(trace_id):
            for attempt in range(1, policy.attempts + 1):
                try:
                    price = await self._attempt(symbol, attempt)
                except _GiveUp as exc:
                    self._count("unknown")
                    return Fetched(symbol, None, attempt, str(exc), permanent=True)
                except _Retry as exc:
                    reason = str(exc)
                else:
                    self._count("ok")
                    return Fetched(symbol, price, attempt)
                if attempt < policy.attempts:
                    await asyncio.sleep(policy.backoff[attempt - 1])
            self._count("failed")
            log.warning(
                "price_fetch_gave_up", symbol=symbol, attempts=policy.attempts, reason=reason
            )
            return Fetched(symbol, None, policy.attempts, reason)

    async def _attempt(self, symbol: str, attempt: int) -> Decimal:
        started = time.perf_counter()
        status: int | None = None
        outcome = "error"
        try:
            async with asyncio.timeout(self.policy.timeout):
                async with self.session.get(
                    self.url, params={"category": "linear", "symbol": symbol}
                ) as resp:
                    status = resp.status
                    body = await resp.read()
            if status == 429 or status >= 500:
                raise _Retry(f"HTTP {status}")
            if status >= 400:
                raise _GiveUp(f"HTTP {status}")
            price = parse_mark_price(body, symbol)
            outcome = "ok"
            return price
        except TimeoutError:
            outcome = "timeout"
            raise _Retry(f"timeout after {self.policy.timeout}s") from None
        except aiohttp.ClientError as exc:
            outcome = "connection_error"
            raise _Retry(repr(exc)[:200]) from None
        except (_Retry, _GiveUp) as exc:
            outcome = "rejected" if isinstance(exc, _GiveUp) else "bad_answer"
            raise
        finally:
            latency = time.perf_counter() - started
            if self.metrics is not None:
                self.metrics.observe("pm_price_fetch_seconds", latency)
            log.info(
                "price_fetch",
                symbol=symbol,
                attempt=attempt,
                status=status,
                outcome=outcome,
                latency_ms=round(latency * 1000, 1),
                url=self.url,
            )

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.inc("pm_price_fetches_total", result=result)


def is_stale(leg: Position, now: datetime, threshold: float) -> bool:
    """The leg's price is missing or older than `threshold` seconds."""
    if leg.current_price is None or leg.last_price_at is None:
        return True
    return (now - leg.last_price_at).total_seconds() > threshold


class PriceRefresher(Service):
    """Keeps the mark price of the open positions this worker owns fresh (see module doc)."""

    def __init__(
        self,
        deps: Deps,
        live: Any,
        *,
        policy: RetryPolicy | None = None,
        check_every: float | None = None,
        max_concurrent: int = 8,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.settings, self.metrics, self.clock = deps
        self.live = live
        self.policy = policy or RetryPolicy()
        self.threshold = self.settings.price_staleness_threshold
        self.check_every = check_every or min(30.0, self.threshold / 2)
        self.max_concurrent = max_concurrent
        self.session: aiohttp.ClientSession | None = None
        self.client: TickerClient | None = None
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._not_before: dict[str, float] = {}
        self._slots = asyncio.Semaphore(max_concurrent)

    async def on_start(self) -> None:
        self.session = aiohttp.ClientSession(headers={"Accept": "application/json"})
        self.client = TickerClient(
            self.settings.price_api_url, self.session, self.policy, self.metrics
        )
        self.add_future(self._check_loop())

    async def on_stop(self) -> None:
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self.session is not None:
            await self.session.close()

    def due_assets(self, now: datetime) -> list[str]:
        """Owned assets with an open leg whose price is stale, not asked recently, idle."""
        clock = time.monotonic()
        due: list[str] = []
        for leg in self.live.owned_open_legs():
            asset = leg.asset
            if asset in due or asset in self._inflight:
                continue
            if self._not_before.get(asset, 0.0) > clock:
                continue
            if is_stale(leg, now, self.threshold):
                due.append(asset)
        return due

    async def _check_loop(self) -> None:
        while not self.should_stop:
            try:
                for asset in self.due_assets(self.clock.now()):
                    task = asyncio.ensure_future(self._refresh(asset))
                    self._inflight[asset] = task
                    task.add_done_callback(self._done(asset))
            except Exception as exc:  # a bug must not end the loop for good
                log.error("price_check_failed", error=repr(exc), exc_info=exc)
            await self.sleep(self.check_every)  # returns early when the worker stops

    def _done(self, asset: str) -> Callable[[asyncio.Task[None]], None]:
        def forget(_task: asyncio.Task[None]) -> None:
            self._inflight.pop(asset, None)

        return forget

    async def _refresh(self, asset: str) -> None:
        assert self.client is not None
        trace_id = new_trace_id()
        try:
            async with self._slots:
                result = await self.client.fetch(asset, trace_id)
        except Exception as exc:  # a bug: keep the last price, try again next check
            log.error("price_fetch_failed", asset=asset, error=repr(exc), exc_info=exc)
            return
        retry_in = self.threshold if (result.price is not None or result.permanent) else 0.0
        self._not_before[asset] = time.monotonic() + retry_in
        if result.price is None:
            with bound_trace(trace_id):
                log.info(
                    "price_kept", asset=asset, reason=result.reason, permanent=result.permanent
                )
            return
        try:
            await self.live.send(PriceUpdate(asset, result.price, trace_id))
        except Exception as exc:  # Kafka unavailable or stopping: try again next check
            self._not_before.pop(asset, None)
            with bound_trace(trace_id):
                log.warning("price_update_not_sent", asset=asset, error=repr(exc))
            return
        self.metrics.inc("pm_price_updates_sent_total")
        with bound_trace(trace_id):
            log.info("price_update_sent", asset=asset, mark_price=str(result.price))
