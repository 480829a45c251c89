"""Typed, frozen settings read from the environment (SPEC §10).

`Settings.from_env()` is the only place that reads `os.environ`. A bad value raises
`SettingsError` naming the variable; the CLI turns it into one stderr line and exit 2.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from pm_streams import env as v
from pm_streams.names import KafkaNames, QueueNames

P = "POSITION_MANAGER_"
T = TypeVar("T")

DEFAULT_TIERS = "model-service:100,risk-manager:200,ui:1000"


class SettingsError(ValueError):
    """An environment variable has a value the service cannot run with."""

    def __init__(self, variable: str, reason: str) -> None:
        super().__init__(f"invalid setting {variable}: {reason}")
        self.variable = variable
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ApiClient:
    """One API key with its name (for logs and metrics) and its limit per minute."""

    name: str
    key: str = field(repr=False)
    limit_per_min: int


@dataclass(frozen=True, slots=True)
class Settings:
    # service
    port: int = 4800
    web_bind: str = "127.0.0.1"
    web_host: str = "127.0.0.1"
    log_level: str = "INFO"
    api_clients: tuple[ApiClient, ...] = ()
    internal_secret: str = field(default="", repr=False)
    """Authenticates requests forwarded between workers (SPEC §7 rev 2); API clients
    cannot derive it. Required when more than one worker serves."""
    rate_limit_default: int = 100
    rate_limit_overrides: Mapping[str, int] = field(default_factory=dict)
    # engine
    use_ws_avg_price: bool = True
    avg_price_diff_threshold: Decimal = Decimal("0.001")
    size_validation_threshold: Decimal = Decimal("0.0001")
    size_reconcile_grace: float = 10.0
    fill_id_capacity: int = 256
    """Fill ids the engine keeps within one batch's unwritten book (the records carry
    none: `dedup_horizon` and `pm_streams.fill_ids`)."""
    dedup_horizon: float = 7 * 24 * 3600.0
    """Seconds an applied fill's identity is remembered (SPEC §4.1 rev 2)."""
    price_staleness_threshold: float = 300.0
    price_api_url: str = "https://api.bybit.com"
    # periodic work
    snapshot_interval: float = 3600.0
    snapshot_retention_days: int = 365
    validation_interval: float = 1800.0
    metrics_cache_ttl: float = 86400.0
    portfolio_window: float = 60.0
    portfolio_event_interval: float = 1.0
    metrics_write_interval: float = 30.0
    max_exposure_usdt: Decimal | None = None
    # kafka / faust
    kafka_broker: str = "kafka://127.0.0.1:9092"
    app_id: str = "position-manager"
    partitions: int = 8
    data_dir: Path = Path("var/worker")
    store: str = "memory://"
    session_timeout: float = 10.0
    kafka_wait: float = 300.0
    """Seconds a starting worker waits for Kafka before it gives up (exit 1)."""
    instance_id: str | None = None
    batch_max: int = 1000
    """Most input events the positions agent applies before writing the table."""
    batch_window: float = 0.010
    """Under steady input, a batch closes this long (s) after the previous one; the first
    event after a quiet spell is taken at once. Fewer, larger batches leave CPU headroom
    that a shorter window spends on wake-ups (bench/bench_api.py)."""
    producer_linger: float = 0.005
    """How long (s) the Kafka producer holds a record for more to the same partition."""
    event_loop: str = "uvloop"
    """The processes' asyncio event loop: "uvloop" (libuv; the same work for about a tenth
    less CPU, bench/pipeline.py) or "asyncio" (the standard library's)."""
    outputs: str = "worker"
    """Where the Postgres sink and the RabbitMQ republisher run: "worker" (inside every
    worker, SPEC §10a) or "separate" (workers leave them to `pm-streams outputs`)."""
    # postgres
    postgres_host: str = "127.0.0.1"
    postgres_port: int = 5432
    postgres_db: str = "position_manager"
    postgres_user: str = "position_manager"
    postgres_password: str = field(default="position_manager", repr=False)
    postgres_schema: str = "public"
    postgres_sslmode: str = "prefer"
    """libpq's `sslmode` for every Postgres connection (`prefer`: asyncpg's default, TLS
    when the server offers it, unverified); `verify-full` for a Postgres across a network."""
    # rabbitmq
    rabbitmq_host: str = "127.0.0.1"
    rabbitmq_port: int = 5672
    rabbitmq_user: str = "guest"
    rabbitmq_password: str = field(default="guest", repr=False)
    rabbitmq_vhost: str = "/"
    queues: QueueNames = field(default_factory=QueueNames)

    @property
    def kafka(self) -> KafkaNames:
        return KafkaNames(self.app_id)

    @property
    def kafka_bootstrap(self) -> str:
        """The broker list in aiokafka's form (no `kafka://` scheme)."""
        return ",".join(
            part.strip().removeprefix("kafka://") for part in self.kafka_broker.split(";")
        )

    @property
    def postgres_dsn(self) -> str:
        """Credentials and names percent-escaped: a password such as `p@ss/w#rd` is a
        password, never part of the host, path or query."""
        return (
            f"postgresql://{_q(self.postgres_user)}:{_q(self.postgres_password)}"
            f"@{_host(self.postgres_host)}:{self.postgres_port}/{_q(self.postgres_db)}"
            f"?sslmode={self.postgres_sslmode}"
        )

    @property
    def rabbitmq_url(self) -> str:
        return (
            f"amqp://{_q(self.rabbitmq_user)}:{_q(self.rabbitmq_password)}"
            f"@{_host(self.rabbitmq_host)}:{self.rabbitmq_port}/{_q(self.rabbitmq_vhost)}"
        )

    @property
    def canonical_url(self) -> str:
        return f"http://{self.web_host}:{self.port}"

    @property
    def worker_dir(self) -> Path:
        return self.data_dir / self.app_id / f"{self.port}"

    def describe(self) -> str:
        """One `name = value` line per setting, secrets masked (`pm-streams show-config`)."""
        from dataclasses import fields

        lines = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in SECRET_FIELDS:
                value = mask(value)
            elif f.name == "api_clients":
                value = ", ".join(f"{c.name}:{mask(c.key)}:{c.limit_per_min}" for c in value)
            elif isinstance(value, Mapping):
                value = dict(value)
            lines.append(f"{f.name} = {value}")
        return "\n".join(lines)

    def limit_for(self, client: ApiClient) -> int:
        return self.rate_limit_overrides.get(client.name, client.limit_per_min)

    def with_port(self, port: int) -> Settings:
        """The same settings for a worker serving on another web port."""
        from dataclasses import replace

        return replace(self, port=port)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        return _Reader(os.environ if env is None else env).settings()


