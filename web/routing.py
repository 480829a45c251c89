"""Answer an asset's request on the worker that owns the asset's partition.

Faust's router knows which worker holds each partition of the positions table.
A request for an asset owned elsewhere is forwarded once (marked with a header so
it is never forwarded again); while partitions are being (re)assigned the answer
is 503 with Retry-After, never a possibly stale answer.
"""

from __future__ import annotations

import aiohttp
from aiohttp import web
from yarl import URL

from pm_streams.logs import get_logger
from pm_streams.names import POSITIONS_TABLE
from web.errors import ApiError

log = get_logger("web.routing")

FORWARDED = "X-PM-Forwarded"
_PASS_HEADERS = ("X-API-Key", "X-Trace-Id", "Accept")


def unavailable(reason: str) -> ApiError:
    return ApiError(503, "unavailable", reason, {"Retry-After": "1"})


class Router:
    def __init__(self, app: object) -> None:
        self.app = app
        self._session: aiohttp.ClientSession | None = None

    def ready(self) -> bool:
        app = self.app
        return not (getattr(app, "rebalancing", False) or getattr(app, "in_recovery", False))

    def owner(self, asset: str) -> URL | None:
        """None when this worker owns the asset; else the owner's URL."""
        if not self.ready():
            raise unavailable("partitions are being reassigned")
        try:
            dest = URL(self.app.router.key_store(POSITIONS_TABLE, asset))  # type: ignore[attr-defined]
        except (KeyError, TypeError, ValueError):
            raise unavailable("no worker owns this asset yet") from None
        own = URL(self.app.conf.canonical_url)  # type: ignore[attr-defined]
        if (dest.host, dest.port) == (own.host, own.port):
            return None
        return dest

    async def forward(self, dest: URL, request: web.Request) -> web.Response:
        if request.headers.get(FORWARDED):
            raise unavailable("ownership moved while the request was in flight")
        url = request.url.with_scheme(dest.scheme or "http").with_host(dest.host or "")
        url = url.with_port(dest.port)
        headers = {h: request.headers[h] for h in _PASS_HEADERS if h in request.headers}
        headers[FORWARDED] = "1"
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        try:
            async with self._session.request(
                request.method, url, headers=headers, data=await request.read()
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

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
