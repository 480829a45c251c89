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
from web.errors import ApiError, Handler
from web.routing import internal_token, is_internal

log = get_logger("web.auth")

OPEN_PATHS = ("/health", "/metrics", "/api/v1/openapi.json")


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
    """At most `limit` requests per client in any 60 s window."""

    window = 60.0

    def __init__(self) -> None:
        self.hits: dict[str, deque[float]] = {}

    def check(self, name: str, limit: int, now: float) -> float | None:
        """None when allowed; else seconds until the next request would be."""
        q = self.hits.get(name)
        if q is None:
            q = self.hits[name] = deque()
        while q and q[0] <= now - self.window:
            q.popleft()
        if len(q) >= limit:
            return q[0] + self.window - now
        q.append(now)
        return None


class Gate:
    """Key check and rate limit of one request (raises `ApiError` 401 / 429)."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.ring = KeyRing(settings)
        self.limiter = RateLimiter()
        self.token = internal_token(settings)

    def check(self, request: web.Request) -> None:
        path = request.path
        if not path.startswith("/api/v1/") or path in OPEN_PATHS:
            return
        presented = request.headers.get("X-API-Key", "")
        client = self.ring.find(presented) if presented else None
        if client is None:
            self.metrics.inc("pm_api_unauthorized_total")
            log.warning(
                "unauthorized",
                path=path,
                reason="unknown key" if presented else "missing key",
                key_fingerprint=key_fingerprint(presented) if presented else None,
                remote=request.remote,
                trace_id=request.headers.get("X-Trace-Id", "-"),
            )
            raise ApiError(401, "unauthorized", "missing or unknown X-API-Key")
        if is_internal(request, self.token):
            # Forwarded by another worker, which already counted it against the key.
            return
        limit = self.settings.limit_for(client)
        wait = self.limiter.check(client.name, limit, time.monotonic())
        if wait is not None:
            self.metrics.inc("pm_rate_limited_total", client=client.name)
            log.info("rate_limited", client=client.name, path=path)
            raise ApiError(
                429,
                "rate_limited",
                f"rate limit of {limit}/min exceeded",
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )


def auth_middleware(settings: Settings, metrics: Metrics) -> web.middleware:  # type: ignore[valid-type]
    gate = Gate(settings, metrics)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        gate.check(request)
        return await handler(request)

    return middleware