SECRET_FIELDS = frozenset({"postgres_password", "rabbitmq_password", "internal_secret"})


def _q(part: str) -> str:
    return quote(part, safe="")


def _host(host: str) -> str:
    """A host name or address as is (an IPv6 address in brackets); anything that could
    end the authority part is refused when the settings are read."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def mask(secret: str) -> str:
    """Enough to tell two secrets apart in a support chat, never the secret itself."""
    return "(empty)" if not secret else "***"


SHIPPED_KEYS = frozenset({"dev-key", "change-me", "test-key"})
"""API keys that ship in this repository (scripts/run, docker-compose, tests)."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def refuse_shipped_secrets(settings: Settings) -> None:
    """A worker reachable beyond this host (SPEC §7 rev 2) starts only with secrets of
    its own: not an API key, password or internal secret this repository ships."""
    if is_loopback(settings.web_bind):
        return
    for client in settings.api_clients:
        if client.key in SHIPPED_KEYS:
            variable = P + ("API_KEY" if client.name == "default" else "API_KEYS")
            raise SettingsError(
                variable, f"the shipped key of {client.name!r} on a non-loopback bind"
            )
    if settings.postgres_password == "position_manager":
        raise SettingsError("POSTGRES_PASSWORD", "the shipped password on a non-loopback bind")
    if settings.rabbitmq_user == "guest" and settings.rabbitmq_password == "guest":
        raise SettingsError("RABBITMQ_PASSWORD", "guest/guest on a non-loopback bind")
    if len(settings.internal_secret) < 16:
        raise SettingsError(
            P + "INTERNAL_SECRET", "at least 16 characters are needed on a non-loopback bind"
        )


