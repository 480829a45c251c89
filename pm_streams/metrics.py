"""In-process counters and latency summaries rendered as Prometheus text.

One `Metrics` object per worker, created by the composition root and passed to
whoever counts; no module-level registry.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from dataclasses import dataclass, field

Labels = tuple[tuple[str, str], ...]

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
            lines.append(f"# TYPE {name} counter")
            lines.extend(f"{name}{_fmt(k)} {v}" for k, v in sorted(series.items()))
        for name, gseries in sorted(self.gauges.items()):
            lines.append(f"# TYPE {name} gauge")
            lines.extend(f"{name}{_fmt(k)} {v}" for k, v in sorted(gseries.items()))
        for name, hseries in sorted(self.histograms.items()):
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


def _fmt(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
