"""Run real `pm-streams worker` subprocesses and talk to them over HTTP and AMQP."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import orjson

from bridges.inbound import queue_arguments
from pm_streams.names import OUTPUT_EVENT_TYPES, QueueNames
from tests.support.cleanup import drop, run_sync

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "test-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass
class Deployment:
    """One isolated deployment: its own app id, queues, Postgres schema and data dir."""

    tmp: Path
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    partitions: int = 4
    extra_env: dict[str, str] = field(default_factory=dict)
    dropped: bool = False

    @property
    def app_id(self) -> str:
        return f"pmtest-{self.run_id}"

    @property
    def position_queue(self) -> str:
        return f"t{self.run_id}.ws-gateway.position"

    @property
    def order_queue(self) -> str:
        return f"t{self.run_id}.order-manager.order_executed"

    @property
    def output_prefix(self) -> str:
        return f"t{self.run_id}.position-manager"

    @property
    def schema(self) -> str:
        return f"t_{self.run_id}"

    def env(self, port: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("POSITION_MANAGER_")}
        env.update(
            {
                "POSITION_MANAGER_APP_ID": self.app_id,
                "POSITION_MANAGER_PORT": str(port),
                "POSITION_MANAGER_API_KEY": API_KEY,
                "POSITION_MANAGER_INTERNAL_SECRET": f"internal-{self.run_id}-secret",
                "POSITION_MANAGER_PARTITIONS": str(self.partitions),
                "POSITION_MANAGER_DATA_DIR": str(self.tmp / "data"),
                "POSITION_MANAGER_QUEUE_POSITION": self.position_queue,
                "POSITION_MANAGER_QUEUE_ORDER_EXECUTED": self.order_queue,
                "POSITION_MANAGER_OUTPUT_PREFIX": self.output_prefix,
                "POSITION_MANAGER_POSTGRES_SCHEMA": self.schema,
                "POSITION_MANAGER_SESSION_TIMEOUT": "6",
                "POSITION_MANAGER_LOG_LEVEL": "INFO",
                "POSITION_MANAGER_RATE_LIMIT_DEFAULT": "1000000",
                # Never the real exchange from a test: a closed loopback port unless a
                # test starts its own stand-in server (extra_env overrides this).
                "POSITION_MANAGER_PRICE_API_URL": "http://127.0.0.1:9",
            }
        )
        env.update(self.extra_env)
        return env

    @property
    def queues(self) -> list[str]:
        """Every queue a worker of this deployment declares."""
        inputs = [self.position_queue, self.order_queue]
        outputs = [f"{self.output_prefix}.{t}" for t in OUTPUT_EVENT_TYPES]
        return [*inputs, *map(QueueNames.dlq, inputs), *outputs]

    def drop(self, *, strict: bool = True) -> None:
        """Delete this deployment's topics, queues and schema (`tests.support.cleanup`);
        its processes must have stopped. Once: later calls do nothing. Not `strict` (a
        fixture's teardown): a failure is a warning, not an error of the test, which
        was about something else (`tests/integration/test_cleanup.py` tests the drop)."""
        if self.dropped:
            return
        self.dropped = True
        try:
            run_sync(drop(app_ids=[self.app_id], queues=self.queues, schemas=[self.schema]))
        except Exception as exc:
            if strict:
                raise
            warnings.warn(f"could not drop {self.app_id}: {exc!r}", stacklevel=2)


class WorkerProcess:
    """`pm-streams worker` (or another command with /health, e.g. `outputs`)."""

    def __init__(
        self, deployment: Deployment, port: int | None = None, command: str = "worker"
    ) -> None:
        self.deployment = deployment
        self.port = port or free_port()
        self.command = command
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = deployment.tmp / f"{command}-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> WorkerProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pm_streams.cli", self.command, "--web-port", str(self.port)],
            cwd=ROOT,
            env=self.deployment.env(self.port),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        return self

    def signal(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)

    def stop(self) -> int:
        return self.signal(signal.SIGTERM)

    def kill(self) -> int:
        return self.signal(signal.SIGKILL)

    def ensure_stopped(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return "(no log)"

    def assert_running(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.tail()}")

    async def get(self, path: str, **params: str) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as s,
            s.get(
                self.url + path,
                params=params,
                headers={"X-API-Key": API_KEY},
                timeout=aiohttp.ClientTimeout(total=10),
            ) as resp,
        ):
            body = await resp.read()
            try:
                return resp.status, orjson.loads(body)
            except orjson.JSONDecodeError:
                return resp.status, body.decode()

    async def wait_healthy(self, timeout: float = 90.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            self.assert_running()
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                status, body = await self.get("/health")
                last = body
                if status == 200 and body.get("status") == "healthy":
                    return dict(body)
            await asyncio.sleep(0.5)
        raise AssertionError(f"worker not healthy in {timeout}s: {last}\n{self.tail()}")

    async def wait_ready(self, timeout: float = 90.0) -> None:
        """Until `/readyz` answers 200 (partitions assigned, no rebalance running)."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            self.assert_running()
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                status, last = await self.get("/readyz")
                if status == 200:
                    return
            await asyncio.sleep(0.1)
        raise AssertionError(f"worker not ready in {timeout}s: {last}\n{self.tail()}")

    async def wait_versions(self, versions: dict[str, int], timeout: float) -> None:
        """Wait until the API answers each asset's one-way position at its version."""
        for asset, version in versions.items():
            await self.wait_for(
                f"/api/v1/positions/{asset}",
                lambda st, b, v=version: st == 200 and b["version"] == v,
                timeout=timeout,
            )

    async def wait_for(
        self, path: str, predicate: Any, timeout: float = 60.0, **params: str
    ) -> Any:
        """Poll `path` until predicate(status, body) is true; return the body."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            self.assert_running()
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                status, body = await self.get(path, **params)
                last = (status, body)
                if predicate(status, body):
                    return body
            await asyncio.sleep(0.2)
        raise AssertionError(f"{path}: condition not met in {timeout}s, last {last}\n{self.tail()}")


async def publish(
    queue: str, messages: list[Any], url: str = "amqp://guest:guest@127.0.0.1/"
) -> None:
    """Publish JSON messages (dicts or raw bytes) to a queue declared as the bridge declares it."""
    connection = await aio_pika.connect_robust(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(queue, durable=True, arguments=queue_arguments())
        for body in messages:
            raw = body if isinstance(body, bytes) else orjson.dumps(body)
            await channel.default_exchange.publish(
                aio_pika.Message(raw, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=queue,
            )


async def drain(
    queue: str, url: str = "amqp://guest:guest@127.0.0.1/"
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Everything currently in a queue (declared durable if missing)."""
    connection = await aio_pika.connect_robust(url)
    out: list[aio_pika.abc.AbstractIncomingMessage] = []
    async with connection:
        channel = await connection.channel()
        q = await channel.declare_queue(queue, durable=True)
        while True:
            message = await q.get(fail=False, no_ack=True)
            if message is None:
                return out
            out.append(message)
