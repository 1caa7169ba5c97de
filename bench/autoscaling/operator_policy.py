"""The simulated operator: tei-operator's live autoscaling code path, driven by the simulator's fleet.

Nothing here builds `Signals` by hand. At each tick of the live loop it does what `Autoscaler.tick()` does, with
the simulator in place of the API server and the pods' HTTP endpoints:

1. the pods, as the API server would list them (`pod_objects`: creation time, node, Ready condition with its
   transition time, deletion for draining pods), go through the loop's own `count_pods` and `pod_target`;
2. each Ready pod's /metrics page (`view.metrics_page`, TEI's exposition format) goes through the scrape source's
   parsing, per-pod history, rates and averaged queue (`ScrapeSource.absorb_pages`, the code `ScrapeSource.fetch`
   runs after its HTTP GETs), with the loop's window (`rate_window_seconds` of the tick);
3. the loop's `aggregate` (staleness, unread pods) and `build_signals` make the policy's input, and `decide` (main
   tick) or `decide_fast` (fast scale-up path, its own scrape source over the short window) the decision.

The tick, fast tick, fast window, stale limit and pending allowance are the operator's settings
(`tei_operator.settings`), defaults unless overridden, so the benchmark measures the operator as shipped.
A page the view cannot give (a metrics outage) leaves the pod unread, as a failed scrape does live.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from tei_operator.api.autoscaling import AutoscalingSpec
from tei_operator.autoscaling.loop import build_signals, count_pods, pod_target, rate_window_seconds
from tei_operator.autoscaling.policy import Decision, PolicyState, decide, decide_fast
from tei_operator.autoscaling.signals import Signals
from tei_operator.autoscaling.sources import ServiceTarget, aggregate
from tei_operator.autoscaling.sources.scrape import ScrapeSource
from tei_operator.autoscaling.writer import rfc3339
from tei_operator.settings import Settings, load_settings

NAMESPACE = "bench"
SERVICE = "fleet"
_EPS = 1e-6


async def _no_http(pod: Any) -> str:  # the simulated pods are read through the view, never over HTTP
    raise RuntimeError("the simulated operator reads pages through the simulator's view")


def _stamp(t: float | None) -> str | None:
    # The API server's timestamps have whole seconds; the simulation's clock is seconds since the trace's start,
    # read as seconds since the epoch (the policy only ever takes differences).
    return None if t is None else rfc3339(math.floor(t))


def pod_objects(view: Any) -> tuple[list[dict], dict[str, Any]]:
    """The simulator's pods as the API server would list them, for the loop's `count_pods` / `pod_target`; and
    the view's pod id of each uid."""
    out = []
    ids: dict[str, Any] = {}
    for info in view.pods():
        ids[str(info.id)] = info.id
        name = str(info.id)
        phase = info.phase
        meta: dict[str, Any] = {"name": name, "namespace": NAMESPACE, "uid": name,
                                "creationTimestamp": _stamp(info.created_at)}
        spec: dict[str, Any] = {"containers": [{"name": "tei", "ports": [{"containerPort": 80}]}]}
        if phase != "Pending":
            spec["nodeName"] = "gpu-node"
        ready = phase in ("Ready", "Draining") and info.ready_at is not None
        conditions = [{"type": "Ready", "status": "True" if ready else "False",
                       "lastTransitionTime": _stamp(info.ready_at if ready else info.created_at)}]
        if phase == "Draining":
            meta["deletionTimestamp"] = _stamp(view.now)
        out.append({"metadata": meta, "spec": spec,
                    "status": {"phase": "Pending" if phase == "Pending" else "Running", "podIP": None,
                               "conditions": conditions}})
    return out, ids


