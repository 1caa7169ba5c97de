"""Where the autoscaler reads TEI's metrics: one interface, two implementations.

- `PrometheusSource` (prometheus.py): a handful of PromQL queries per tick against the Prometheus HTTP API, one per
  signal, covering every pod of every service at once.
- `ScrapeSource` (scrape.py): the built-in default that needs no Prometheus: one concurrent sweep over the Ready
  pods' `/metrics`, rates computed from successive samples.

Both answer per pod and the loop adds pods up per service (`aggregate`). Per pod, not per service, because the
loop knows which pods are Ready right now and which service owns them (from the API server), which a Prometheus
label cannot say for a pod that just turned Ready or is on its way out; and because `namespace` and `pod` labels
exist under every common scrape setup (ServiceMonitor, PodMonitor, annotation-based), a `service` label does not.

A pod's metrics are either known (`PodMetrics`) or missing from the answer. Missing is never read as zero: the
service's signals become unknown (`ServiceMetrics.error` set), and the policy then holds and never scales down.
Within a successful read, a TEI series that does not exist yet *is* zero: TEI only creates a series at its first
observation, so a pod that was scraped fine but never queued an input has no `te_queue_size` line. A read only
counts as successful when it is TEI's exposition: a page that is not (HTML, JSON, another program's metrics), or
a pod that shows it has queued inputs (te_batch_next_tokens, te_request_success) but has no te_queue_size, is a
pod that was not read. What no source can tell: a scrape setup that drops every te_* series looks exactly like a
fleet that never served a request, and reads as idle (docs/autoscaling-metrics.md says so).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ...timestamps import rfc3339

__all__ = [
    "MetricsSource", "PodMetrics", "PodTarget", "ServiceMetrics", "ServiceTarget", "SourceResult", "aggregate",
]


@dataclass(frozen=True)
class PodTarget:
    """One Ready pod whose metrics the loop wants."""

    namespace: str
    name: str
    uid: str
    ip: str | None
    port: int = 80
    ready_since: float | None = None
    """When the pod last turned Ready (epoch seconds), from its Ready condition; None if unknown."""


@dataclass(frozen=True)
class ServiceTarget:
    """One autoscaled service and its Ready pods."""

    namespace: str
    name: str
    pods: tuple[PodTarget, ...]

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


@dataclass(frozen=True)
class PodMetrics:
    """One pod's TEI metrics, read successfully. Rates are per second; None = not computable yet (no earlier
    sample in the window), which is not the same as "the pod is unreachable" (then the pod has no PodMetrics)."""

    observed_at: float
    """When the newest sample was taken (epoch seconds)."""
    queue_size: float
    """te_queue_size (averaged over the rate window where the source can)."""
    batch_tokens_rate: float | None = None
    """rate(te_batch_next_tokens_sum): tokens batched per second."""
    batch_count_rate: float | None = None
    """rate(te_batch_next_tokens_count): batches per second, zero-size ones included."""
    zero_batch_rate: float | None = None
    """rate(te_batch_next_tokens_bucket{le="1"}): zero-size batches per second (see signals.py)."""
    overloaded_rate: float | None = None
    """rate(te_request_failure{err="overloaded"}): 429s per second."""
    request_rate: float | None = None
    """rate(te_request_count): requests arriving per second."""
    success_rate: float | None = None
    """rate(te_request_success): requests completed per second."""
    inference_seconds_rate: float | None = None
    """rate(te_request_inference_duration_sum): seconds of batch time per second, summed over requests."""
    inference_count_rate: float | None = None
    """rate(te_request_inference_duration_count): requests whose batch time was recorded, per second."""
    duration_bucket_rates: tuple[tuple[float, float], ...] | None = None
    """rate(te_request_duration_bucket) per le (ascending, +Inf last): requests completed within each bound per
    second. None when the source does not read it."""


@dataclass(frozen=True)
class ServiceMetrics:
    """A service's metrics summed over the pods that were read. `error` set means unknown: do not use the sums."""

    observed_at: float
    pods_read: int = 0
    queue_size_total: float | None = None
    batch_tokens_rate_sum: float | None = None
    nonempty_batch_rate: float | None = None
    overloaded_rate: float | None = None
    request_rate: float | None = None
    success_rate: float | None = None
    duration_bucket_rates: tuple[tuple[float, float], ...] | None = None
    """Requests per second completed within each le bound, summed over the pods (None: not read)."""
    mean_batch_seconds: float | None = None
    """Mean batch time a request saw (te_request_inference_duration sum / count over the window); None when no
    request completed in the window."""
    error: str | None = None
    unread_pods: tuple[str, ...] = field(default=())
    """Ready pods left out because they turned Ready too recently to have been read (count them as starting)."""


