"""`pm-streams send fill|position` and `pm-streams demo`: talk to a running deployment
from the shell, with the worker's own settings (queues, vhost, credentials, port)."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from pm_streams.settings import Settings

COMMANDS = ("send", "demo")
DEV_KEY = "dev-key"
"""The key `scripts/run` gives a local worker when none is set."""


def _decimal(raw: str) -> str:
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a decimal number") from None
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError(f"{raw!r} must be a non-negative decimal")
    return raw


def _asset(raw: str) -> str:
    raw = raw.upper()
    if not re.fullmatch(r"[A-Z0-9]{2,20}", raw):
        raise argparse.ArgumentTypeError(f"{raw!r} must match ^[A-Z0-9]{{2,20}}$")
    return raw


def add_commands(sub: Any) -> None:
    send = sub.add_parser("send", help="publish one well-formed message to an input queue")
    kinds = send.add_subparsers(dest="kind", required=True)
    fill = kinds.add_parser("fill", help="an order execution (order-manager.order_executed)")
    fill.add_argument("--asset", required=True, type=_asset)
    fill.add_argument("--side", required=True, type=str.upper, choices=("BUY", "SELL"))
    fill.add_argument("--qty", required=True, type=_decimal)
    fill.add_argument("--price", required=True, type=_decimal)
    fill.add_argument("--fee", default="0", type=_decimal)
    fill.add_argument("--execution-id", help="default: a fresh unique id")
    fill.add_argument("--mode", default="one-way", choices=("one-way", "hedge-long", "hedge-short"))
    position = kinds.add_parser("position", help="an exchange position update (ws-gateway)")
    position.add_argument("--asset", required=True, type=_asset)
    position.add_argument("--side", required=True, type=str.capitalize, choices=("Buy", "Sell"))
    position.add_argument("--size", required=True, type=_decimal)
    position.add_argument("--avg-price", type=_decimal)
    position.add_argument("--mark-price", type=_decimal)

    demo = sub.add_parser("demo", help="stream a realistic sample and show the portfolio")
    demo.add_argument("--fills", type=int, default=500)
    demo.add_argument("--assets", type=int, default=8)
    demo.add_argument("--rate", type=float, default=200.0, help="messages per second")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--url", help="the API's base URL (default: this host's worker)")
    demo.add_argument("--api-key", help="default: POSITION_MANAGER_API_KEY(S), else dev-key")


def run(args: argparse.Namespace, settings: Settings, fail: Callable[[int, str], int]) -> int:
    from pm_streams.domain import RejectedInput

    try:
        if args.command == "send":
            return asyncio.run(_send(args, settings))
        if args.fills < 1 or not 1 <= args.assets <= 17 or args.rate <= 0:
            return fail(2, "demo: --fills >= 1, --assets 1..17 and --rate > 0")
        return asyncio.run(_demo(args, settings))
    except RejectedInput as exc:
        return fail(2, f"not sent: {exc}")
    except (OSError, RuntimeError, TimeoutError) as exc:
        return fail(1, f"{args.command} failed: {exc}")


def _message(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    from bridges.client import fill_message, position_message

    if args.kind == "fill":
        idx = {"hedge-long": 1, "hedge-short": 2}.get(args.mode)
        return "order_executed", fill_message(
            asset=args.asset, side=args.side, qty=args.qty, price=args.price, fee=args.fee,
            execution_id=args.execution_id, mode="hedge" if idx else "one-way",
            position_idx=idx,
        )  # fmt: skip
    return "position", position_message(
        asset=args.asset, side=args.side, size=args.size, avg_price=args.avg_price,
        mark_price=args.mark_price,
    )  # fmt: skip


async def _send(args: argparse.Namespace, settings: Settings) -> int:
    from bridges.client import InputPublisher, check

    kind, message = _message(args)
    check(kind, message)
    async with InputPublisher(settings) as publisher:
        queue = await publisher.publish(kind, message)
    print(json.dumps({"queue": queue, "message": message}))
    return 0


def api_key(settings: Settings) -> str:
    return settings.api_clients[0].key if settings.api_clients else DEV_KEY


async def _demo(args: argparse.Namespace, settings: Settings) -> int:
    import aiohttp

    from bridges.client import InputPublisher
    from bridges.demo import Api, run_demo

    url = args.url or settings.canonical_url
    async with aiohttp.ClientSession() as session, InputPublisher(settings) as publisher:
        api = Api(session, url, args.api_key or api_key(settings))
        portfolio = await run_demo(
            publisher, api, fills=args.fills, assets=args.assets, rate=args.rate, seed=args.seed
        )
    keys = ("total_exposure_usdt", "net_exposure_usdt", "total_unrealized_pnl_usdt",
            "total_realized_pnl_usdt", "total_pnl_usdt", "open_positions_count")  # fmt: skip
    print("\nportfolio")
    for key in keys:
        print(f"  {key:<28} {portfolio.get(key)}")
    print(
        "\nwhere to look\n"
        f"  positions  curl -s -H 'X-API-Key: <key>' {url}/api/v1/positions\n"
        f"  API docs   {url}/api/v1/docs\n"
        f"  health     {url}/health   metrics {url}/metrics\n"
        "  Grafana    http://127.0.0.1:3000 (docker compose; dashboards in grafana/)\n"
        f"  Postgres   schema {settings.postgres_schema} on "
        f"{settings.postgres_host}:{settings.postgres_port}, tables positions, position_fills"
    )
    return 0
