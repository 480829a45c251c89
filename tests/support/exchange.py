"""A local HTTP server that plays the exchange's public tickers endpoint (SPEC §4.3).

`FakeExchange.prices` answers like Bybit (`result.list[0].markPrice` as a string);
`FakeExchange.script[symbol]` is a list of replies used first, one per request:
`Slow(seconds)`, `Status(code)`, `Garbage(body)`, `Unknown()` or `Price("123.4")`.
A symbol with neither a script nor a price gets Bybit's "symbol invalid" answer.
Every request is recorded with its arrival time.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import orjson
from aiohttp import web


@dataclass(frozen=True)
class Price:
    mark: str


@dataclass(frozen=True)
class Slow:
    seconds: float
    mark: str = "1"


@dataclass(frozen=True)
class Status:
    code: int


@dataclass(frozen=True)
class Garbage:
    body: bytes = b"<html>502 Bad Gateway</html>"


@dataclass(frozen=True)
class Unknown:
    pass


Reply = Price | Slow | Status | Garbage | Unknown


@dataclass(frozen=True)
class Request:
    symbol: str
    category: str
    at: float


def ticker_body(symbol: str, mark: str) -> bytes:
    return orjson.dumps(
        {
            "retCode": 0,
            "retMsg": "OK",
            "result": {
                "category": "linear",
                "list": [
                    {
                        "symbol": symbol,
                        "lastPrice": mark,
                        "indexPrice": mark,
                        "markPrice": mark,
                        "bid1Price": mark,
                        "ask1Price": mark,
                    }
                ],
            },
            "retExtInfo": {},
            "time": int(time.time() * 1000),
        }
    )


UNKNOWN_BODY = orjson.dumps(
    {"retCode": 10001, "retMsg": "params error: symbol invalid", "result": {}, "time": 0}
)


@dataclass
class FakeExchange:
    prices: dict[str, str] = field(default_factory=dict)
    script: dict[str, list[Reply]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    runner: web.AppRunner | None = None
    url: str = ""

    def of(self, symbol: str) -> list[Request]:
        return [r for r in self.requests if r.symbol == symbol]

    async def handle(self, request: web.Request) -> web.Response:
        symbol = request.query.get("symbol", "")
        self.requests.append(Request(symbol, request.query.get("category", ""), time.monotonic()))
        queue = self.script.get(symbol)
        reply: Reply
        if queue:
            reply = queue.pop(0)
        elif symbol in self.prices:
            reply = Price(self.prices[symbol])
        else:
            reply = Unknown()
        if isinstance(reply, Slow):
            await asyncio.sleep(reply.seconds)
            return web.Response(
                body=ticker_body(symbol, reply.mark), content_type="application/json"
            )
        if isinstance(reply, Status):
            return web.Response(status=reply.code, text="error")
        if isinstance(reply, Garbage):
            return web.Response(body=reply.body, content_type="text/html")
        if isinstance(reply, Unknown):
            return web.Response(body=UNKNOWN_BODY, content_type="application/json")
        return web.Response(body=ticker_body(symbol, reply.mark), content_type="application/json")

    async def start(self, host: str = "127.0.0.1") -> FakeExchange:
        app = web.Application()
        app.router.add_get("/v5/market/tickers", self.handle)
        self.runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://{host}:{port}"
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
