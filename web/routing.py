"""Answer a request on the worker that owns the data it reads.

Faust's router knows which worker holds each partition of each table. A request for
an asset owned elsewhere is forwarded once (marked with a header carrying the
deployment's internal token, so it is never forwarded again and not counted twice
against the client's rate limit); portfolio requests go to the owner of the
portfolio's single partition the same way. While partitions are being (re)assigned
the answer is 503 with Retry-After, never a possibly stale answer.

`GET /api/v1/positions` needs every asset: `gather` asks every worker that owns a
partition of the positions table (itself included) for the assets it owns, and
merges. A worker answers such a sub-request only for keys the router says it owns,
so standby copies never produce duplicates or stale rows.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from yarl import URL

from pm_streams.logs import get_logger
from pm_streams.runtime import ownership
from pm_streams.settings import Settings
from web.errors import ApiError

log = get_logger("web.routing")

FORWARDED = "X-PM-Forwarded"
SCOPE = "X-PM-Scope"
"""`local` on a fan-out sub-request: answer only for the keys this worker owns."""
_PASS_HEADERS = ("X-API-Key", "X-Trace-Id", "Accept")
_UNKNOWN = URL("unknown:")  # a sentinel: no owner cached yet


def internal_token(settings: Settings) -> str:
    """The proof a forwarded request carries: an HMAC of the app id under
    `POSITION_MANAGER_INTERNAL_SECRET`, which every worker of the deployment holds and no
    API client can derive (it is not made of the API keys). Without that setting a
    process-local random token: this worker then accepts no forwarded request and
    forwards none (`Router.forward` says which variable to set)."""
    secret = settings.internal_secret or _PROCESS_SECRET
    return hmac.new(secret.encode(), settings.app_id.encode(), hashlib.sha256).hexdigest()


_PROCESS_SECRET = secrets.token_hex(32)
"""Stands in for an unset `POSITION_MANAGER_INTERNAL_SECRET`: known to no other process."""

NO_SECRET = (
    "POSITION_MANAGER_INTERNAL_SECRET must be set (the same on every worker) when more "
    "than one worker serves"
)


def is_internal(request: web.Request, token: str) -> bool:
    presented = request.headers.get(FORWARDED, "")
    return bool(presented) and hmac.compare_digest(presented.encode(), token.encode())


def unavailable(reason: str) -> ApiError:
    return ApiError(503, "unavailable", reason, {"Retry-After": "1"})


class Router:
    def __init__(self, app: Any, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.token = internal_token(settings)
        self._session: aiohttp.ClientSession | None = None
        self._own = ownership.ident(settings.canonical_url)
        # (table, key) -> owner URL (None = this worker), valid for one assignment:
        # Faust replaces the assignor's partition -> URL map on every rebalance.
        self._owners: dict[tuple[str, str], URL | None] = {}
        self._owners_of: object = None

    def ready(self) -> bool:
        return not ownership.reassigning(self.app)

    def _check_ready(self) -> None:
        if not self.ready():
            raise unavailable("partitions are being reassigned")

    def own_url(self) -> URL:
        return URL(self.app.conf.canonical_url)

    def owner(self, table: str, key: str) -> URL | None:
        """None when this worker owns `key` of `table`; else the owner's URL.

        On every API request, so a dict hit: Faust replaces the assignor's
        partition -> URL map on every rebalance, and the cache lives as long as it.
        """
        assignment = self.assignment()
        if assignment is not self._owners_of or len(self._owners) > 100_000:
            self._owners = {}
            self._owners_of = assignment
        found = self._owners.get((table, key), _UNKNOWN)
        if found is not _UNKNOWN:
            return found
        try:
            url = ownership.owner_url(self.app, table, key)
        except (KeyError, TypeError, ValueError):
            raise unavailable("no worker owns this partition yet") from None
        dest = None if ownership.ident(url) == self._own else url
        self._owners[(table, key)] = dest
        return dest

    def assignment(self) -> object:
        """The current partition assignment, as an object that is replaced on every
        rebalance; 503 while one is in progress. An answer computed under one
        assignment stays routed right while this returns the same object."""
        if ownership.reassigning(self.app):  # `_check_ready`, inlined: every request
            raise unavailable("partitions are being reassigned")
        return ownership.assignment(self.app)

    def owns(self, table: str, key: str) -> bool:
        try:
            return self.owner(table, key) is None
        except ApiError:
            return False

    def hosts(self, changelog_topic: str) -> list[URL]:
        """Every worker that actively owns a partition of the changelog topic."""
        self._check_ready()
        urls = ownership.hosts(self.app, changelog_topic)
        if not urls:
            raise unavailable("no worker owns the positions yet")
        return [URL(u) for u in sorted(urls)]

    def active_count(self, changelog_topic: str) -> int:
        """How many partitions of the changelog topic this worker actively owns."""
        return ownership.active_count(self.app, changelog_topic)

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=10),
                connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=30),
            )
        return self._session

    def _headers(
        self, request: web.Request, extra: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        if not self.settings.internal_secret:
            log.error("internal_secret_missing", path=request.path)
            raise ApiError(503, "misconfigured", NO_SECRET)
        headers = {h: request.headers[h] for h in _PASS_HEADERS if h in request.headers}
        headers[FORWARDED] = self.token
        headers.update(extra or {})
        return headers

    async def forward(self, dest: URL, request: web.Request) -> web.Response:
        if request.headers.get(FORWARDED):
            raise unavailable("ownership moved while the request was in flight")
        url = request.url.with_scheme(dest.scheme or "http").with_host(dest.host or "")
        url = url.with_port(dest.port)
        try:
            async with self.session().request(
                request.method, url, headers=self._headers(request), data=await request.read()
            ) as resp:
                body = await resp.read()
                out = web.Response(body=body, status=resp.status)
                out.content_type = resp.content_type
                if "Retry-After" in resp.headers:
                    out.headers["Retry-After"] = resp.headers["Retry-After"]
                return out
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("forward_failed", url=str(url), error=repr(exc))
            raise unavailable("the owning worker did not answer") from None

    async def fetch_json(
        self,
        dest: URL,
        request: web.Request,
        path: str,
        params: Mapping[str, str] | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> Any:
        """GET `path` on another worker as an internal request; 200 JSON or 503."""
        url = URL.build(scheme=dest.scheme or "http", host=dest.host or "", port=dest.port)
        url = url.with_path(path).with_query(dict(params or {}))
        try:
            async with self.session().get(
                url, headers=self._headers(request, extra_headers)
            ) as resp:
                body = await resp.read()
                if resp.status != 200:
                    retry = resp.headers.get("Retry-After")
                    log.warning("internal_request_failed", url=str(url), status=resp.status)
                    if resp.status == 503 or retry:
                        raise unavailable("a worker holding part of the answer is not ready")
                    raise ApiError(502, "bad_gateway", f"worker answered {resp.status}")
                return orjson.loads(body)
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
            log.warning("internal_request_failed", url=str(url), error=repr(exc))
            raise unavailable("a worker holding part of the answer did not answer") from None

    async def gather(
        self,
        request: web.Request,
        changelog_topic: str,
        local: Any,
        path: str,
        params: Mapping[str, str],
    ) -> list[Any]:
        """The local answer plus every other owning worker's, in host order."""
        own = self._own
        tasks = []
        for host in self.hosts(changelog_topic):
            if ownership.ident(host) == own:
                tasks.append(asyncio.sleep(0, local))
            else:
                tasks.append(self.fetch_json(host, request, path, params, {SCOPE: "local"}))
        return list(await asyncio.gather(*tasks))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
