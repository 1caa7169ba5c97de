"""The live autoscaler: one loop for every autoscaled service, every `settings.autoscaler_tick_seconds`.

A tick:
1. LISTs the services of both kinds (in the watched namespaces) and keeps those with autoscaling enabled;
2. LISTs their Deployments and pods, and (only when a GPU service is autoscaled) all nodes and all pods, once,
   for the GPU capacity of every service (capacity.py);
3. reads the metrics of every Ready pod in one go per metrics source (sources/): a fixed number of Prometheus
   queries, or one concurrent sweep of the pods' /metrics;
4. per service: builds `Signals`, calls the pure policy `decide()` with the service's in-memory `PolicyState`,
   applies the replica count when it changed, writes status.autoscaling and ScalingLimited when they changed,
   and posts an Event for every scale.

Memory. Policy state is kept in memory, keyed by the service's uid. A restart loses it, which is safe: the policy
never scales down before it has watched a full scale-down stabilization window (`PolicyState.first_tick_at`), so a
fresh operator holds a busy fleet rather than acting on a history it does not have.

Status writes. status.autoscaling and ScalingLimited are written only when something changed (signals are rounded
so noise does not count); `lastChangeTime` says when. An idle, settled fleet gets no write at all: that the
autoscaler runs shows in the operator's own metrics (`tei_operator_autoscaler_last_successful_tick_timestamp_seconds`,
`tei_operator_autoscaler_decisions_total`, which the AutoscalerStale alert and the tests read), not in a status
heartbeat.

Isolation. One service that fails (bad spec, API error, a bug) is logged and skipped; the others go on. A tick
that fails as a whole (API server unreachable) is logged and the next tick tries again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..api import GROUP, KINDS, VERSION, ServiceResource
from ..api.rollout import active_deployment
from ..kube import DEPLOYMENT, NODE, POD, KubeApiError, KubeClient, ResourceType
from ..metrics import METRICS
from .activation import scale_to_zero_tick
from .capacity import ClusterUsage, is_terminated, schedulable_replicas
from .policy import RATE_WINDOW_TICKS, Decision, PolicyState, decide, decide_fast
from .signals import Signals
from .sources import MetricsSource, PodTarget, ServiceMetrics, ServiceTarget, SourceResult, aggregate
from .writer import (SCALING_LIMITED, StatusWriter, autoscaling_status, find_condition, rfc3339,
                     scaling_limited_condition)

logger = logging.getLogger("tei_operator.autoscaler")

MANAGED_BY_SELECTOR = "app.kubernetes.io/managed-by=tei-operator"
TEI_CONTAINER = "tei"
FAST_SOURCE = "fast"
"""Name of the fast path's own scrape source in `Autoscaler.sources`."""

AT_REST = "Fast path: no request, queue or 429 on any Ready pod over the window"
"""The fast path's reason to hold for a service whose Ready pods are all at rest (`SourceResult.at_rest`)."""
DEFAULT_TEI_PORT = 80


def service_types() -> dict[str, ResourceType]:
    """The operator's kinds as client resource types (built from the API package, not from the controller)."""
    return {kind: ResourceType(GROUP, VERSION, info.plural, kind) for kind, info in KINDS.items()}


def rate_window_seconds(tick_seconds: float) -> float:
    """The window of rates and of the averaged queue: `policy.RATE_WINDOW_TICKS` ticks (the policy's demand
    projection assumes that length), at least 10 s (1 minute at the default 15 s tick, which suits Prometheus'
    usual 15-30 s scrape interval: rate() needs two samples in the window)."""
    return max(RATE_WINDOW_TICKS * tick_seconds, 10.0)


def parse_time(text: str | None) -> float | None:
    """RFC 3339 (as the API server writes it) to epoch seconds; None when absent or unreadable."""
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _condition(pod: Mapping[str, Any], ctype: str) -> Mapping[str, Any] | None:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == ctype:
            return cond
    return None


def is_ready(pod: Mapping[str, Any]) -> bool:
    cond = _condition(pod, "Ready")
    return bool(cond and cond.get("status") == "True") and not (pod.get("metadata") or {}).get("deletionTimestamp")


def is_leaving(pod: Mapping[str, Any]) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp")) or \
        (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def tei_port(pod_spec: Mapping[str, Any]) -> int:
    """The TEI container's port (named http), 80 by default."""
    containers = pod_spec.get("containers") or []
    ordered = [c for c in containers if c.get("name") == TEI_CONTAINER] + containers
    for container in ordered:
        for port in container.get("ports") or []:
            if port.get("containerPort"):
                return int(port["containerPort"])
    return DEFAULT_TEI_PORT


def matches_selector(labels: Mapping[str, str], match_labels: Mapping[str, str]) -> bool:
    return bool(match_labels) and all(labels.get(k) == v for k, v in match_labels.items())


