"""The JSON error shape of SPEC §7 (applied to every route by `web.endpoints`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

import orjson
from aiohttp import web

from pm_streams.logs import get_logger

log = get_logger("web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def bad_parameter(name: str, message: str, status: int = 400) -> ApiError:
    return ApiError(status, "invalid_parameter", f"{name}: {message}")


def json_response(
    body: object, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(body),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def error_response(err: ApiError) -> web.Response:
    return json_response(
        {"error": {"code": err.code, "message": err.message}}, err.status, err.headers
    )


def failure_response(request: web.Request, exc: Exception) -> web.Response | None:
    """The JSON error answer for an exception raised by a handler (None: re-raise)."""
    if isinstance(exc, ApiError):
        return error_response(exc)
    if isinstance(exc, web.HTTPException):
        if exc.status >= 400:
            code = "not_found" if exc.status == 404 else exc.reason.lower().replace(" ", "_")
            return error_response(ApiError(exc.status, code, exc.reason))
        return None
    log.error("request_failed", path=request.path, error=repr(exc), exc_info=exc)
    return error_response(ApiError(500, "internal_error", "internal error"))
