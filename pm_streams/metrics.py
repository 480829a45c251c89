"""In-process counters and latency summaries rendered as Prometheus text.

One `Metrics` object per worker, created by the composition root and passed to
whoever counts; no module-level registry.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from dataclasses import dataclass, field

Labels = tuple[tuple[str, str], ...]

HELP = {
    "pm_api_request_seconds": "REST API request latency by route",
    "pm_api_requests_total": "REST API requests by route, method and status",
    "pm_api_unauthorized_total": "Requests refused for a missing or unknown API key",
    "pm_apply_seconds": "Time to apply one batch of input events to the positions table",
    "pm_bridge_acked_total": "RabbitMQ input messages acknowledged after Kafka stored them",
    "pm_bridge_restarts_total": "Inbound bridge sessions restarted after a failure",
    "pm_build_info": "Version of the running service (always 1)",
    "pm_consumer_errors_total": "Failed batches of the sink and republisher consumers",
    "pm_consumer_lag_seconds": "Age of the newest record a consumer (sink, republisher) handled",
    "pm_consumer_records_total": "Records handled by the sink and republisher consumers",
    "pm_engine_errors_total": "Input events the engine could not apply (dead-lettered)",
    "pm_engine_notes_total": "Engine outcomes worth counting: duplicates, stale, no-ops, ...",
    "pm_events_in_total": "Input messages by source and result (forwarded, rejected)",
    "pm_events_out_total": "Events published to RabbitMQ by type",
    "pm_events_processed_total": "Input events applied by the positions agent",
    "pm_fill_ids_expired_total": "Fill identities deleted after the de-duplication horizon",
    "pm_fill_ids_restored_total": "Fill identities written again after a crash lost them",
    "pm_heap_frozen_objects": "Objects moved to the permanent GC generation",
    "pm_heap_settle_seconds": "Time of the last heap settle (collect and freeze)",
    "pm_offset_gaps_filled_total": "Input records re-read because the stream skipped them",
    "pm_probes_sent_total": "Probe records sent to input partitions with unseen records",
    "pm_recovery_rereads_total": "Table partitions read again after their recovery lost records",
    "pm_portfolio_apply_seconds": "Time to apply one batch of portfolio contributions",
    "pm_portfolio_changes_total": "Portfolio contributions applied",
    "pm_portfolio_events_total": "portfolio_updated / limit events emitted",
    "pm_portfolio_visibility_seconds": "From a position change to the totals that include it",
    "pm_portfolio_window_write_errors_total": "Failed writes of closed history windows",
    "pm_portfolio_windows_persisted_total": "Closed history windows written to portfolio_metrics",
    "pm_price_fetch_seconds": "Latency of the exchange tickers endpoint",
    "pm_price_fetches_total": "Calls to the exchange tickers endpoint by result",
    "pm_price_updates_sent_total": "Fetched mark prices sent through the asset's partition",
    "pm_rate_limited_total": "Requests refused by the rate limit, per key",
    "pm_quarantined_records_total": "Records skipped because they cannot be decoded",
    "pm_rejects_total": "Input messages dead-lettered, by queue and reason",
    "pm_sink_batches_total": "Batches the Postgres sink committed",
    "pm_sink_rejects_total": "Records whose rows Postgres refused (kept in sink_rejects)",
    "pm_sink_rows_total": "Rows the Postgres sink wrote, by table",
    "pm_snapshots_deleted_total": "Snapshots deleted by retention",
    "pm_snapshots_total": "Snapshots taken, by trigger",
    "pm_validation_discrepancies_total": "Discrepancies found by validation",
    "pm_validation_fixes_total": "Positions corrected by validation",
    "pm_validations_total": "Position validations run",
}
"""`# HELP` text of every metric the service exports."""

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def _labels(labels: dict[str, str]) -> Labels:
    return tuple(sorted(labels.items()))


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(_BUCKETS) + 1))
    total: float = 0.0
    n: int = 0

    def observe(self, seconds: float) -> None:
        self.total += seconds
        self.n += 1
        self.counts[bisect_left(_BUCKETS, seconds)] += 1  # the first bound >= seconds


@dataclass
class Metrics:
    counters: dict[str, dict[Labels, int]] = field(default_factory=lambda: defaultdict(dict))
    gauges: dict[str, dict[Labels, float]] = field(default_factory=lambda: defaultdict(dict))
    histograms: dict[str, dict[Labels, _Histogram]] = field(
        default_factory=lambda: defaultdict(dict)
    )

    @classmethod
    def of_service(cls) -> Metrics:
        """A process's registry, starting with its `pm_build_info`."""
        from pm_streams import version

        metrics = cls()
        metrics.set("pm_build_info", 1, version=version())
        return metrics

    def inc(self, name: str, n: int = 1, **labels: str) -> None:
        series = self.counters[name]
        key = _labels(labels)
        series[key] = series.get(key, 0) + n

    def counter_series(self, name: str) -> dict[Labels, int]:
        """The series of counter `name`, keyed by `series_key`, for a per-request path
        to increment in place (`series[key] = series.get(key, 0) + 1`)."""
        return self.counters[name]

    @staticmethod
    def series_key(**labels: str) -> Labels:
        return _labels(labels)

    def histogram(self, name: str, **labels: str) -> _Histogram:
        """The series of `name` with these labels, to be observed directly (hot paths)."""
        series = self.histograms[name]
        key = _labels(labels)
        hist = series.get(key)
        if hist is None:
            hist = series[key] = _Histogram()
        return hist

    def set(self, name: str, value: float, **labels: str) -> None:
        self.gauges[name][_labels(labels)] = value

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        self.histogram(name, **labels).observe(seconds)

    def value(self, name: str, **labels: str) -> int:
        return self.counters.get(name, {}).get(_labels(labels), 0)

    def total(self, name: str) -> int:
        return sum(self.counters.get(name, {}).values())

    def render(self) -> str:
        lines: list[str] = []
        for name, series in sorted(self.counters.items()):
            lines.append(f"# HELP {name} {_help(name)}")
            lines.append(f"# TYPE {name} counter")
            lines.extend(f"{name}{_fmt(k)} {v}" for k, v in sorted(series.items()))
        for name, gseries in sorted(self.gauges.items()):
            lines.append(f"# HELP {name} {_help(name)}")
            lines.append(f"# TYPE {name} gauge")
            lines.extend(f"{name}{_fmt(k)} {v}" for k, v in sorted(gseries.items()))
        for name, hseries in sorted(self.histograms.items()):
            lines.append(f"# HELP {name} {_help(name)}")
            lines.append(f"# TYPE {name} histogram")
            for k, h in sorted(hseries.items()):
                cumulative = 0
                for bound, count in zip((*_BUCKETS, float("inf")), h.counts, strict=True):
                    cumulative += count
                    le = "+Inf" if bound == float("inf") else repr(bound)
                    lines.append(f"{name}_bucket{_fmt((*k, ('le', le)))} {cumulative}")
                lines.append(f"{name}_sum{_fmt(k)} {h.total}")
                lines.append(f"{name}_count{_fmt(k)} {h.n}")
        return "\n".join(lines) + "\n"


def _help(name: str) -> str:
    return HELP.get(name, name.removeprefix("pm_").replace("_", " "))


def _fmt(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
