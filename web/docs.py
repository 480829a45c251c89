"""`/api/v1/docs`: Swagger UI over `/api/v1/openapi.json`, served from the installed
`swagger-ui-bundle` package (no CDN: the desk's hosts need not reach the internet).

Only the handful of files the page loads are served, read once at first use.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from web.errors import ApiError

ASSETS = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "application/javascript",
    "swagger-ui-standalone-preset.js": "application/javascript",
    "favicon-32x32.png": "image/png",
}

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>position-manager API</title>
  <link rel="stylesheet" href="/api/v1/docs/swagger-ui.css">
  <link rel="icon" type="image/png" href="/api/v1/docs/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/api/v1/docs/swagger-ui-bundle.js"></script>
  <script src="/api/v1/docs/swagger-ui-standalone-preset.js"></script>
  <script>
    window.ui = SwaggerUIBundle({
      url: "/api/v1/openapi.json",
      dom_id: "#swagger-ui",
      deepLinking: true,
      persistAuthorization: true,
      presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
      layout: "StandaloneLayout"
    });
  </script>
</body>
</html>
"""


def _bundle_dir() -> Path:
    from swagger_ui_bundle import swagger_ui_path

    return Path(swagger_ui_path)


class DocsPage:
    """The page and its assets (cached bytes)."""

    def __init__(self) -> None:
        self._cache: dict[str, bytes] = {}

    async def page(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text=PAGE, content_type="text/html", charset="utf-8")

    async def asset(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["file"]
        content_type = ASSETS.get(name)
        if content_type is None:
            raise ApiError(404, "not_found", f"file: no such asset {name!r}")
        body = self._cache.get(name)
        if body is None:
            body = self._cache[name] = (_bundle_dir() / name).read_bytes()
        return web.Response(
            body=body,
            content_type=content_type,
            headers={"Cache-Control": "public, max-age=86400"},
        )
