"""The operator's command line (SPEC §10a): `pm-streams worker`, `outputs`, `migrate`,
`send fill|position`, `demo`, `show-config` and `--version`.

Exit codes: 0 clean stop, 2 bad configuration, 1 anything else; the reason is one
line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import Any

import faust
import mode

from pm_streams import cli_client, logs, version
from pm_streams.settings import Settings, SettingsError

EX_CONFIG = 2
EX_FAILURE = 1


class _JsonLogging:
    """Our JSON logging instead of mode's console formatter (a mode/Faust worker mixin)."""

    def __init__(self, *args: Any, log_level: str, **kwargs: Any) -> None:
        self._pm_log_level = log_level
        super().__init__(*args, **kwargs)

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        logs.configure(self._pm_log_level)


class Worker(_JsonLogging, faust.Worker):
    """Faust's worker (the app, its agents and web server) with our logging."""


class ServiceWorker(_JsonLogging, mode.Worker):
    """mode's worker (signals, clean stop) for services without a Faust app."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pm-streams", description=__doc__)
    parser.add_argument("--version", action="version", version=f"pm-streams {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("worker", help="run one worker: agents, tables, web API, bridges")
    worker.add_argument("--web-port", type=int, help="override POSITION_MANAGER_PORT")
    outputs = sub.add_parser(
        "outputs",
        help="run the Postgres sink and the RabbitMQ republisher in their own process "
        "(for workers started with POSITION_MANAGER_OUTPUTS=separate)",
    )
    outputs.add_argument("--web-port", type=int, help="port of /health and /metrics")
    sub.add_parser("migrate", help="apply the Postgres migrations and exit")
    sub.add_parser("show-config", help="print the settings in force (secrets masked)")
    cli_client.add_commands(sub)
    return parser


def _fail(code: int, message: str) -> int:
    print(f"pm-streams: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        if getattr(args, "web_port", None) is not None:
            if not 0 < args.web_port < 65536:
                raise SettingsError("--web-port", f"{args.web_port} is not a TCP port")
            settings = settings.with_port(args.web_port)
    except SettingsError as exc:
        return _fail(EX_CONFIG, str(exc))
    logs.configure(settings.log_level)
    if args.command == "show-config":
        print(settings.describe())
        return 0
    if args.command in cli_client.COMMANDS:
        return cli_client.run(args, settings, _fail)
    if args.command == "migrate":
        return migrate(settings)
    if args.command == "outputs":
        return outputs(settings)
    return worker(settings)


def migrate(settings: Settings) -> int:
    from tables.db import migrate as run

    try:
        applied = asyncio.run(run(settings))
    except Exception as exc:
        return _fail(EX_FAILURE, f"migration failed: {exc!r}")
    logs.get_logger("pm_streams.cli").info(
        "migrated", schema=settings.postgres_schema, applied=applied
    )
    return 0


def worker(settings: Settings) -> int:
    from pm_streams.app import build

    if not settings.api_clients:
        return _fail(
            EX_CONFIG,
            "invalid setting POSITION_MANAGER_API_KEY: set it or POSITION_MANAGER_API_KEYS "
            "(the API refuses every request without a key)",
        )
    loop = _loop_or_none(settings)
    if loop is None:
        return EX_FAILURE
    service = build(settings)
    logs.get_logger("pm_streams.cli").info(
        "worker_starting",
        app_id=settings.app_id,
        event_loop=settings.event_loop,
        api=f"{settings.canonical_url}/api/v1/",
        health=f"{settings.canonical_url}/health",
    )
    return run(
        service.app,
        *service.services,
        loop=loop,
        log_level=settings.log_level,
        workdir=str(settings.worker_dir),
    )


def outputs(settings: Settings) -> int:
    from pm_streams.outputs import build_outputs

    loop = _loop_or_none(settings)
    if loop is None:
        return EX_FAILURE
    built = build_outputs(settings)
    logs.get_logger("pm_streams.cli").info(
        "outputs_starting",
        app_id=settings.app_id,
        event_loop=settings.event_loop,
        health=f"{settings.canonical_url}/health",
    )
    runner = ServiceWorker(
        *built.services, loop=loop, quiet=True, loglevel=settings.log_level,
        log_level=settings.log_level,
    )  # fmt: skip
    return _execute(runner)


def _loop_or_none(settings: Settings) -> asyncio.AbstractEventLoop | None:
    """`prepared_loop`, or None after saying on stderr that Kafka is unavailable."""
    try:
        return prepared_loop(settings)
    except Exception as exc:
        _fail(
            EX_FAILURE,
            f"kafka at {settings.kafka_broker} unavailable for "
            f"POSITION_MANAGER_KAFKA_WAIT={settings.kafka_wait:g}s: {exc!r}",
        )
        return None


def prepared_loop(settings: Settings) -> asyncio.AbstractEventLoop:
    """The worker's event loop, after the data dir and the Kafka topics exist (and
    with the AMQP frame reader of `bridges.receive` for its connections)."""
    from bridges import receive
    from pm_streams.topics import wait_for_kafka

    receive.install()
    settings.worker_dir.mkdir(parents=True, exist_ok=True)
    loop = new_event_loop(settings.event_loop)
    asyncio.set_event_loop(loop)
    loop.run_until_complete(wait_for_kafka(settings))
    return loop


def new_event_loop(kind: str) -> asyncio.AbstractEventLoop:
    """A new loop of the configured kind (`Settings.event_loop`)."""
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def run(
    app: faust.App,
    *services: Any,
    loop: asyncio.AbstractEventLoop,
    log_level: str,
    workdir: str | None = None,
) -> int:
    """Run a Faust worker until it stops; its exit code."""
    runner = Worker(
        app,
        *services,
        loop=loop,
        quiet=True,
        loglevel=log_level,
        log_level=log_level,
        workdir=workdir,
    )
    return _execute(runner)


def _execute(runner: mode.Worker) -> int:
    try:
        runner.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
