"""TEI's Prometheus metrics, with TEI's exact names, types, labels and buckets.

TEI exports its metrics through the Rust `metrics-exporter-prometheus` crate, which differs from
`prometheus_client`'s defaults in ways a scraper of TEI can see:

- counters carry no `_total` suffix (`te_request_count{method="batch"} 3`, `# TYPE te_request_count counter`);
- a series exists only after its first observation (no zero-valued series at start, no `_created` samples);
- every histogram uses one of four fixed bucket sets chosen by name (see `buckets_for`).

So the values live in `TeiMetrics` (a `prometheus_client` custom collector, registered in a `CollectorRegistry`
owned by one emulator instance, never the process-global one) and `render_exposition` writes the text format
itself instead of `prometheus_client.generate_latest`, which would append `_total` to every counter.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

MetricType = Literal["counter", "gauge", "histogram"]

#: Duration histograms: 35 buckets, the first 1.5e-5 s, each 1.5 times the one before (TEI's prometheus.rs).
DURATION_BUCKETS: tuple[float, ...] = tuple(1e-5 * 1.5**i for i in range(1, 36))
#: Inputs per formed batch: 2^0 .. 2^12.
BATCH_SIZE_BUCKETS: tuple[float, ...] = tuple(float(2**i) for i in range(13))
#: Tokens per formed batch: 2^0 .. 2^20.
BATCH_TOKENS_BUCKETS: tuple[float, ...] = tuple(float(2**i) for i in range(21))

_DURATION_SUFFIXES = ("duration", "tokenization_duration", "queue_duration", "inference_duration")

#: Every metric this emulator exports and its Prometheus type. Recording an unlisted name is a bug (KeyError).
METRIC_TYPES: dict[str, MetricType] = {
    "te_queue_size": "gauge",
    "te_batch_next_size": "histogram",
    "te_batch_next_tokens": "histogram",
    "te_request_input_length": "histogram",
    "te_request_count": "counter",
    "te_request_success": "counter",
    "te_request_failure": "counter",
    **{f"te_request_{suffix}": "histogram" for suffix in _DURATION_SUFFIXES},
    "te_embed_count": "counter",
    "te_embed_success": "counter",
    **{f"te_embed_{suffix}": "histogram" for suffix in _DURATION_SUFFIXES},
    "te_predict_count": "counter",
    "te_predict_success": "counter",
    **{f"te_predict_{suffix}": "histogram" for suffix in _DURATION_SUFFIXES},
}


def input_length_buckets(max_input_length: int) -> tuple[float, ...]:
    """Tokens per input: powers of two from 2^0 to 2^19, keeping those not above the model's max input length."""
    return tuple(float(2**i) for i in range(20) if 2**i <= max_input_length)


def buckets_for(name: str, max_input_length: int) -> tuple[float, ...]:
    """The bucket bounds TEI configures for histogram `name` (matched the way TEI matches: full name or suffix)."""
    if name == "te_batch_next_size":
        return BATCH_SIZE_BUCKETS
    if name == "te_batch_next_tokens":
        return BATCH_TOKENS_BUCKETS
    if name == "te_request_input_length":
        return input_length_buckets(max_input_length)
    if name.endswith("duration"):
        return DURATION_BUCKETS
    raise KeyError(f"no bucket set for histogram {name!r}")


LabelKey = tuple[tuple[str, str], ...]


@dataclass
class _Histogram:
    """Cumulative-at-render histogram state: per-bucket counts (not cumulative), sum and count."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.bounds)

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.bounds, value)
        if index < len(self.counts):
            self.counts[index] += 1
        self.total += value
        self.count += 1


class TeiMetrics(Collector):
    """The emulator's metric values; a `prometheus_client` collector yielding them as metric families.

    Not thread-safe on purpose: the emulator records and renders from its single asyncio event loop.
    """

    def __init__(self, max_input_length: int = 512) -> None:
        self._max_input_length = max_input_length
        self._scalars: dict[str, dict[LabelKey, float]] = {}
        self._histograms: dict[str, _Histogram] = {}

    @staticmethod
    def _check(name: str, expected: MetricType) -> None:
        actual = METRIC_TYPES[name]
        if actual != expected:
            raise TypeError(f"{name} is a {actual}, not a {expected}")

    @staticmethod
    def _key(labels: Mapping[str, str] | None) -> LabelKey:
        return tuple(sorted((labels or {}).items()))

    def inc(self, name: str, labels: Mapping[str, str] | None = None, amount: float = 1.0) -> None:
        """Add `amount` to counter `name` (the series appears on first call)."""
        self._check(name, "counter")
        series = self._scalars.setdefault(name, {})
        key = self._key(labels)
        series[key] = series.get(key, 0.0) + amount

    def add_gauge(self, name: str, amount: float) -> None:
        """Add `amount` (may be negative) to gauge `name`."""
        self._check(name, "gauge")
        series = self._scalars.setdefault(name, {})
        series[()] = series.get((), 0.0) + amount

    def set_gauge(self, name: str, value: float) -> None:
        """Set gauge `name` to `value`."""
        self._check(name, "gauge")
        self._scalars.setdefault(name, {})[()] = float(value)

    def observe(self, name: str, value: float) -> None:
        """Record one observation in histogram `name`."""
        self._check(name, "histogram")
        histogram = self._histograms.get(name)
        if histogram is None:
            histogram = _Histogram(buckets_for(name, self._max_input_length))
            self._histograms[name] = histogram
        histogram.observe(value)

    def value(self, name: str, labels: Mapping[str, str] | None = None) -> float | None:
        """The current value of a counter or gauge series, None if it has not appeared yet (for logs and tests)."""
        return self._scalars.get(name, {}).get(self._key(labels))

    def collect(self) -> Iterable[Metric]:
        """Yield one family per metric that has been observed, sorted by name for a stable exposition."""
        for name in sorted(set(self._scalars) | set(self._histograms)):
            family = Metric(name, "", METRIC_TYPES[name])
            if name in self._histograms:
                histogram = self._histograms[name]
                cumulative = 0
                for bound, count in zip(histogram.bounds, histogram.counts):
                    cumulative += count
                    family.add_sample(f"{name}_bucket", {"le": floatToGoString(bound)}, cumulative)
                family.add_sample(f"{name}_bucket", {"le": "+Inf"}, histogram.count)
                family.add_sample(f"{name}_sum", {}, histogram.total)
                family.add_sample(f"{name}_count", {}, histogram.count)
            else:
                for key, value in sorted(self._scalars[name].items()):
                    family.add_sample(name, dict(key), value)
            yield family


def new_registry(metrics: TeiMetrics) -> CollectorRegistry:
    """A registry of its own for one emulator instance, holding only `metrics` (no process or platform collectors)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    return registry


def _escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format_value(value: float) -> str:
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return floatToGoString(value)


def render_exposition(registry: CollectorRegistry) -> str:
    """The Prometheus text format (0.0.4) as TEI writes it: `# TYPE` lines and samples named exactly as collected.

    Unlike `prometheus_client.generate_latest`, counter names are left as they are (no `_total`).
    """
    lines: list[str] = []
    for family in registry.collect():
        lines.append(f"# TYPE {family.name} {family.type}")
        for sample in family.samples:
            if sample.labels:
                labels = ",".join(f'{k}="{_escape_label_value(v)}"' for k, v in sample.labels.items())
                lines.append(f"{sample.name}{{{labels}}} {_format_value(sample.value)}")
            else:
                lines.append(f"{sample.name} {_format_value(sample.value)}")
        lines.append("")
    return "\n".join(lines)
