"""Every API route goes through `Endpoints.add`: key and rate limit, the JSON error
shape, and the request metrics of SPEC §7, wrapped around each handler.

Per-route wrappers rather than an aiohttp middleware: with any middleware aiohttp
builds a handler chain per request (an `lru_cache` lookup, a `partial`, and its own
`_fix_request_current_app` frame), and the wrapper knows statically whether its
route is open and which metric series it counts into, where a middleware has to
work both out from the request. `bench/bench_api.py`: the middleware and its
dispatch were ~40 % of the CPU our code adds to a cached `GET /positions/{asset}`.

A catch-all route registered last (`finish`) answers everything no route matches:
404, or 405 with `Allow` when the path exists under another method, in the same
JSON shape.
"""

from __future__ import annotations

import time

from aiohttp import web

from pm_streams.metrics import Labels, Metrics
from web.auth import Gate
from web.errors import ApiError, Handler, failure_response

API_PREFIX = "/api/v1/"
UNMATCHED = "unmatched"
"""The `route` label of requests no route matched."""


class Endpoints:
    def __init__(self, web_app: web.Application, gate: Gate, metrics: Metrics) -> None:
        self.web_app = web_app
        self.gate = gate
        self.metrics = metrics
        self._open: set[str] = set()
        self._catch_all: web.AbstractResource | None = None

    def add(self, method: str, path: str, handler: Handler, *, public: bool = False) -> None:
        """Route `method path` to `handler`; `public` routes need no API key."""
        if public:
            self._open.add(path)
        endpoint = self.wrap(path, handler, public=public)
        if method == "GET":
            self.web_app.router.add_get(path, endpoint)  # and HEAD
        else:
            self.web_app.router.add_route(method, path, endpoint)

    def finish(self) -> None:
        """Register the catch-all; call after every `add`."""
        route = self.web_app.router.add_route(
            "*", "/{_unmatched:.*}", self.wrap(UNMATCHED, self.unmatched, public=True)
        )  # `unmatched` asks for a key itself, under /api/v1/
        self._catch_all = route.resource

    def wrap(self, route: str, handler: Handler, *, public: bool = False) -> Handler:
        gate = None if public else self.gate
        metrics = self.metrics
        observe = metrics.histogram("pm_api_request_seconds", route=route).observe
        requests = metrics.counter_series("pm_api_requests_total")
        kinds: dict[tuple[str, int], Labels] = {}  # (method, status) -> request counter key
        perf_counter = time.perf_counter

        async def endpoint(request: web.Request) -> web.StreamResponse:
            started = perf_counter()
            status = 500
            try:
                try:
                    if gate is not None:
                        gate.check(request)
                    response = await handler(request)
                except Exception as exc:
                    failure = failure_response(request, exc)
                    if failure is None:
                        if isinstance(exc, web.HTTPException):
                            status = exc.status
                        raise
                    response = failure
                status = response.status
                return response
            finally:
                observe(perf_counter() - started)
                kind = (request.method, status)
                key = kinds.get(kind)
                if key is None:
                    key = kinds[kind] = metrics.series_key(
                        route=route, method=kind[0], status=str(status)
                    )
                requests[key] = requests.get(key, 0) + 1

        endpoint.__name__ = getattr(handler, "__name__", route)
        return endpoint

    async def unmatched(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.startswith(API_PREFIX) and path not in self._open:
            self.gate.check(request)
        allowed = await self._allowed_methods(request)
        if allowed:
            headers = {"Allow": ", ".join(sorted(allowed))}
            raise ApiError(405, "method_not_allowed", "Method Not Allowed", headers)
        raise ApiError(404, "not_found", "Not Found")

    async def _allowed_methods(self, request: web.Request) -> set[str]:
        """The methods other routes accept for this path (empty: no such path)."""
        allowed: set[str] = set()
        for resource in self.web_app.router.resources():
            if resource is self._catch_all:
                continue
            match, methods = await resource.resolve(request)
            if match is None:
                allowed |= methods
        return allowed