@dataclass
class OperatorPolicy:
    """tei-operator's autoscaler as the live loop runs it (see the module docstring).

    `spec` is the service's spec.autoscaling; `max_batch_tokens` its engine's --max-batch-tokens; `settings`
    the operator's settings (defaults: main tick 15 s over a 60 s window, fast path every 2 s over 10 s).
    """

    spec: AutoscalingSpec
    max_batch_tokens: int
    name: str = "operator"
    settings: Settings = field(default_factory=load_settings)
    phase: float = 7.0
    interval: float = field(init=False)
    intervals: tuple[float, ...] = field(init=False)
    state: PolicyState = field(default_factory=PolicyState)
    decisions: list[tuple[float, Decision]] = field(default_factory=list)
    signals: list[tuple[float, str, Signals]] = field(default_factory=list)
    """(time, "main" or "fast", the Signals the policy got): kept only when `keep_signals` (tests)."""
    keep_signals: bool = False
    actions: list[tuple[float, int, int]] = field(default_factory=list)
    """(time, from, to) of each change: appended by the benchmark's driver, which applies them."""
    _last_tick: float | None = None
    knob: str | None = None
    """Name of the parameter a sweep varies (set by the benchmark, e.g. latencyTargetMs), or None."""
    knob_value: float | None = None

    def __post_init__(self) -> None:
        s = self.settings
        self.interval = float(s.autoscaler_tick_seconds)
        self.fast_interval = float(s.autoscaler_fast_tick_seconds)
        fast_on = self.fast_interval > 0 and self.spec.fast_scale_up.enabled
        self.intervals = (self.fast_interval,) if fast_on else ()
        self.window = rate_window_seconds(self.interval)
        self.main_source = ScrapeSource(_no_http, timeout=s.scrape_timeout_seconds, window=self.window)
        self.fast_source = ScrapeSource(_no_http, timeout=s.scrape_timeout_seconds,
                                        window=float(s.autoscaler_fast_window_seconds))
        self.fast_stale = min(s.metrics_stale_seconds, 3 * float(s.autoscaler_fast_window_seconds))

    def config(self) -> str:
        """The configuration as a user deploys it: the service's spec.autoscaling (as the API server stores it,
        defaults filled in) and the operator settings the autoscaler runs with."""
        import yaml

        s = self.settings
        doc = {"spec": {"autoscaling": self.spec.model_dump(by_alias=True, exclude_none=True, mode="json"),
                        "engine": {"maxBatchTokens": self.max_batch_tokens}},
               "operatorSettings": {
                   "TEI_OPERATOR_AUTOSCALER_TICK_SECONDS": s.autoscaler_tick_seconds,
                   "TEI_OPERATOR_AUTOSCALER_FAST_TICK_SECONDS": s.autoscaler_fast_tick_seconds,
                   "TEI_OPERATOR_AUTOSCALER_FAST_WINDOW_SECONDS": s.autoscaler_fast_window_seconds,
                   "TEI_OPERATOR_METRICS_SOURCE": "scrape",
                   "TEI_OPERATOR_METRICS_STALE_SECONDS": s.metrics_stale_seconds,
                   "TEI_OPERATOR_MAX_PENDING_REPLICAS": s.max_pending_replicas}}
        return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)

    # -- the driver's entry point -----------------------------------------------------------------------------
    def tick(self, now: float, view: Any) -> int | None:
        """Called at every multiple of `interval` and of each of `intervals` (+ phase); runs the main tick, the
        fast tick or both (main first, as the live loop's lock would order two ticks due at once). A second call
        at the same instant (a driver calling once per interval) does nothing."""
        if self._last_tick is not None and abs(now - self._last_tick) < 1e-9:
            return None
        self._last_tick = now
        want: int | None = None
        if self._due(now, self.interval):
            want = self._main(now, view)
        if self.intervals and self._due(now, self.fast_interval):
            fast = self._fast(now, view, want)
            if fast is not None:
                want = fast
        return want

    def _due(self, now: float, every: float) -> bool:
        k = (now - self.phase) / every
        return abs(k - round(k)) * every < _EPS * max(1.0, every) + 1e-6

    # -- the live loop's steps --------------------------------------------------------------------------------
    def _read(self, now: float, view: Any, source: ScrapeSource, stale: float) -> tuple[Any, Any]:
        pods, ids = pod_objects(view)
        counts = count_pods(pods, now, self.spec.startup_grace_seconds)
        target = ServiceTarget(NAMESPACE, SERVICE, tuple(pod_target(p) for p in counts.ready))
        pages: dict[str, str] = {}
        failed: dict[str, str] = {}
        for pod in target.pods:
            try:
                pages[pod.uid] = view.metrics_page(ids[pod.uid])
            except Exception as exc:  # noqa: BLE001 - an unreadable page is an unread pod, as a failed scrape
                failed[pod.uid] = f"GET /metrics failed: {exc}"
        result = source.absorb_pages(pages, now)
        if failed:
            # the live source answers every Ready pod's uid; those it could not read carry their error
            result = type(result)(pods={u: m for u, m in result.pods.items() if u not in failed},
                                  error=result.error, pod_errors={**result.pod_errors, **failed})
        metrics = aggregate(target, result, now, stale_seconds=stale,
                            fresh_grace_seconds=self.settings.metrics_stale_seconds)
        return counts, metrics

    def _main(self, now: float, view: Any) -> int | None:
        counts, metrics = self._read(now, view, self.main_source, self.settings.metrics_stale_seconds)
        current = int(view.desired)
        signals = build_signals(now, current, counts, metrics, view.quota)
        if self.keep_signals:
            self.signals.append((now, "main", signals))
        decision, self.state = decide(signals, self.state, self.spec, self.max_batch_tokens, now,
                                      self.settings.max_pending_replicas)
        self.decisions.append((now, decision))
        return decision.desired_replicas

    def _fast(self, now: float, view: Any, main_want: int | None) -> int | None:
        counts, metrics = self._read(now, view, self.fast_source, self.fast_stale)
        current = int(main_want if main_want is not None else view.desired)
        signals = build_signals(now, current, counts, metrics, view.quota)
        if self.keep_signals:
            self.signals.append((now, "fast", signals))
        decision, state = decide_fast(signals, self.state, self.spec, self.max_batch_tokens, now,
                                      self.settings.max_pending_replicas)
        self.state = state  # a hold changes at most the learned peak
        if decision.action != "ScaleUp":
            return None
        self.decisions.append((now, decision))
        return decision.desired_replicas
