"""The operator's own Prometheus metrics (prometheus_client), served on `settings.metrics_port` at /metrics.

One `OperatorMetrics` holds every series, in its own `CollectorRegistry` (plus the process and Python collectors),
so a test can build a fresh one and read it back. The running operator uses the module-level `METRICS`; the other
modules record with one-line calls into it (`METRICS.reconciled(...)`, `METRICS.api_request(...)`), so no module
but this one knows metric names. docs/monitoring.md lists the series and what to alert on.

Series (all prefixed `tei_operator_`):
- `reconciles_total{kind, result}`: result is success, invalid_spec, not_found (the service is gone) or error;
- `reconcile_duration_seconds{kind}`: a histogram of one reconcile, the API calls included;
- `resyncs_total` and `resync_skips_total`: periodic resyncs completed, and services they left out (unchanged);
- `queue_depth`: services waiting in the reconcile queue (requested, not started);
- `api_requests_total{method, resource, code}` and `api_errors_total{code}`: every Kubernetes API call of the
  operator's client by verb, resource (plural, with the subresource) and HTTP status (0: not reached); what the
  HA test counts writes with;
- `autoscaler_decisions_total{action, limit}`: action ScaleUp, ScaleDown or Hold; limit MaxReplicas, GpuCapacity,
  MetricsUnavailable, ... or none;
- `metric_source_errors_total{source}`: a metrics source (scrape, prometheus) that failed as a whole in a tick;
- `autoscaler_tick_duration_seconds`: a histogram of one main autoscaler tick (listing, metrics queries, decisions
  and writes of every autoscaled service), what bench/scale reads the tick time from;
- `autoscaler_last_successful_tick_timestamp_seconds` and `autoscaler_seconds_since_last_successful_tick`
  (counted from when this replica became leader until its first tick);
- `gc_pause_seconds_total{generation}`: CPU seconds Python's cyclic garbage collector ran, by generation (0, 1,
  2: a full collection), measured with `gc.callbacks` (controller/heap.py keeps the long-lived objects out of it);
- `leader` (1 on the replica that holds the Lease), `leader_transitions_total`, `info{version, identity}`.
"""

from __future__ import annotations

import gc
import re
import time
from collections.abc import Callable

from prometheus_client import (CollectorRegistry, Counter, Gauge, GCCollector, Histogram, PlatformCollector,
                               ProcessCollector, generate_latest)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

PREFIX = "tei_operator"
RECONCILE_RESULTS = ("success", "invalid_spec", "not_found", "error")
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Reconciles take from a few milliseconds (nothing to change, cached) to seconds (a slow API server).
RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_RESOURCE = re.compile(r"^/apis?/(?:[^/]+/)?v[^/]+/(?:namespaces/[^/]+/)?([a-z0-9.-]+)(?:/[^/?]+(?:/([a-z]+))?)?")


def resource_of(path: str) -> str:
    """The resource an API path addresses, for the `resource` label: `deployments`, `embeddingservices/status`,
    `pods/proxy`, `namespaces`. Bounded by the kinds the operator uses, never a name (no cardinality blow-up)."""
    match = _RESOURCE.match(path.split("?", 1)[0])
    if not match:
        return "other"
    plural, subresource = match.group(1), match.group(2)
    return f"{plural}/{subresource}" if subresource else plural