class MetricsSource(abc.ABC):
    """Reads every service's pods' metrics in one go per tick: the cost must not grow with one request per service.

    `fetch` never raises for a metrics problem: a pod it could not read is left out of the answer, and a failure
    of the whole source (Prometheus down) is reported in `SourceResult.error`.
    """

    name: str = "metrics"

    @abc.abstractmethod
    async def fetch(self, services: Sequence[ServiceTarget], now: float) -> "SourceResult":
        """Metrics of the pods of `services`, read at about `now` (epoch seconds)."""

    async def close(self) -> None:
        """Release connections; the loop calls it at shutdown."""


@dataclass(frozen=True)
class SourceResult:
    """What one fetch returned: per pod uid its metrics; `error` when the source as a whole failed."""

    pods: Mapping[str, PodMetrics]
    error: str | None = None
    pod_errors: Mapping[str, str] = field(default_factory=dict)
    """Per pod uid, why it could not be read (for the message that names it)."""
    at_rest: frozenset[str] = frozenset()
    """Pods read in this fetch whose every kept sample is one unchanged page with an empty queue: nothing arrived,
    nothing waits, nothing was refused over the window (the scrape source's; empty from sources that cannot tell)."""


def _sum(values: Iterable[float | None]) -> float | None:
    """Sum of the known values; None when there are none (a rate nobody could compute yet is unknown)."""
    known = [v for v in values if v is not None and math.isfinite(v)]
    return sum(known) if known else None


def _sum_buckets(pods: list[tuple[tuple[float, float], ...] | None]) -> tuple[tuple[float, float], ...] | None:
    """Per-le sums of the pods' bucket rates (the bounds TEI uses are the same on every pod); None if none has them."""
    known = [b for b in pods if b]
    if not known:
        return None
    total: dict[float, float] = {}
    for buckets in known:
        for le, rate in buckets:
            total[le] = total.get(le, 0.0) + rate
    return tuple(sorted(total.items()))


def _ratio(num: float | None, den: float | None) -> float | None:
    return None if num is None or den is None or den <= 0 else num / den


def aggregate(service: ServiceTarget, result: SourceResult, now: float, *, stale_seconds: float,
              fresh_grace_seconds: float) -> ServiceMetrics:
    """Add up a service's pods. Unknown if the source failed, or any Ready pod that has been Ready for longer than
    `fresh_grace_seconds` has no metrics or only metrics older than `stale_seconds`: summing the others would
    under-read the load, which is the one mistake that makes an autoscaler scale a busy service down.

    A pod Ready for less than the grace and not read yet (a new replica Prometheus has not scraped yet) is listed
    in `unread_pods` instead, so the loop counts it as capacity on its way rather than as serving.
    """
    label = f"{service.namespace}/{service.name}"
    if result.error:
        return ServiceMetrics(observed_at=now, error=result.error)
    read: list[PodMetrics] = []
    unread: list[str] = []
    problems: list[str] = []
    for pod in service.pods:
        metrics = result.pods.get(pod.uid)
        if metrics is not None and now - metrics.observed_at > stale_seconds:
            # when it was read, not how old that is: the message stays the same while the outage lasts
            problems.append(f"pod {pod.name}: metrics last read at {rfc3339(metrics.observed_at)}, more than "
                            f"{stale_seconds:g}s ago")
            continue
        if metrics is None:
            young = pod.ready_since is not None and now - pod.ready_since < fresh_grace_seconds
            if young:
                unread.append(pod.name)
            else:
                why = result.pod_errors.get(pod.uid) or "no metrics"
                problems.append(f"pod {pod.name}: {why}")
            continue
        read.append(metrics)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        return ServiceMetrics(observed_at=now, error=f"{label}: " + "; ".join(problems[:3]) + more)
    if not read:
        return ServiceMetrics(observed_at=now, unread_pods=tuple(unread))
    count, zero = _sum(m.batch_count_rate for m in read), _sum(m.zero_batch_rate for m in read)
    nonempty = None if count is None else max(0.0, count - (zero or 0.0))
    return ServiceMetrics(
        observed_at=min(m.observed_at for m in read),
        pods_read=len(read),
        queue_size_total=sum(m.queue_size for m in read),
        batch_tokens_rate_sum=_sum(m.batch_tokens_rate for m in read),
        nonempty_batch_rate=nonempty,
        overloaded_rate=_sum(m.overloaded_rate for m in read),
        request_rate=_sum(m.request_rate for m in read),
        success_rate=_sum(m.success_rate for m in read),
        duration_bucket_rates=_sum_buckets([m.duration_bucket_rates for m in read]),
        mean_batch_seconds=_ratio(_sum(m.inference_seconds_rate for m in read),
                                  _sum(m.inference_count_rate for m in read)),
        unread_pods=tuple(unread),
    )