class _Reader:
    """Reads and checks each variable; the first bad one raises `SettingsError`."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def get(self, name: str, parse: Callable[[str], T], default: T) -> T:
        raw = self.env.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            return parse(raw.strip())
        except (ValueError, InvalidOperation) as exc:
            raise SettingsError(name, f"{raw!r} ({exc})") from None

    def settings(self) -> Settings:
        d = Settings()
        settings = Settings(
            **self._web(d),
            **self._engine(d),
            **self._schedules(d),
            **self._kafka(d),
            **self._stores(d),
            queues=self._queues(),
        )
        refuse_shipped_secrets(settings)
        return settings

    def _queues(self) -> QueueNames:
        g, q = self.get, QueueNames()
        return QueueNames(
            position_updates=g(P + "QUEUE_POSITION", v.name, q.position_updates),
            order_executed=g(P + "QUEUE_ORDER_EXECUTED", v.name, q.order_executed),
            output_prefix=g(P + "OUTPUT_PREFIX", v.name, q.output_prefix),
        )

    def _web(self, d: Settings) -> dict[str, Any]:
        """The API: port, binding, keys and limits."""
        g = self.get
        default_limit = g(P + "RATE_LIMIT_DEFAULT", v.positive_int, d.rate_limit_default)
        clients = self.api_clients(default_limit)
        return dict(
            port=g(P + "PORT", v.port, d.port),
            web_bind=g(P + "WEB_BIND", str, d.web_bind),
            web_host=g(P + "WEB_HOST", str, d.web_host),
            log_level=g(P + "LOG_LEVEL", v.log_level, d.log_level),
            api_clients=clients,
            internal_secret=self.env.get(P + "INTERNAL_SECRET", "").strip(),
            rate_limit_default=default_limit,
            rate_limit_overrides=g(P + "RATE_LIMIT_OVERRIDES", v.overrides, dict[str, int]()),
        )

    def _engine(self, d: Settings) -> dict[str, Any]:
        """The position engine (SPEC §4)."""
        g = self.get
        return dict(
            use_ws_avg_price=g(P + "USE_WS_AVG_PRICE", v.boolean, d.use_ws_avg_price),
            avg_price_diff_threshold=g(
                P + "AVG_PRICE_DIFF_THRESHOLD", v.non_negative_decimal, d.avg_price_diff_threshold
            ),
            size_validation_threshold=g(
                P + "SIZE_VALIDATION_THRESHOLD",
                v.non_negative_decimal,
                d.size_validation_threshold,
            ),
            size_reconcile_grace=g(
                P + "SIZE_RECONCILE_GRACE", v.non_negative_seconds, d.size_reconcile_grace
            ),
            fill_id_capacity=g(P + "FILL_ID_CAPACITY", v.positive_int, d.fill_id_capacity),
            dedup_horizon=g(P + "DEDUP_HORIZON", v.duration, d.dedup_horizon),
        )

    def _schedules(self, d: Settings) -> dict[str, Any]:
        """Prices, snapshots, validation and the portfolio (SPEC §5, §6)."""
        g = self.get
        return dict(
            price_staleness_threshold=g(
                P + "PRICE_STALENESS_THRESHOLD", v.positive_seconds, d.price_staleness_threshold
            ),
            price_api_url=g(P + "PRICE_API_URL", v.http_url, d.price_api_url),
            snapshot_interval=g(P + "SNAPSHOT_INTERVAL", v.positive_seconds, d.snapshot_interval),
            snapshot_retention_days=g(
                P + "SNAPSHOT_RETENTION_DAYS", v.positive_int, d.snapshot_retention_days
            ),
            validation_interval=g(
                P + "VALIDATION_INTERVAL", v.positive_seconds, d.validation_interval
            ),
            metrics_cache_ttl=g(P + "METRICS_CACHE_TTL", v.positive_seconds, d.metrics_cache_ttl),
            portfolio_window=g(P + "PORTFOLIO_WINDOW", v.positive_seconds, d.portfolio_window),
            portfolio_event_interval=g(
                P + "PORTFOLIO_EVENT_INTERVAL", v.positive_seconds, d.portfolio_event_interval
            ),
            metrics_write_interval=g(
                P + "METRICS_WRITE_INTERVAL", v.positive_seconds, d.metrics_write_interval
            ),
            max_exposure_usdt=g(P + "MAX_EXPOSURE_USDT", v.optional_decimal, None),
        )

    def _kafka(self, d: Settings) -> dict[str, Any]:
        """Kafka, the Faust app and the worker's batches."""
        g = self.get
        return dict(
            kafka_broker=g(P + "KAFKA_BROKER", v.kafka_url, d.kafka_broker),
            app_id=g(P + "APP_ID", v.app_id, d.app_id),
            partitions=g(P + "PARTITIONS", v.positive_int, d.partitions),
            data_dir=g(P + "DATA_DIR", v.path, d.data_dir).absolute(),
            store=g(P + "STORE", v.store, d.store),
            session_timeout=g(P + "SESSION_TIMEOUT", v.positive_seconds, d.session_timeout),
            kafka_wait=g(P + "KAFKA_WAIT", v.duration, d.kafka_wait),
            instance_id=g(P + "INSTANCE_ID", v.name, None),
            batch_max=g(P + "BATCH_MAX", v.positive_int, d.batch_max),
            batch_window=g(P + "BATCH_WINDOW", v.positive_seconds, d.batch_window),
            producer_linger=g(P + "PRODUCER_LINGER", v.non_negative_seconds, d.producer_linger),
            event_loop=g(P + "EVENT_LOOP", v.event_loop, d.event_loop),
            outputs=g(P + "OUTPUTS", v.outputs, d.outputs),
        )

    def _stores(self, d: Settings) -> dict[str, Any]:
        """Postgres and RabbitMQ connections."""
        g = self.get
        return dict(
            postgres_host=g("POSTGRES_HOST", v.hostname, d.postgres_host),
            postgres_port=g("POSTGRES_PORT", v.port, d.postgres_port),
            postgres_db=g("POSTGRES_DB", v.name, d.postgres_db),
            postgres_user=g("POSTGRES_USER", str, d.postgres_user),
            postgres_password=g("POSTGRES_PASSWORD", str, d.postgres_password),
            postgres_schema=g(P + "POSTGRES_SCHEMA", v.identifier, d.postgres_schema),
            postgres_sslmode=g("POSTGRES_SSLMODE", v.sslmode, d.postgres_sslmode),
            rabbitmq_host=g("RABBITMQ_HOST", v.hostname, d.rabbitmq_host),
            rabbitmq_port=g("RABBITMQ_PORT", v.port, d.rabbitmq_port),
            rabbitmq_user=g("RABBITMQ_USER", str, d.rabbitmq_user),
            rabbitmq_password=g("RABBITMQ_PASSWORD", str, d.rabbitmq_password),
            rabbitmq_vhost=g("RABBITMQ_VHOST", str, d.rabbitmq_vhost),
        )

    def api_clients(self, default_limit: int) -> tuple[ApiClient, ...]:
        clients: list[ApiClient] = []
        single = self.env.get(P + "API_KEY", "").strip()
        if single:
            clients.append(ApiClient("default", single, default_limit))
        many = self.env.get(P + "API_KEYS", "").strip()
        for item in filter(None, (part.strip() for part in many.split(","))):
            parts = item.split(":")
            if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
                raise SettingsError(P + "API_KEYS", f"entry {parts[0]!r} is not name:key[:limit]")
            limit = default_limit
            if len(parts) == 3:
                try:
                    limit = v.positive_int(parts[2])
                except ValueError as exc:
                    raise SettingsError(P + "API_KEYS", f"limit of {parts[0]!r}: {exc}") from None
            clients.append(ApiClient(parts[0], parts[1], limit))
        return tuple(clients)