class OperatorMetrics:
    """Every series of the operator, registered in `registry` (a fresh one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None, *, clock: Callable[[], float] = time.time,
                 process_collectors: bool = True) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.clock = clock
        r = self.registry
        if process_collectors:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)
        self.reconciles = Counter(f"{PREFIX}_reconciles", "Reconciles of a service by kind and result (success, "
                                  "invalid_spec, not_found, error).", ["kind", "result"], registry=r)
        self.reconcile_duration = Histogram(f"{PREFIX}_reconcile_duration_seconds", "Duration of one reconcile of a "
                                            "service, its API calls included.", ["kind"], registry=r,
                                            buckets=RECONCILE_BUCKETS)
        self.resyncs = Counter(f"{PREFIX}_resyncs", "Periodic resyncs completed (every service reconciled once from "
                               "the watch-fed cache).", registry=r)
        self.resync_skips = Counter(f"{PREFIX}_resync_skips", "Services a periodic resync left out: nothing in their "
                                    "namespace changed since their last reconcile (each is still reconciled every "
                                    "10 resync periods, at least every 10 minutes).", registry=r)
        self.queue_depth = Gauge(f"{PREFIX}_queue_depth", "Services waiting in the reconcile queue (requested, "
                                 "not started yet).", registry=r)
        self.api_requests = Counter(f"{PREFIX}_api_requests", "Kubernetes API requests of the operator's client by "
                                    "method, resource and HTTP status code (0: the API server was not reached).",
                                    ["method", "resource", "code"], registry=r)
        self.api_errors = Counter(f"{PREFIX}_api_errors", "Kubernetes API requests that failed, by HTTP status code "
                                  "(0: the API server was not reached). 404 and 409 are part of normal operation "
                                  "(existence checks, optimistic concurrency); 401, 403, 429 and 5xx are not.",
                                  ["code"], registry=r)
        self.autoscaler_decisions = Counter(f"{PREFIX}_autoscaler_decisions", "Autoscaler decisions by action "
                                            "(ScaleUp, ScaleDown, Hold) and the limit that held them back (none, "
                                            "MaxReplicas, GpuCapacity, MetricsUnavailable, ...).",
                                            ["action", "limit"], registry=r)
        self.metric_source_errors = Counter(f"{PREFIX}_metric_source_errors", "Autoscaler ticks in which a TEI "
                                            "metrics source failed as a whole (scrape or prometheus).", ["source"],
                                            registry=r)
        self.autoscaler_tick_duration = Histogram(f"{PREFIX}_autoscaler_tick_duration_seconds", "Duration of one "
                                                  "main autoscaler tick that completed, over every autoscaled "
                                                  "service.", registry=r, buckets=RECONCILE_BUCKETS)
        self.autoscaler_last_success = Gauge(f"{PREFIX}_autoscaler_last_successful_tick_timestamp_seconds",
                                             "Unix time of the end of the last autoscaler tick that completed "
                                             "(0: none yet).", registry=r)
        self.autoscaler_staleness = Gauge(f"{PREFIX}_autoscaler_seconds_since_last_successful_tick",
                                          "Seconds since the last autoscaler tick that completed, or since this "
                                          "replica started its autoscaler when none has yet; 0 while the "
                                          "autoscaler does not run here (a standby replica).", registry=r)
        self.leader = Gauge(f"{PREFIX}_leader", "1 while this replica holds the leader Lease (it reconciles and "
                            "autoscales), else 0.", registry=r)
        self.leader_transitions = Counter(f"{PREFIX}_leader_transitions", "Times this replica became the leader.",
                                          registry=r)
        self.gc_pauses = Counter(f"{PREFIX}_gc_pause_seconds", "CPU seconds Python's cyclic garbage collector ran, "
                                 "by generation (2: a full collection).", ["generation"], registry=r)
        self._gc_series = [self.gc_pauses.labels(str(g)) for g in range(3)]
        self._gc_started: float | None = None
        self.info = Gauge(f"{PREFIX}_info", "The operator's version and leader-election identity (always 1).",
                          ["version", "identity"], registry=r)
        self._leading = False
        self._autoscaler_started: float | None = None
        self._last_tick: float | None = None
        self.autoscaler_staleness.set_function(self._staleness)
        self._queue_depth_fn: Callable[[], int] | None = None
        self.queue_depth.set_function(lambda: float(self._queue_depth_fn() if self._queue_depth_fn else 0))
        for result in RECONCILE_RESULTS:  # every result shows as 0 before it first happens (rate() needs a start)
            for kind in ("EmbeddingService", "RerankerService"):
                self.reconciles.labels(kind, result)

    # -- recording (one-line calls from the other modules) ------------------------------------------------------
    def reconciled(self, kind: str, result: str, seconds: float) -> None:
        """One reconcile of a `kind` service ended with `result` after `seconds`."""
        self.reconciles.labels(kind, result).inc()
        self.reconcile_duration.labels(kind).observe(max(0.0, seconds))

    def resynced(self) -> None:
        """A periodic resync ended: every service it queued was reconciled once."""
        self.resyncs.inc()

    def resync_skipped(self, count: int) -> None:
        """A periodic resync left `count` unchanged services out."""
        self.resync_skips.inc(count)

    def api_request(self, method: str, path: str, code: int) -> None:
        """One Kubernetes API call answered `code` (0 when the API server could not be reached)."""
        self.api_requests.labels(method.upper(), resource_of(path), str(code)).inc()
        if not 200 <= code <= 299:
            self.api_errors.labels(str(code)).inc()

    def autoscaler_decision(self, action: str, limit: str | None) -> None:
        """The policy decided `action` for one service, held back by `limit` (None: not limited)."""
        self.autoscaler_decisions.labels(action, limit or "none").inc()

    def metric_source_result(self, source: str, error: str | None) -> None:
        """The metrics source `source` answered a tick; `error` set: it failed as a whole."""
        counter = self.metric_source_errors.labels(source)  # the series exists (at 0) once the source is used
        if error:
            counter.inc()

    def autoscaler_started(self) -> None:
        """The autoscaler loop started here (leader): staleness counts from now until the first tick ends."""
        self._autoscaler_started = self.clock()
        self._last_tick = None

    def autoscaler_stopped(self) -> None:
        """The autoscaler loop stopped here (lost leadership, shutdown): no staleness to report."""
        self._autoscaler_started = None
        self._last_tick = None

    def autoscaler_tick_succeeded(self, seconds: float | None = None) -> None:
        """An autoscaler tick completed (each service's own failures are counted elsewhere), in `seconds`."""
        if seconds is not None:
            self.autoscaler_tick_duration.observe(max(0.0, seconds))
        self._last_tick = self.clock()
        self.autoscaler_last_success.set(self._last_tick)

    def set_leader(self, leading: bool) -> None:
        """This replica holds the Lease (or not any more); counts the transitions to leader."""
        if leading and not self._leading:
            self.leader_transitions.inc()
        self._leading = leading
        self.leader.set(1 if leading else 0)

    def set_identity(self, version: str, identity: str) -> None:
        self.info.clear()
        self.info.labels(version, identity).set(1)

    def watch_queue(self, depth: Callable[[], int] | None) -> None:
        """Report `depth()` as the queue depth at each scrape (None: 0, no queue runs here)."""
        self._queue_depth_fn = depth

    def watch_gc(self) -> None:
        """Count the garbage collector's pauses from now on (once per process: `gc.callbacks` is global)."""
        if self._gc_callback not in gc.callbacks:
            gc.callbacks.append(self._gc_callback)

    def _gc_callback(self, phase: str, info: dict) -> None:
        # CPU time of the collecting thread: the collector holds the GIL, and wall time would count the waits of a
        # process that shares its cores.
        if phase == "start":
            self._gc_started = time.thread_time()
        elif self._gc_started is not None:
            generation = int(info.get("generation", 2))
            self._gc_series[min(max(generation, 0), 2)].inc(max(0.0, time.thread_time() - self._gc_started))
            self._gc_started = None

    def _staleness(self) -> float:
        since = self._last_tick if self._last_tick is not None else self._autoscaler_started
        return 0.0 if since is None else max(0.0, self.clock() - since)

    # -- reading ------------------------------------------------------------------------------------------------
    def exposition(self) -> bytes:
        """The Prometheus text format of every series (what /metrics answers)."""
        return generate_latest(self.registry)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """One sample's value (0 when the series does not exist yet), e.g. value("tei_operator_leader")."""
        found = self.registry.get_sample_value(name, labels or {})
        return 0.0 if found is None else float(found)


CONTENT_TYPE = CONTENT_TYPE_LATEST
METRICS = OperatorMetrics()