@dataclasses.dataclass(frozen=True)
class PodCounts:
    """A service's pods by what they mean for capacity."""

    ready: tuple[Mapping[str, Any], ...]
    starting: int
    pending: int
    load_seconds: float | None = None
    """Median over the Ready pods of creation to Ready (the model load time, scheduling included); None when no
    Ready pod shows both times."""
    timeless: bool = True
    """Whether the counts hold at any later time for the same pods: no pod was counted by its age (scheduled, not
    Ready: starting only within the startup grace). `ServiceView.counts` keeps such counts while its pods last."""


def count_pods(pods: Sequence[Mapping[str, Any]], now: float, startup_grace_seconds: float) -> PodCounts:
    """Ready pods; starting = scheduled, not Ready, younger than the startup grace (model loading); pending = not
    scheduled. Pods not Ready and older than the grace count as neither (a crash loop is not capacity)."""
    ready, starting, pending = [], 0, 0
    loads: list[float] = []
    timeless = True
    for pod in pods:
        if is_leaving(pod):
            continue
        if is_ready(pod):
            ready.append(pod)
            created = parse_time((pod.get("metadata") or {}).get("creationTimestamp"))
            became = parse_time((_condition(pod, "Ready") or {}).get("lastTransitionTime"))
            if created is not None and became is not None and became >= created:
                loads.append(became - created)
        elif not (pod.get("spec") or {}).get("nodeName"):
            pending += 1
        else:
            timeless = False
            created = parse_time((pod.get("metadata") or {}).get("creationTimestamp"))
            if created is None or now - created < startup_grace_seconds:
                starting += 1
    loads.sort()
    load = None if not loads else (loads[len(loads) // 2] if len(loads) % 2 else
                                   (loads[len(loads) // 2 - 1] + loads[len(loads) // 2]) / 2)
    return PodCounts(tuple(ready), starting, pending, load, timeless)


def pod_target(pod: Mapping[str, Any]) -> PodTarget:
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    ready = _condition(pod, "Ready") or {}
    return PodTarget(namespace=meta.get("namespace", ""), name=meta.get("name", ""), uid=meta.get("uid", ""),
                     ip=status.get("podIP"), port=tei_port(pod.get("spec") or {}),
                     ready_since=parse_time(ready.get("lastTransitionTime")))


def build_signals(now: float, current: int, counts: PodCounts, metrics: ServiceMetrics,
                  schedulable: int | None) -> Signals:
    """The policy's input. Ready pods the source has not read yet (just turned Ready) count as starting."""
    unread = len(metrics.unread_pods)
    ready = len(counts.ready) - unread
    error = metrics.error
    return Signals(
        observed_at=metrics.observed_at if error is None else now,
        current_replicas=current,
        ready_replicas=ready,
        starting_replicas=counts.starting + unread,
        pending_replicas=counts.pending,
        queue_size_total=None if error else metrics.queue_size_total,
        batch_tokens_rate_sum=None if error else metrics.batch_tokens_rate_sum,
        batch_rate_count=None if error else metrics.nonempty_batch_rate,
        overloaded_rate=None if error else metrics.overloaded_rate,
        request_rate=None if error else metrics.request_rate,
        success_rate=None if error else metrics.success_rate,
        schedulable_capacity=schedulable,
        mean_batch_seconds=None if error else metrics.mean_batch_seconds,
        request_duration_buckets=None if error else metrics.duration_bucket_rates,
        load_seconds=counts.load_seconds,
        error=error,
    )


@dataclasses.dataclass
class ServiceView:
    """One autoscaled service as seen in this tick."""

    rtype: ResourceType
    body: dict
    resource: ServiceResource
    deployment: dict | None
    pods: list[dict]
    _counts: PodCounts | None = dataclasses.field(default=None, init=False, repr=False, compare=False)
    _at_rest: TickOutcome | None = dataclasses.field(default=None, init=False, repr=False, compare=False)

    def counts(self, now: float) -> PodCounts:
        """`count_pods` of the view's pods with the service's startup grace, computed once while the result does not
        depend on `now` (`PodCounts.timeless`): the fast path keeps its views while the store is unchanged, and
        counting the same pods of 500 services every 2 s was a fifth of its CPU."""
        if self._counts is not None:
            return self._counts
        counts = count_pods(self.pods, now, self.resource.spec.autoscaling.startup_grace_seconds)
        if counts.timeless:
            self._counts = counts
        return counts

    @property
    def uid(self) -> str:
        return str((self.body.get("metadata") or {}).get("uid", ""))

    @property
    def current_replicas(self) -> int:
        """The Deployment's spec.replicas (the API server defaults a missing value to 1; 1 without a Deployment)."""
        replicas = ((self.deployment or {}).get("spec") or {}).get("replicas")
        return int(replicas if replicas is not None else 1)

    @property
    def label(self) -> str:
        return f"{self.resource.kind} {self.resource.namespace}/{self.resource.name}"

    def at_rest(self) -> TickOutcome:
        """The fast path's hold for the service while its pods are at rest (`AT_REST`): it depends on the view
        alone, so it is made once per view (the fast path keeps its views while the store is unchanged)."""
        if self._at_rest is None:
            self._at_rest = TickOutcome(self.label, decision=Decision(
                desired_replicas=self.current_replicas, action="Hold", reason=AT_REST, fast=True))
        return self._at_rest


@dataclasses.dataclass(frozen=True)
class TickOutcome:
    """What a tick did for one service (for logs and tests)."""

    service: str
    decision: Decision | None = None
    scaled_from: int | None = None
    scaled_to: int | None = None
    status_written: bool = False
    error: str | None = None


_TickViews = tuple[list[tuple[ResourceType, dict, ServiceResource]], list[tuple[ResourceType, dict]],
                   ClusterUsage | None, list[ServiceView]]
"""(autoscaled services, services with autoscaling off still carrying our status, GPU usage, views): `_tick_views`."""


@dataclasses.dataclass
class _Memory:
    state: PolicyState = dataclasses.field(default_factory=PolicyState)
    zero: Any = None  # scale to zero's ZeroState (activation.py), for services with scaleToZero
    last_scale_time: float | None = None


class Autoscaler:
    """The loop. `tick()` runs once; `run()` ticks until cancelled.

    `sources` maps a metrics source name ("scrape", "prometheus") to a `MetricsSource`; missing ones are built
    from the settings on first use. `clock` gives epoch seconds (tests pass a fake one)."""

    def __init__(self, kube: KubeClient, settings: Any, *, sources: Mapping[str, MetricsSource] | None = None,
                 clock: Callable[[], float] = time.time, cache: Any = None,
                 notify: Callable[[tuple[str, str, str]], None] | None = None) -> None:
        self.kube = kube
        # The controller's watch-fed store (controller/cache.py): services, pods and nodes are read from it instead
        # of LISTed each tick. None: LIST them (tests, tools).
        self.cache = cache
        self.settings = settings
        self.clock = clock
        self.kinds = service_types()
        for rtype in self.kinds.values():
            kube.register(rtype)
        self.tick_seconds = float(settings.autoscaler_tick_seconds)
        self.window = rate_window_seconds(self.tick_seconds)
        self.writer = StatusWriter(kube, settings.autoscaler_field_manager, cache=cache, notify=notify)
        self.sources: dict[str, MetricsSource] = dict(sources or {})
        self.memory: dict[str, _Memory] = {}
        self.fast_tick_seconds = float(getattr(settings, "autoscaler_fast_tick_seconds", 0) or 0)
        self.fast_window = float(getattr(settings, "autoscaler_fast_window_seconds", 10))
        self.activation: Any = None  # activation.ActivationReader, built when a service has scaleToZero
        # A main tick and a fast tick never interleave: they share each service's policy state.
        self._lock = asyncio.Lock()
        self.forbidden: set[tuple[str, str]] = set()  # (namespace, plural) it may not list, warned about once
        self._resources: dict[str, tuple[str, ServiceResource]] = {}  # uid -> (resourceVersion, parsed), see _parsed
        self._fast_kept: tuple[int, list[ServiceView], list[ServiceTarget]] | None = None  # see _fast_views
        self._kept: tuple[int, _TickViews] | None = None  # see _tick_views
        self._listed_uids: set[str] = set()

    # -- sources ----------------------------------------------------------------------------------------------
    def source_name(self, resource: ServiceResource) -> str:
        chosen = resource.spec.autoscaling.metrics_source
        return self.settings.metrics_source if chosen == "default" else chosen

    def source(self, name: str) -> MetricsSource:
        """The source by name, built from the settings the first time. Raises ValueError naming the setting."""
        if name not in self.sources:
            s = self.settings
            if name == "prometheus":
                from .sources.prometheus import PrometheusSource

                if not s.prometheus_url:
                    raise ValueError("metricsSource prometheus needs the operator setting "
                                     "TEI_OPERATOR_PROMETHEUS_URL (prometheus_url), which is not set")
                self.sources[name] = PrometheusSource(
                    s.prometheus_url, window=self.window, timeout=s.prometheus_query_timeout_seconds,
                    namespace_label=s.prometheus_namespace_label, pod_label=s.prometheus_pod_label)
            elif name == "scrape":
                from .sources.scrape import ApiProxyFetcher, KeepAliveFetcher, ScrapeSource, resolve_scrape_via

                via = resolve_scrape_via(s.scrape_via)
                fetcher = (KeepAliveFetcher() if via == "podip"
                           else ApiProxyFetcher(self.kube, timeout=s.scrape_timeout_seconds))
                self.sources[name] = ScrapeSource(fetcher, timeout=s.scrape_timeout_seconds, window=self.window)
                logger.info("Started the built-in metrics scraper (pods reached by %s)", via)
            elif name == FAST_SOURCE:
                from .sources.scrape import ApiProxyFetcher, KeepAliveFetcher, ScrapeSource, resolve_scrape_via

                via = resolve_scrape_via(s.scrape_via)
                timeout = min(s.scrape_timeout_seconds, max(self.fast_tick_seconds, 0.5))
                fetcher = KeepAliveFetcher() if via == "podip" else ApiProxyFetcher(self.kube, timeout=timeout)
                self.sources[name] = ScrapeSource(fetcher, timeout=timeout, window=self.fast_window)
                logger.info("Started the fast scale-up path's scraper (every %.3g s, %.3g s window, pods reached "
                            "by %s)", self.fast_tick_seconds, self.fast_window, via)
            else:
                raise ValueError(f"metricsSource: must be prometheus or scrape, got {name!r}")
        return self.sources[name]

    async def close(self) -> None:
        if self.activation is not None:
            await self.activation.close()
        for source in self.sources.values():
            try:
                await source.close()
            except Exception as exc:  # noqa: BLE001 - closing is best effort
                logger.debug("Failed to close metrics source %s: %s", source.name, exc)

    # -- listing ----------------------------------------------------------------------------------------------
    def _namespaces(self) -> list[str | None]:
        return list(self.settings.namespaces) or [None]

    async def _list(self, rtype: ResourceType, label_selector: str | None = None) -> list[dict]:
        """The services of every watched namespace. A namespace the operator may not list (no Role there) is skipped
        with a warning naming it and the permission, so it does not stop autoscaling in the others."""
        out: list[dict] = []
        if self.cache is not None:
            wanted = dict(part.split("=", 1) for part in (label_selector or "").split(",") if part)
            for namespace in self._namespaces():
                out.extend(self.cache.list_now(rtype, namespace, wanted))
            return out
        for namespace in self._namespaces():
            try:
                out.extend(await self.kube.list(rtype, namespace, label_selector=label_selector))
            except KubeApiError as exc:
                if namespace is None or exc.status not in (401, 403):
                    raise
                if (namespace, rtype.plural) not in self.forbidden:
                    self.forbidden.add((namespace, rtype.plural))
                    logger.warning("Skipped namespace %s in the autoscaler: no permission to list %s there (%s); "
                                   "its services are not autoscaled until the operator's Role allows it",
                                   namespace, rtype.plural, exc.message)
                continue
            self.forbidden.discard((namespace, rtype.plural))
        return out

    async def _services(self) -> tuple[list[tuple[ResourceType, dict, ServiceResource]], list[tuple[ResourceType, dict]]]:
        """(autoscaled services, services with autoscaling off that still carry our status)."""
        on, off = [], []
        listed: set[str] = set()
        for rtype in self.kinds.values():
            for body in await self._list(rtype):
                body.setdefault("kind", rtype.kind)
                body.setdefault("apiVersion", rtype.api_version)
                listed.add(str((body.get("metadata") or {}).get("uid", "")))
                if (body.get("metadata") or {}).get("deletionTimestamp"):
                    continue
                try:
                    resource = self._parsed(body)
                except ValueError as exc:  # the controller reports it (Degraded/InvalidSpec)
                    logger.debug("Skipped %s %s: invalid spec: %s", rtype.kind,
                                 (body.get("metadata") or {}).get("name"), exc)
                    continue
                if resource.spec.autoscaling.enabled:
                    on.append((rtype, body, resource))
                else:
                    status = body.get("status") or {}
                    if status.get("autoscaling") is not None or find_condition(status.get("conditions"),
                                                                               SCALING_LIMITED):
                        off.append((rtype, body))
        self._listed_uids = listed  # every service's, autoscaled or not: what `_parsed` keeps
        return on, off

    def _parsed(self, body: Mapping[str, Any]) -> ServiceResource:
        """`ServiceResource.from_body`, remembered per object version: the fast path looks at every service every
        2 s, and validating an unchanged spec each time was most of its cost at 1,000 services. Keyed by uid and
        resourceVersion (any change of the object is a new version); without them (tests, tools) parsed anew."""
        meta = body.get("metadata") or {}
        uid, version = meta.get("uid"), meta.get("resourceVersion")
        if not uid or not version:
            return ServiceResource.from_body(body)
        held = self._resources.get(uid)
        if held is not None and held[0] == version:
            return held[1]
        resource = ServiceResource.from_body(body)
        self._resources[uid] = (version, resource)
        return resource

    # -- the tick ---------------------------------------------------------------------------------------------
    async def tick(self) -> list[TickOutcome]:
        """One pass over every autoscaled service."""
        async with self._lock:
            return await self._tick()

    async def _tick(self) -> list[TickOutcome]:
        now = self.clock()
        services, disabled, usage, views = await self._tick_views()
        outcomes: list[TickOutcome] = []
        for rtype, body in disabled:
            outcomes.append(await self._isolated(self._clear(rtype, body), self._name(body)))
        live_uids = {str((b.get("metadata") or {}).get("uid")) for _, b, _ in services}
        for uid in [u for u in self.memory if u not in live_uids]:
            del self.memory[uid]
        for uid in [u for u in self._resources if u not in self._listed_uids]:
            del self._resources[uid]
        if not services:
            return outcomes
        metrics = await self._metrics(views, now)
        for view in views:
            outcomes.append(await self._isolated(
                self._decide_and_apply(view, metrics.get(view.uid), usage, now), view.label))
        return outcomes

    async def _tick_views(self) -> _TickViews:
        """What a main tick looks at: the autoscaled services, those with autoscaling off that still carry our
        status, the cluster's GPU usage (None when no service uses a GPU) and a view of each autoscaled service.
        Kept from the last main tick while the store has not changed (its `version`), as the fast path keeps its
        own: at 1,000 idle services, building them anew (and matching every service's pod template to the GPU
        nodes) was a third of each tick."""
        version = getattr(self.cache, "version", None)
        if version is not None and self._kept is not None and self._kept[0] == version:
            return self._kept[1]
        services, disabled = await self._services()
        usage: ClusterUsage | None = None
        views: list[ServiceView] = []
        if services:
            deployments = {((d.get("metadata") or {}).get("namespace"), (d.get("metadata") or {}).get("name")): d
                           for d in await self._list(DEPLOYMENT, MANAGED_BY_SELECTOR)}
            uses_gpu = any(s[2].spec.gpu.count > 0 for s in services)
            usage, all_pods = await self._cluster_usage() if uses_gpu else (None, None)
            our_pods = [p for p in all_pods if (p.get("metadata") or {}).get("labels", {}).get(
                "app.kubernetes.io/managed-by") == "tei-operator"] if all_pods is not None else \
                await self._list(POD, MANAGED_BY_SELECTOR)
            views = self._views(services, deployments, our_pods)
        kept: _TickViews = (services, disabled, usage, views)
        if version is not None:
            self._kept = (version, kept)
        return kept

    @staticmethod
    def _views(services: Sequence[tuple[ResourceType, dict, ServiceResource]],
               deployments: Mapping[tuple[Any, Any], dict], our_pods: Sequence[dict]) -> list[ServiceView]:
        # Pods indexed by (namespace, label, value), so a service's pods are found among the few that carry its
        # selector's rarest label, not by scanning every pod of the fleet for every service (quadratic in N).
        index: dict[tuple[Any, str, str], list[dict]] = {}
        for pod in our_pods:
            meta = pod.get("metadata") or {}
            namespace = meta.get("namespace")
            for key, value in (meta.get("labels") or {}).items():
                index.setdefault((namespace, key, value), []).append(pod)
        views: list[ServiceView] = []
        for rtype, body, resource in services:
            # The Deployment the Service selects (blue/green model changes: the active one, not the candidate).
            deployment = deployments.get((resource.namespace, active_deployment(resource.name, body.get("status"))))
            selector = (((deployment or {}).get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
            pods: list[dict] = []
            if selector:
                fewest = min((index.get((resource.namespace, key, value), []) for key, value in selector.items()),
                             key=len)
                pods = [p for p in fewest if matches_selector((p.get("metadata") or {}).get("labels") or {}, selector)]
            views.append(ServiceView(rtype, body, resource, deployment, pods))
        return views

    # -- the fast scale-up path -------------------------------------------------------------------------------
    async def fast_tick(self) -> list[TickOutcome]:
        """One pass of the fast path over the services that have it on: their Ready pods' /metrics read directly
        (`FAST_SOURCE`, a short window), `decide_fast`, and a scale-up applied at once. Never scales down and
        writes no status (the main tick does); a scale-up posts its Event."""
        async with self._lock:
            return await self._fast_tick()

    async def _fast_tick(self) -> list[TickOutcome]:
        now = self.clock()
        views, targets = await self._fast_views(now)
        if not views:
            return []
        try:
            result = await self.source(FAST_SOURCE).fetch(targets, now)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the fast path then does nothing; the main tick goes on
            result = SourceResult(pods={}, error=f"fast path scrape: {exc}")
        stale = min(self.settings.metrics_stale_seconds, 3 * self.fast_window)
        usage_box: list[ClusterUsage | None] = []
        outcomes = []
        for view, target in zip(views, targets):
            if view.deployment is not None and target.pods and all(pod.uid in result.at_rest for pod in target.pods):
                # Every Ready pod at rest over the window (no request, no queue, no 429): `decide_fast` holds and
                # keeps its state (nothing to learn a peak from, no ratio above 0), so it is not asked. At 1,000
                # idle services this is most of the fast path's own CPU (tests/unit/test_fast_at_rest.py).
                outcomes.append(view.at_rest())
                continue
            metrics = aggregate(target, result, now, stale_seconds=stale,
                                fresh_grace_seconds=self.settings.metrics_stale_seconds)
            outcomes.append(await self._isolated(self._fast_decide(view, metrics, usage_box, now), view.label))
        return outcomes

    async def _fast_views(self, now: float) -> tuple[list[ServiceView], list[ServiceTarget]]:
        """The services the fast path reads, and their Ready pods. Not those at maxReplicas: the fast path only
        scales up, so reading their pods every 2 s could change nothing. Kept from the last fast tick while the
        store has not changed (its `version`): at 1,000 idle services, building them anew every 2 s was most of
        the fast path's own CPU."""
        version = getattr(self.cache, "version", None)
        if version is not None and self._fast_kept is not None and self._fast_kept[0] == version:
            return self._fast_kept[1], self._fast_kept[2]
        services, _ = await self._services()
        services = [x for x in services if x[2].spec.autoscaling.fast_scale_up.enabled]
        views: list[ServiceView] = []
        targets: list[ServiceTarget] = []
        if services:
            deployments = {((d.get("metadata") or {}).get("namespace"), (d.get("metadata") or {}).get("name")): d
                           for d in await self._list(DEPLOYMENT, MANAGED_BY_SELECTOR)}
            for view in self._views(services, deployments, await self._list(POD, MANAGED_BY_SELECTOR)):
                replicas = ((view.deployment or {}).get("spec") or {}).get("replicas")
                most = view.resource.spec.autoscaling.max_replicas
                if replicas is not None and most is not None and int(replicas) >= most:
                    continue
                counts = view.counts(now)
                views.append(view)
                targets.append(ServiceTarget(view.resource.namespace, view.resource.name,
                                             tuple(pod_target(p) for p in counts.ready)))
        if version is not None:
            self._fast_kept = (version, views, targets)
        return views, targets

    async def _fast_decide(self, view: ServiceView, metrics: ServiceMetrics, usage_box: list,
                           now: float) -> TickOutcome:
        resource, deployment = view.resource, view.deployment
        if deployment is None:
            return TickOutcome(view.label, error="the Deployment does not exist yet")
        spec = resource.spec.autoscaling
        dep_spec = deployment.get("spec") or {}
        current = view.current_replicas
        counts = view.counts(now)
        memory = self.memory.setdefault(view.uid, _Memory())
        mbt = resource.spec.engine.max_batch_tokens
        pending = self.settings.max_pending_replicas
        signals = build_signals(now, current, counts, metrics, None)
        decision, state = decide_fast(signals, memory.state, spec, mbt, now, pending)
        if decision.action == "ScaleUp" and resource.spec.gpu.count > 0:
            # Only now read the GPU capacity (two cluster-wide LISTs), once per fast tick, as the main tick does.
            if not usage_box:
                usage_box.append((await self._cluster_usage())[0])
            if usage_box[0] is not None:
                template_spec = (dep_spec.get("template") or {}).get("spec") or {}
                capacity = schedulable_replicas(usage_box[0], template_spec, resource.spec.gpu.resource_name,
                                                view.pods)
                if capacity is not None:
                    signals = dataclasses.replace(signals, schedulable_capacity=capacity.schedulable)
                    decision, state = decide_fast(signals, memory.state, spec, mbt, now, pending)
        memory.state = state  # a hold changes at most the learned peak
        if decision.action != "ScaleUp":
            return TickOutcome(view.label, decision=decision)
        await self.writer.set_replicas(resource.namespace, deployment["metadata"]["name"], decision.desired_replicas,
                                       kind=resource.kind, service=resource.name)
        memory.last_scale_time = now
        logger.info("Scaled Deployment %s/%s up from %d to %d: %s", resource.namespace, resource.name, current,
                    decision.desired_replicas, decision.reason)
        await self.writer.event(view.body, "ScaledUp", f"Scaled up from {current} to {decision.desired_replicas}: "
                                f"{decision.reason}")
        return TickOutcome(view.label, decision=decision, scaled_from=current, scaled_to=decision.desired_replicas)

    @staticmethod
    def _name(body: Mapping[str, Any]) -> str:
        meta = body.get("metadata") or {}
        return f"{body.get('kind')} {meta.get('namespace')}/{meta.get('name')}"

    async def _isolated(self, work: Any, label: str) -> TickOutcome:
        """Run one service's work; a failure is logged and returned, never raised (the others go on)."""
        try:
            return await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - one failing service must not stop the loop for the others
            detail = str(exc) if isinstance(exc, (KubeApiError, ValueError)) else f"{type(exc).__name__}: {exc}"
            logger.warning("Failed to autoscale %s: %s", label, detail, exc_info=not isinstance(
                exc, (KubeApiError, ValueError)))
            return TickOutcome(label, error=detail)

    async def _cluster_usage(self) -> tuple[ClusterUsage | None, list[dict] | None]:
        """One LIST of nodes and one of all pods (for what is allocated on each node). Without the right to list
        pods cluster-wide, capacity is unknown (no limit is applied, and a warning says why). With the store: the
        nodes and pods it holds (every pod the operator watches), no request."""
        if self.cache is not None:
            pods = [p for p in self.cache.list_now(POD) if not is_terminated(p)]
            nodes = self.cache.list_now(NODE) if self.cache.nodes_watched else []
            return (ClusterUsage.from_lists(nodes, pods) if nodes else None), pods
        try:
            nodes = await self.kube.list(NODE)
            pods = await self.kube.list(POD, None, field_selector="status.phase!=Succeeded,status.phase!=Failed")
        except KubeApiError as exc:
            if exc.status in (401, 403):
                logger.warning("Failed to read GPU capacity (nodes and all pods): %s; GPU capacity is not "
                               "enforced", exc.message)
                return None, None
            raise
        return ClusterUsage.from_lists(nodes, pods), pods

    async def _metrics(self, views: Sequence[ServiceView], now: float) -> dict[str, ServiceMetrics]:
        """Every service's metrics: one fetch per source in use, all sources at once."""
        groups: dict[str, list[tuple[ServiceView, ServiceTarget]]] = {}
        out: dict[str, ServiceMetrics] = {}
        for view in views:
            counts = view.counts(now)
            target = ServiceTarget(view.resource.namespace, view.resource.name,
                                   tuple(pod_target(p) for p in counts.ready))
            groups.setdefault(self.source_name(view.resource), []).append((view, target))

        async def one(name: str, members: list[tuple[ServiceView, ServiceTarget]]) -> None:
            try:
                result = await self.source(name).fetch([t for _, t in members], now)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a broken source makes its services' metrics unknown
                result = SourceResult(pods={}, error=f"metrics source {name}: {exc}")
            METRICS.metric_source_result(name, result.error)
            for view, target in members:
                out[view.uid] = aggregate(target, result, now, stale_seconds=self.settings.metrics_stale_seconds,
                                          fresh_grace_seconds=self.settings.metrics_stale_seconds)

        await asyncio.gather(*(one(name, members) for name, members in groups.items()))
        return out

    @staticmethod
    def service_signals(view: ServiceView, current: int, metrics: ServiceMetrics | None, schedulable: int | None,
                        now: float) -> Signals:
        """A service's Signals this tick: its pods counted with its startup grace, its metrics as aggregated."""
        counts = view.counts(now)
        if metrics is None:
            metrics = ServiceMetrics(observed_at=now, error="no metrics were fetched")
        return build_signals(now, current, counts, metrics, schedulable)

    async def _decide_and_apply(self, view: ServiceView, metrics: ServiceMetrics | None,
                                usage: ClusterUsage | None, now: float) -> TickOutcome:
        resource, deployment = view.resource, view.deployment
        if deployment is None:
            return TickOutcome(view.label, error="the Deployment does not exist yet")
        spec = resource.spec.autoscaling
        dep_spec = deployment.get("spec") or {}
        current = view.current_replicas
        schedulable = None
        if usage is not None:
            template_spec = (dep_spec.get("template") or {}).get("spec") or {}
            capacity = schedulable_replicas(usage, template_spec, resource.spec.gpu.resource_name, view.pods)
            schedulable = None if capacity is None else capacity.schedulable
        signals = self.service_signals(view, current, metrics, schedulable, now)
        memory = self.memory.setdefault(view.uid, _Memory())
        if spec.scale_to_zero is not None:  # scale to zero (activation.py): the activation query decides at zero
            decision, memory.state, memory.zero = await scale_to_zero_tick(self, signals, memory, spec, resource, now)
        else:
            decision, memory.state = decide(signals, memory.state, spec, resource.spec.engine.max_batch_tokens, now,
                                            self.settings.max_pending_replicas)
        METRICS.autoscaler_decision(decision.action, decision.limited_by)
        outcome = TickOutcome(view.label, decision=decision)
        if decision.desired_replicas != current:
            await self.writer.set_replicas(resource.namespace, deployment["metadata"]["name"],
                                           decision.desired_replicas, kind=resource.kind, service=resource.name)
            memory.last_scale_time = now
            outcome = dataclasses.replace(outcome, scaled_from=current, scaled_to=decision.desired_replicas)
            direction = "up" if decision.desired_replicas > current else "down"
            logger.info("Scaled Deployment %s/%s %s from %d to %d: %s", resource.namespace, resource.name, direction,
                        current, decision.desired_replicas, decision.reason)
            await self.writer.event(view.body, "ScaledUp" if direction == "up" else "ScaledDown",
                                    f"Scaled {direction} from {current} to {decision.desired_replicas}: "
                                    f"{decision.reason}")
        written = await self._write(view, decision, signals, memory, now)
        return dataclasses.replace(outcome, status_written=bool(written))

    async def _write(self, view: ServiceView, decision: Decision, signals: Signals, memory: _Memory,
                     now: float) -> dict:
        generation = int((view.body.get("metadata") or {}).get("generation") or 0)
        status = autoscaling_status(decision, signals, last_scale_time=memory.last_scale_time or
                                    parse_time(((view.body.get("status") or {}).get("autoscaling") or {})
                                               .get("lastScaleTime")),
                                    now=now, failures=min(memory.state.consecutive_failures,
                                                          view.resource.spec.autoscaling.failure_threshold))
        condition = scaling_limited_condition(decision, generation)
        before = find_condition((view.body.get("status") or {}).get("conditions"), SCALING_LIMITED)
        patch = await self.writer.write_status(view.rtype, view.body, status, condition, now=rfc3339(now))
        if "conditions" in patch and condition["status"] == "True" and (
                before is None or before.get("status") != "True" or before.get("reason") != condition["reason"]):
            kind = "Warning" if condition["reason"] in ("MetricsUnavailable", "ActivationUnavailable") else "Normal"
            await self.writer.event(view.body, "ScalingLimited", f"Scaling of {view.label} limited "
                                    f"({condition['reason']}): {condition['message']}", kind)
            logger.info("Limited scaling of %s (%s): %s", view.label, condition["reason"], condition["message"])
        return patch

    async def _clear(self, rtype: ResourceType, body: Mapping[str, Any]) -> TickOutcome:
        """Autoscaling turned off: remove status.autoscaling and ScalingLimited, which would otherwise go stale."""
        patch = await self.writer.write_status(rtype, body, None, None, now=rfc3339(self.clock()))
        if patch:
            logger.info("Cleared the autoscaler's status of %s: autoscaling is off", self._name(body))
        return TickOutcome(self._name(body), status_written=bool(patch))

    # -- running ----------------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Tick every `autoscaler_tick_seconds` (and the fast path every `autoscaler_fast_tick_seconds`, unless 0)
        until cancelled. A failed tick is logged; the next one retries."""
        logger.info("Started the autoscaler (tick %.3g s, metrics from %s by default, rate window %.0f s; fast "
                    "scale-up path %s)", self.tick_seconds, self.settings.metrics_source, self.window,
                    f"every {self.fast_tick_seconds:.3g} s over {self.fast_window:.3g} s"
                    if self.fast_tick_seconds > 0 else "off")
        async def main_tick() -> None:
            started = time.monotonic()
            await self.tick()
            # What the AutoscalerStale alert reads (the main tick, not the fast one), and the tick's duration.
            METRICS.autoscaler_tick_succeeded(time.monotonic() - started)

        loops = [self._every(self.tick_seconds, main_tick, "an autoscaler tick")]
        if self.fast_tick_seconds > 0:
            loops.append(self._every(self.fast_tick_seconds, self.fast_tick, "a fast scale-up tick"))
        try:
            await asyncio.gather(*loops)
        finally:
            await self.close()
            logger.info("Stopped the autoscaler")

    @staticmethod
    async def _every(period: float, work: Callable[[], Any], what: str) -> None:
        while True:
            started = time.monotonic()
            try:
                await work()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the loop must outlive a bad tick
                logger.warning("Failed %s: %s", what, exc, exc_info=not isinstance(exc, KubeApiError))
            elapsed = time.monotonic() - started
            if elapsed > period:
                logger.warning("%s took %.1f s, longer than its %.3g s period", what.split(" ", 1)[1].capitalize(),
                               elapsed, period)
            await asyncio.sleep(max(0.0, period - elapsed) if math.isfinite(elapsed) else 0)


def start_autoscaler(kube: KubeClient, settings: Any, *, cache: Any = None,
                     notify: Callable[[tuple[str, str, str]], None] | None = None) -> asyncio.Task:
    """Start the loop as a task of the running event loop (call from kopf's startup handler; cancel the task at
    cleanup: it closes its metrics sources on the way out). `cache`, `notify`: see `Autoscaler`."""
    return asyncio.create_task(Autoscaler(kube, settings, cache=cache, notify=notify).run(), name="autoscaler")
