"""The composition root: builds the Faust app and everything around it from `Settings`.

Nothing here runs at import time. `build(settings)` returns the worker's context
(`pm_streams.context.Service`) that the CLI hands to a Faust worker; tests build their
own with per-test settings. Nothing imports this module but the entry points.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import faust

from bridges.inbound import InboundBridge
from bridges.outbound import Republisher
from pm_streams.clock import Clock, SystemClock
from pm_streams.context import Service
from pm_streams.deps import Deps
from pm_streams.domain import EngineConfig, Event
from pm_streams.exposure import ExposureFollower
from pm_streams.handoff import Handoff
from pm_streams.metrics import Metrics
from pm_streams.names import FILL_IDS_TABLE, POSITIONS_TABLE
from pm_streams.portfolio import Portfolio
from pm_streams.prices import PriceRefresher
from pm_streams.processing import BookCache
from pm_streams.runtime.append import PRODUCER_MAX_BATCH
from pm_streams.runtime.heap import HeapKeeper
from pm_streams.runtime.recovery import RecoveryGuard
from pm_streams.runtime.streams import BatchingStream
from pm_streams.runtime.tables import Table
from pm_streams.runtime.transport import Transport, Web
from pm_streams.settings import Settings
from pm_streams.stored import SharedDecode
from pm_streams.topics import COMPACTED, KEYED, raw_topic
from tables.db import Database
from tables.live import LivePositions
from tables.metrics_writer import MetricsWriter
from tables.sink import PostgresSink
from tables.snapshots import Snapshots
from tables.validation import Validator


def engine_config(settings: Settings) -> EngineConfig:
    return EngineConfig(
        use_ws_avg_price=settings.use_ws_avg_price,
        avg_price_diff_threshold=settings.avg_price_diff_threshold,
        size_validation_threshold=settings.size_validation_threshold,
        size_reconcile_grace=settings.size_reconcile_grace,
        fill_id_capacity=settings.fill_id_capacity,
    )


class App(faust.App):
    """Faust's app on `pm_streams.runtime.transport`: Kafka via aiokafka with a cheaper record
    delivery, the aiohttp server without CORS, and no per-event sensor.

    Upstream: faust-streaming installs its `Monitor` as a sensor, which records every
    message, stream event, send and table write (about 2 % of the worker per fill in the
    pipeline bench) for the web stats pages, which this app does not serve (our own
    metrics are `pm_streams.metrics`).
    Delete when: faust installs the monitor only for the stats pages."""

    def _new_transport(self) -> Any:
        return Transport(self.conf.broker_consumer, self)

    def _new_web(self) -> Any:
        return Web(self)

    def on_init_dependencies(self) -> Iterable[Any]:
        dependencies = super().on_init_dependencies()
        self.sensors.remove(self.monitor)
        return dependencies


def faust_app(settings: Settings) -> faust.App:
    """The Faust app with the settings the field notes call for."""
    return App(
        settings.app_id,
        broker=settings.kafka_broker,
        store=settings.store,
        datadir=str(settings.worker_dir),
        autodiscover=False,
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        # Changelog recovery loops with 'latest' (NOTES); earliest is also what a
        # fresh consumer of the input topic must do to lose nothing.
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=min(3.0, settings.session_timeout / 3),
        broker_rebalance_timeout=max(settings.session_timeout, 10.0),
        consumer_group_instance_id=settings.instance_id,
        producer_acks=-1,
        # Batch produce requests (default 5 ms): every applied change produces several
        # records (changelogs, the portfolio contribution); one request per record
        # made the broker's CPU the bottleneck (bench/bench_api.py: ~2x throughput),
        # and 0 gave a worse visibility p99 at 500 events/s (bench/bench_api.py).
        producer_linger=settings.producer_linger,
        # At Faust's 16 KB a wide batch's changelog records (~1 KB each) waited for a
        # produce round trip per 15 records, each through `send` (`runtime.append`).
        producer_max_batch_size=PRODUCER_MAX_BATCH,
        stream_recovery_delay=0.0,
        # A processing error must not silently ack an event: the agent catches
        # its own errors and dead-letters them, anything else is a crash.
        stream_ack_exceptions=False,
        web_enabled=True,
        web_port=settings.port,
        web_bind=settings.web_bind,
        web_host=settings.web_host,
        canonical_url=settings.canonical_url,
        web_stats_enabled=False,
        web_graph_enabled=False,
        web_tables_enabled=False,
        web_metrics_enabled=False,
        web_router_enabled=False,
        web_in_thread=False,
        # take_events without Faust's 5 ms polling timer (pm_streams/runtime/streams.py): an
        # idle worker uses half the CPU.
        Stream=BatchingStream,
        # A changelog whose partitions the metadata does not list yet is not a mismatch.
        Table=Table,
    )


def raw_changelog(app: faust.App, name: str, partitions: int) -> Any:
    """A compacted changelog with raw keys and values (the record is our own bytes).

    It is also the change stream read by the sink and the republisher, so every
    version is kept for a week before compaction may drop it.
    """
    return raw_topic(
        app,
        name,
        partitions,
        compacting=True,
        deleting=False,
        acks=False,
        internal=True,
        config=COMPACTED,
        maxsize=131_072,
        allow_empty=True,
    )


def build(settings: Settings, *, clock: Clock | None = None) -> Service:
    """Declare topics and tables, build every part, then register agents, timers and
    web routes on the finished context."""
    from pm_streams import agents
    from web import routes

    app = faust_app(settings)
    names = settings.kafka
    input_topic = raw_topic(app, names.input_topic, settings.partitions, internal=True)
    metrics = Metrics.of_service()
    clock = clock or SystemClock()
    db = Database(settings)
    follower = ExposureFollower(settings)
    decode = SharedDecode()  # the sink's and the republisher's changelog records
    engine = engine_config(settings)
    positions = _positions_table(app, settings)
    books = BookCache()
    events: Handoff[Event] = Handoff()
    deps = Deps(settings, metrics, clock)
    portfolio = Portfolio(app, deps, db)
    portfolio.register()
    live = LivePositions(app, positions, input_topic, books)
    service = Service(
        settings=settings,
        app=app,
        input_topic=input_topic,
        dead_letter_topic=raw_topic(app, names.input_topic + ".dlq", 1, internal=True),
        positions=positions,
        fill_ids=_fill_ids_table(app, settings),
        engine=engine,
        metrics=metrics,
        clock=clock,
        db=db,
        bridge=InboundBridge(settings, metrics, events),
        sink=PostgresSink(deps, db, follower.exposure, decode),
        republisher=Republisher(deps, follower.exposure, decode),
        exposure=follower,
        books=books,
        events=events,
        portfolio=portfolio,
        metrics_writer=MetricsWriter(deps, db),
        snapshots=Snapshots(deps, db, live, portfolio.outbox),
        validator=Validator(deps, db, live, engine),
        prices=PriceRefresher(deps, live),
        heap=HeapKeeper(metrics),
        recovery=RecoveryGuard(app, metrics),
    )
    # Settle the heap (`runtime.heap`) once the tables are recovered after a rebalance.
    app.on_rebalance_complete.connect(service.heap.after_rebalance)
    agents.register(service)
    routes.register(service)
    return service


def _positions_table(app: faust.App, settings: Settings) -> Any:
    names = settings.kafka
    positions = app.Table(
        POSITIONS_TABLE,
        key_type=str,
        value_type=bytes,
        partitions=settings.partitions,
        changelog_topic=raw_changelog(app, names.positions_changelog, settings.partitions),
        help="Book of one asset: its legs, applied fill ids, last input offset.",
    )
    # Faust derives a table's serializers from its types ("json" for str keys). Keys
    # must be the raw asset bytes: the router hashes the serialized key to find the
    # owning partition, and the bridge partitions the input topic by the raw bytes.
    positions.key_serializer = "raw"  # type: ignore[attr-defined]
    return positions


def _fill_ids_table(app: faust.App, settings: Settings) -> Any:
    fill_ids = app.Table(
        FILL_IDS_TABLE,
        key_type=str,
        value_type=bytes,
        partitions=settings.partitions,
        changelog_topic=raw_topic(
            app,
            settings.kafka.fill_ids_changelog,
            settings.partitions,
            compacting=True,
            deleting=False,
            acks=False,
            internal=True,
            config=KEYED,
            allow_empty=True,
        ),
        help="Applied fill identities: asset, mode, fill id -> input offset, time.",
    )
    fill_ids.key_serializer = "raw"  # type: ignore[attr-defined]
    return fill_ids
