"""API keys (constant-time comparison) and per-key rate limits (sliding window)."""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections import deque

from aiohttp import web

from pm_streams.logs import get_logger
from pm_streams.metrics import Metrics
from pm_streams.settings import ApiClient, Settings
from web.errors import ApiError
from web.routing import FORWARDED, internal_token, is_internal

log = get_logger("web.auth")


def key_fingerprint(key: str) -> str:
    """What a log line may say about a key: a short hash, never the key."""
    return hashlib.sha256(key.encode()).hexdigest()[:8]


class KeyRing:
    def __init__(self, settings: Settings) -> None:
        self.clients = settings.api_clients
        self.settings = settings
        self._keys = [(client.key.encode(), client) for client in self.clients]

    def find(self, presented: str) -> ApiClient | None:
        found = None
        given = presented.encode()
        for key, client in self._keys:
            # Compare against every key, so timing says nothing about which matched.
            if hmac.compare_digest(key, given):
                found = client
        return found


class RateLimiter:
    """At most `limit` requests per client in any 60 s window.

    Requests are counted in 100 ms buckets (at most 601 per client, whatever the
    limit), and a bucket is forgotten only once all of it is more than 60 s old: the
    limit is never exceeded in any 60 s window, and a client may be refused at most
    100 ms before an exact per-request log would admit it. A log of every request's
    time (what this replaced) holds `limit` entries per busy client; at the rates a
    load test or a generous limit allows, that is a million floats.
    """

    window = 60.0
    ticks_per_second = 10
    _span = int(window * ticks_per_second)  # buckets in one window

    def __init__(self) -> None:
        self._clients: dict[str, _Buckets] = {}

    def check(self, name: str, limit: int, now: float) -> float | None:
        """None when allowed (and counted); else seconds until a request would be."""
        counted = self._clients.get(name)
        if counted is None:
            counted = self._clients[name] = _Buckets()
        tick = math.floor(now * self.ticks_per_second)
        last = counted.last
        if last is not None and last[0] == tick and counted.total < limit:
            # The common case: within the current bucket and under the limit even
            # before expired buckets are dropped (the next tick drops them).
            last[1] += 1
            counted.total += 1
            return None
        buckets = counted.buckets
        horizon = tick - self._span  # a bucket before it ended over 60 s ago
        while buckets and buckets[0][0] < horizon:
            counted.total -= buckets.popleft()[1]
        if counted.total >= limit:
            return self._wait(counted, limit, now)
        last = buckets[-1] if buckets else None
        if last is not None and last[0] == tick:
            last[1] += 1
        else:
            last = [tick, 1]
            buckets.append(last)
        counted.last = last
        counted.total += 1
        return None

    def _wait(self, counted: _Buckets, limit: int, now: float) -> float:
        """Seconds until enough buckets expire for one more request."""
        excess = counted.total - limit + 1
        for tick, count in counted.buckets:
            excess -= count
            if excess <= 0:
                return (tick + 1 + self._span) / self.ticks_per_second - now
        return self.window  # limit <= 0: never


class _Buckets:
    __slots__ = ("buckets", "last", "total")

    def __init__(self) -> None:
        self.buckets: deque[list[int]] = deque()  # [tick, requests], oldest first
        self.last: list[int] | None = None  # the newest bucket (`buckets[-1]`)
        self.total = 0


UNAUTHORIZED_PER_MIN = 30
"""Requests without a valid key answered (and logged) per client address a minute;
the rest get 429 and are only counted."""


class Gate:
    """Key check and rate limit of one request (raises `ApiError` 401 / 429); the
    routes that need no key (`/health`, `/metrics`, the OpenAPI document) never call it."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.ring = KeyRing(settings)
        self.limiter = RateLimiter()
        self.unknown = RateLimiter()
        """Requests without a valid key, per client address (SPEC §7 rev 2)."""
        self.token = internal_token(settings)
        self._limits = {client.name: settings.limit_for(client) for client in settings.api_clients}

    def check(self, request: web.Request) -> None:
        headers = request.headers
        presented = headers.get("X-API-Key", "")
        client = self.ring.find(presented) if presented else None
        if client is None:
            self.metrics.inc("pm_api_unauthorized_total")
            remote = request.remote or "-"
            wait = self.unknown.check(remote, UNAUTHORIZED_PER_MIN, time.monotonic())
            if wait is not None:  # refused without a log line each: a key-guessing loop
                self.metrics.inc("pm_rate_limited_total", client="unauthorized")
                raise ApiError(
                    429,
                    "rate_limited",
                    f"more than {UNAUTHORIZED_PER_MIN} requests without a valid key a minute",
                    {"Retry-After": str(max(1, math.ceil(wait)))},
                )
            log.warning(
                "unauthorized",
                path=request.path,
                reason="unknown key" if presented else "missing key",
                key_fingerprint=key_fingerprint(presented) if presented else None,
                remote=request.remote,
                trace_id=headers.get("X-Trace-Id", "-"),
            )
            raise ApiError(401, "unauthorized", "missing or unknown X-API-Key")
        if FORWARDED in headers:
            if is_internal(request, self.token):
                # Forwarded by another worker, which already counted it against the key.
                return
            self.metrics.inc("pm_forged_internal_total")
            log.warning("forged_internal_header", path=request.path, remote=request.remote)
            raise ApiError(403, "forbidden", f"{FORWARDED}: not a request of this deployment")
        limit = self._limits[client.name]
        wait = self.limiter.check(client.name, limit, time.monotonic())
        if wait is not None:
            self.metrics.inc("pm_rate_limited_total", client=client.name)
            log.info("rate_limited", client=client.name, path=request.path)
            raise ApiError(
                429,
                "rate_limited",
                f"rate limit of {limit}/min exceeded",
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )
