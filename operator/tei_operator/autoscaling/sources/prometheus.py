"""Metrics from Prometheus, through its HTTP API (`prometheus-api-client`).

One instant query per signal per tick, each covering every pod of every autoscaled service (`sum by (namespace,
pod)`), so the cost of a tick does not grow with the number of services. The loop maps pods to services with what
the API server says (which pods are Ready, whose they are), so only the `namespace` and `pod` labels are needed:
both exist under the Prometheus Operator (ServiceMonitor and PodMonitor) and under the usual annotation-based
`kubernetes_sd_configs` relabelling. Their names are settings (`prometheus_namespace_label`,
`prometheus_pod_label`). docs/autoscaling-metrics.md shows the templates filled in.

Freshness: a pod's metrics count only if its scrape target is up and was scraped within `metrics_stale_seconds`
(`timestamp(up)`); otherwise the pod is unread, and a service with an unread Ready pod has unknown metrics.

The client is synchronous (requests): every query runs in a worker thread, all queries of a tick at once, so the
kopf event loop never waits on Prometheus; each thread keeps its client, and so its connection, from tick to tick
(`ThreadClients`). The threads are the source's own small pool, not asyncio's default
executor, which anything else in the process may use (KubeClient no longer does: it is asyncio-native), so a slow
Prometheus holding its threads stalls nothing else.

A pod whose target is up but has no te_queue_size is idle (TEI creates the series at the first queued input), unless
it shows it has queued inputs before (te_batch_next_tokens or te_request_success exist): then te_queue_size was lost
on the way (a relabel rule, a renamed metric) and the pod is unread, not idle.
"""

from __future__ import annotations

import asyncio
import math
import re
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..signals import SIGNAL_SERIES, signal_promql
from . import MetricsSource, PodMetrics, ServiceTarget, SourceResult

#: When each target was last scraped, kept only for targets whose last scrape succeeded. `{by}` is "namespace_label,
#: pod_label", `{sel}` a label matcher list (may be empty). The signal queries come from `signals.SIGNAL_SERIES`.
FRESHNESS_QUERY = "max by ({by}) (timestamp(up{{{sel}}})) and max by ({by}) (up{{{sel}}} == 1)"

#: The end-to-end latency histogram per pod and bucket bound, for latencyTargetMs (`{by}`, `{sel}`, `{w}` as above).
DURATIONS_QUERY = "sum by ({by}, le) (rate(te_request_duration_bucket{{{sel}}}[{w}]))"
#: Query names of one tick: one per signal, the latency histogram, then the freshness query.
QUERY_NAMES: tuple[str, ...] = (*SIGNAL_SERIES, "durations", "fresh")

_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_NAMESPACE_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def promql_duration(seconds: float) -> str:
    """A PromQL range duration in whole seconds (at least 1s), e.g. 60 -> "60s"."""
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"rate window: must be a positive number of seconds, got {seconds}")
    return f"{max(1, math.ceil(seconds))}s"


def namespace_matcher(label: str, namespaces: Sequence[str]) -> str:
    """`namespace=~"a|b"` restricting the queries to the namespaces that hold autoscaled services ('' for none)."""
    names = sorted({n for n in namespaces if n})
    if not names:
        return ""
    for name in names:  # namespaces are DNS labels: nothing to escape in a regex, but refuse anything else
        if not _NAMESPACE_RE.match(name):
            raise ValueError(f"namespace {name!r} is not a DNS label")
    return f'{label}=~"' + "|".join(names) + '"'


def build_queries(namespace_label: str, pod_label: str, window_seconds: float,
                  namespaces: Sequence[str] = ()) -> dict[str, str]:
    """The tick's PromQL, one per signal. Raises ValueError naming a bad label setting."""
    for setting, label in (("prometheus_namespace_label", namespace_label), ("prometheus_pod_label", pod_label)):
        if not _LABEL_RE.match(label or ""):
            raise ValueError(f"{setting}: must be a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*), got {label!r}")
    sel = namespace_matcher(namespace_label, namespaces)
    by, window = f"{namespace_label}, {pod_label}", promql_duration(window_seconds)
    queries = {name: f"sum by ({by}) ({signal_promql(name, sel, window)})" for name in SIGNAL_SERIES}
    queries["durations"] = DURATIONS_QUERY.format(by=by, sel=sel, w=window)
    queries["fresh"] = FRESHNESS_QUERY.format(by=by, sel=sel)
    return queries


def parse_vector(result: Any, namespace_label: str, pod_label: str) -> dict[tuple[str, str], float]:
    """An instant vector from the API (`[{"metric": {...}, "value": [ts, "v"]}, ...]`) as {(ns, pod): value}.
    Series without both labels, or NaN values, are left out."""
    out: dict[tuple[str, str], float] = {}
    if not isinstance(result, list):
        raise ValueError(f"expected an instant vector (a list), got {type(result).__name__}")
    for item in result:
        metric = item.get("metric") or {}
        ns, pod = metric.get(namespace_label), metric.get(pod_label)
        try:
            value = float(item["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        if ns and pod and math.isfinite(value):
            out[(ns, pod)] = value
    return out


def parse_buckets(result: Any, namespace_label: str, pod_label: str) -> dict[tuple[str, str], tuple]:
    """The durations answer as {(ns, pod): ((le, rate), ...)} with le ascending (+Inf last)."""
    out: dict[tuple[str, str], dict[float, float]] = {}
    if not isinstance(result, list):
        raise ValueError(f"expected an instant vector (a list), got {type(result).__name__}")
    for item in result:
        metric = item.get("metric") or {}
        ns, pod = metric.get(namespace_label), metric.get(pod_label)
        try:
            le, value = float(metric["le"]), float(item["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        if ns and pod and not math.isnan(le) and math.isfinite(value):
            out.setdefault((ns, pod), {})[le] = value
    return {key: tuple(sorted(b.items())) for key, b in out.items()}


def queue_series_lost(key: tuple[str, str], vectors: Mapping[str, Mapping[tuple[str, str], float]]) -> str | None:
    """Why a pod with no te_queue_size cannot be read as idle, or None when it can.

    TEI creates te_queue_size at the first queued input. te_batch_next_tokens (a batch was formed) and
    te_request_success (an input was answered) exist only after inputs went through the queue, so with either of
    them and no te_queue_size, the gauge was lost on the way (dropped by a relabel rule, renamed), and reading 0 would
    under-read the load. te_request_count is not such a witness: TEI counts a request before refusing it (validation,
    429), so a pod that only ever refused requests has it and, rightly, no te_queue_size."""
    witnesses = [SIGNAL_SERIES[name].series for name in ("batches", "successes") if key in vectors.get(name, {})]
    if not witnesses:
        return None
    return (f"te_queue_size is missing although {' and '.join(witnesses)} show the pod has queued inputs "
            "(is a relabel rule dropping it?)")



def _client(url: str, timeout: float) -> Any:
    from prometheus_api_client import PrometheusConnect
    from urllib3.util.retry import Retry

    # No retries: the next tick is the retry.
    return PrometheusConnect(url, disable_ssl=False, retry=Retry(total=0), timeout=timeout)


def _close(client: Any) -> None:
    client._session.close()  # noqa: SLF001 - the library offers no close()


class ThreadClients:
    """Blocking PromQL instant queries for a pool of worker threads, on one client per thread kept between queries.

    Its requests Session keeps the connection to Prometheus open from tick to tick: a new client and TCP connection
    for each query was a tenth of the idle operator's CPU at 1,000 services (bench/scale). A Session is not meant to
    be shared between threads, hence one per thread; a query that failed closes its thread's client (its connection
    may be in any state) and the next query on that thread opens a new one."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: list[Any] = []
        self.opened = 0
        """Clients opened so far (each one connection to Prometheus at most): for tests."""

    def query(self, promql: str) -> Any:
        """The result list of one instant query (raises what the client raises)."""
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = _client(self.url, self.timeout)
            with self._lock:
                self._open.append(client)
                self.opened += 1
        try:
            return client.custom_query(promql)
        except BaseException:
            self._local.client = None
            with self._lock:
                if client in self._open:
                    self._open.remove(client)
            _close(client)
            raise

    def close(self) -> None:
        """Close every thread's client (a query still running fails or finishes on its own)."""
        with self._lock:
            clients, self._open = self._open, []
        for client in clients:
            _close(client)


class PrometheusSource(MetricsSource):
    """Reads the signals from Prometheus: len(QUERY_NAMES) queries per tick, whatever the number of services."""

    name = "prometheus"

    def __init__(self, url: str, *, window: float, timeout: float, namespace_label: str = "namespace",
                 pod_label: str = "pod") -> None:
        if not url:
            raise ValueError("prometheus_url: required for the Prometheus metrics source (TEI_OPERATOR_PROMETHEUS_URL)")
        self.url = url.rstrip("/")
        self.window = window
        self.timeout = timeout
        self.namespace_label = namespace_label
        self.pod_label = pod_label
        build_queries(namespace_label, pod_label, window)  # fail at start on a bad label setting
        # One thread per query of a tick, so a tick's queries run at once; threads start on first use.
        self._executor = ThreadPoolExecutor(max_workers=len(QUERY_NAMES), thread_name_prefix="tei-prometheus")
        self._clients = ThreadClients(self.url, timeout)

    def _query_sync(self, promql: str) -> Any:
        return self._clients.query(promql)

    async def _query(self, promql: str) -> Any:
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(loop.run_in_executor(self._executor, self._query_sync, promql),
                                      self.timeout + 1)

    async def close(self) -> None:
        """Stop the query threads and close their connections (a query still running finishes on its own, bounded by
        the timeout)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._clients.close()

    async def fetch(self, services: Sequence[ServiceTarget], now: float) -> SourceResult:
        if not any(s.pods for s in services):
            return SourceResult(pods={})
        queries = build_queries(self.namespace_label, self.pod_label, self.window, [s.namespace for s in services])
        names = list(queries)
        answers = await asyncio.gather(*(self._query(queries[n]) for n in names), return_exceptions=True)
        vectors: dict[str, dict[tuple[str, str], float]] = {}
        durations: dict[tuple[str, str], tuple] = {}
        for name, answer in zip(names, answers):
            if isinstance(answer, BaseException):
                detail = f"{type(answer).__name__}: {answer}" if str(answer) else type(answer).__name__
                if isinstance(answer, asyncio.TimeoutError):
                    detail = f"no answer within {self.timeout:g}s"
                return SourceResult(pods={}, error=f"Prometheus query {name} at {self.url} failed: {detail}"[:500])
            try:
                if name == "durations":
                    durations = parse_buckets(answer, self.namespace_label, self.pod_label)
                else:
                    vectors[name] = parse_vector(answer, self.namespace_label, self.pod_label)
            except ValueError as exc:
                return SourceResult(pods={}, error=f"Prometheus query {name} at {self.url}: {exc}")
        pods: dict[str, PodMetrics] = {}
        errors: dict[str, str] = {}
        for service in services:
            for pod in service.pods:
                key = (pod.namespace, pod.name)
                fresh = vectors["fresh"].get(key)
                if fresh is None:
                    errors[pod.uid] = "not scraped by Prometheus (no up == 1 series)"
                    continue
                queue = vectors["queue"].get(key)
                if queue is None:
                    lost = queue_series_lost(key, vectors)
                    if lost:
                        errors[pod.uid] = lost
                        continue
                    queue = 0.0  # up, and never queued an input: TEI has not created the series yet, a known 0
                pods[pod.uid] = PodMetrics(
                    observed_at=fresh,
                    queue_size=queue,
                    batch_tokens_rate=vectors["tokens"].get(key),
                    batch_count_rate=vectors["batches"].get(key),
                    zero_batch_rate=vectors["zero_batches"].get(key),
                    overloaded_rate=vectors["overloaded"].get(key),
                    request_rate=vectors["requests"].get(key),
                    success_rate=vectors["successes"].get(key),
                    inference_seconds_rate=vectors["batch_seconds"].get(key),
                    inference_count_rate=vectors["batch_seconds_count"].get(key),
                    duration_bucket_rates=durations.get(key),
                )
        return SourceResult(pods=pods, pod_errors=errors)
