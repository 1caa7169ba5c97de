"""The policies the benchmark compares, and the baselines a competent platform team would deploy (issue #9 item 4).

Every policy sees the fleet only through the simulator's `FleetView` (what it would see for real): the pods'
phases, their TEI /metrics pages, their in-flight requests (Knative's queue-proxy), and a simulated Prometheus that
scraped the Ready pods every 15 s. tei-operator's own policy lives in operator_policy.py (the live code path).

Each baseline's exact configuration, as a user would write it, comes from `config()` and is printed in the report.
Each has one knob (`knob`, its target) that the sweep varies to draw the cost-vs-SLO curves.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

QUEUE_QUERY = "sum(avg_over_time(te_queue_size[1m]))"
RATE_QUERY = "sum(rate(te_request_count[1m]))"


class Policy:
    """A scaling policy. `tick(now, view)` returns the replica count to ask for, or None to leave it.

    The driver calls `tick` at every multiple of `interval` (+ `phase`) and of every entry of `intervals`."""

    name: str = "policy"
    interval: float = 15.0
    phase: float = 0.0
    intervals: tuple[float, ...] = ()
    knob: str | None = None
    """Name of the swept parameter (None: nothing to sweep)."""
    knob_value: float | None = None

    def tick(self, now: float, view) -> int | None:
        raise NotImplementedError

    def config(self) -> str:
        """The policy's exact configuration as the user would deploy it (YAML or a sentence)."""
        return ""


# ---- reading the simulated Prometheus -------------------------------------------------------------------------

def prom_sum_avg_over_time(view, metric: str, window: float) -> float | None:
    """sum over pods of avg_over_time(metric[window]) at view.now; None when Prometheus has no series."""
    return view.prometheus.avg_over_time(metric, window)


def prom_sum_rate(view, metric: str, window: float) -> float | None:
    """sum over pods of rate(metric[window]) at view.now (no extrapolation); None when there are no series."""
    return view.prometheus.rate(metric, window)


def live_pods(view) -> int:
    """Pods the Deployment has (status.replicas): Pending, Loading and Ready, not the ones draining."""
    return sum(1 for p in view.pods() if p.phase != "Draining")


def ready_pods(view) -> list:
    return [p for p in view.pods() if p.phase == "Ready"]


# ---- Kubernetes HPA (autoscaling/v2) ---------------------------------------------------------------------------

@dataclass
class HpaBehavior:
    """spec.behavior of an HPA (the values a team sets for a GPU service whose pods take a minute to load)."""

    up_window_s: float = 0.0
    up_pods: int = 8
    up_percent: int = 100
    up_period_s: float = 15.0
    down_window_s: float = 300.0
    down_percent: int = 100
    down_period_s: float = 15.0

    def yaml(self) -> str:
        return (f"behavior:\n"
                f"  scaleUp:\n    stabilizationWindowSeconds: {self.up_window_s:g}\n    selectPolicy: Max\n"
                f"    policies:\n    - {{type: Pods, value: {self.up_pods}, periodSeconds: {self.up_period_s:g}}}\n"
                f"    - {{type: Percent, value: {self.up_percent}, periodSeconds: {self.up_period_s:g}}}\n"
                f"  scaleDown:\n    stabilizationWindowSeconds: {self.down_window_s:g}\n"
                f"    policies:\n    - {{type: Percent, value: {self.down_percent}, periodSeconds: "
                f"{self.down_period_s:g}}}")


class Hpa(Policy):
    """The HPA controller's algorithm for one External metric with an AverageValue target (sync every 15 s).

    proposal = ceil(metric / target) unless |metric / (target x status.replicas) - 1| <= 0.1 (tolerance);
    then the behaviour: the highest proposal of the scale-down window and the lowest of the scale-up window,
    rate limits per period (the larger of the Pods and Percent policies), min/max replicas. A metric that cannot
    be read (an error, or an empty result) means no scaling this sync (condition ScalingActive=False).
    """

    tolerance = 0.1

    def __init__(self, name: str, target: float, lo: int, hi: int, behavior: HpaBehavior | None = None,
                 phase: float = 3.0):
        self.name, self.target, self.lo, self.hi = name, float(target), lo, hi
        self.knob, self.knob_value = "target", float(target)
        self.behavior = behavior or HpaBehavior()
        self.interval, self.phase = 15.0, phase
        self.recs: deque[tuple[float, int]] = deque()
        self.events: deque[tuple[float, int]] = deque()  # (time, replica change)

    def metric(self, view) -> float | None:
        raise NotImplementedError

    def recommend(self, value: float, status_replicas: int) -> int:
        if status_replicas > 0 and abs(value / (self.target * status_replicas) - 1.0) <= self.tolerance:
            return status_replicas
        return math.ceil(value / self.target - 1e-9)

    def tick(self, now: float, view) -> int | None:
        value = self.metric(view)
        cur = view.desired
        if value is None or cur == 0:
            return None
        rec = self.recommend(value, live_pods(view))
        b = self.behavior
        self.recs.append((now, rec))
        horizon = max(b.up_window_s, b.down_window_s)
        while self.recs and self.recs[0][0] <= now - horizon - 1e-9:
            self.recs.popleft()
        up_floor = min(r for t, r in self.recs if t > now - b.up_window_s - 1e-9) if b.up_window_s else rec
        down_ceiling = max(r for t, r in self.recs if t > now - b.down_window_s - 1e-9)
        want = cur
        if up_floor > cur:
            want = up_floor
        elif down_ceiling < cur:
            want = down_ceiling
        while self.events and self.events[0][0] <= now - max(b.up_period_s, b.down_period_s) + 1e-9:
            self.events.popleft()
        if want > cur:
            added = sum(d for t, d in self.events if d > 0 and t > now - b.up_period_s + 1e-9)
            base = cur - added
            want = min(want, max(base + b.up_pods, math.ceil(base * (1 + b.up_percent / 100))))
        elif want < cur:
            removed = -sum(d for t, d in self.events if d < 0 and t > now - b.down_period_s + 1e-9)
            base = cur + removed
            want = max(want, base - math.floor(base * b.down_percent / 100))
        want = max(self.lo, min(self.hi, want))
        if want != cur:
            self.events.append((now, want - cur))
        return want


class HpaQueue(Hpa):
    """HPA on the averaged queue, served by prometheus-adapter as an External metric."""

    def metric(self, view) -> float | None:
        return prom_sum_avg_over_time(view, "te_queue_size", 60.0)

    def config(self) -> str:
        return (f"# prometheus-adapter externalRules: name te_queue_avg, metricsQuery: {QUEUE_QUERY}\n"
                f"minReplicas: {self.lo}\nmaxReplicas: {self.hi}\nmetrics:\n- type: External\n  external:\n"
                f"    metric: {{name: te_queue_avg}}\n    target: {{type: AverageValue, averageValue: "
                f"{self.target:g}}}\n{self.behavior.yaml()}")


class HpaRate(Hpa):
    """HPA on the arrival rate per pod (requests/s), served by prometheus-adapter as an External metric."""

    def metric(self, view) -> float | None:
        return prom_sum_rate(view, "te_request_count", 60.0)

    def config(self) -> str:
        return (f"# prometheus-adapter externalRules: name te_request_rate, metricsQuery: {RATE_QUERY}\n"
                f"minReplicas: {self.lo}\nmaxReplicas: {self.hi}\nmetrics:\n- type: External\n  external:\n"
                f"    metric: {{name: te_request_rate}}\n    target: {{type: AverageValue, averageValue: "
                f"{self.target:g}}}\n{self.behavior.yaml()}")


class Keda(Hpa):
    """KEDA's Prometheus scaler feeding its HPA (metricType AverageValue, the threshold per pod).

    useCachedMetrics: false: KEDA queries Prometheus at every HPA sync. ignoreNullValues: true (KEDA's default):
    an empty result is read as 0 (the HPA scales down to minReplicas after the stabilization window);
    false: an empty result is an error and the HPA does not scale.
    """

    def __init__(self, name: str, target: float, lo: int, hi: int, ignore_null_values: bool,
                 behavior: HpaBehavior | None = None):
        super().__init__(name, target, lo, hi, behavior, phase=5.0)
        self.ignore_null_values = ignore_null_values

    def metric(self, view) -> float | None:
        v = prom_sum_avg_over_time(view, "te_queue_size", 60.0)
        if v is None and self.ignore_null_values:
            return 0.0
        return v

    def config(self) -> str:
        return (f"kind: ScaledObject\nspec:\n  minReplicaCount: {self.lo}\n  maxReplicaCount: {self.hi}\n"
                f"  advanced:\n    horizontalPodAutoscalerConfig:\n"
                + "\n".join("      " + line for line in self.behavior.yaml().splitlines()) +
                f"\n  triggers:\n  - type: prometheus\n    metricType: AverageValue\n    useCachedMetrics: false\n"
                f"    metadata:\n      query: {QUEUE_QUERY}\n      threshold: \"{self.target:g}\"\n"
                f"      ignoreNullValues: \"{str(self.ignore_null_values).lower()}\"")


# ---- Knative KPA -------------------------------------------------------------------------------------------------

class Kpa(Policy):
    """Knative's KPA on concurrency: queue-proxy reports every pod's in-flight requests each second; every 2 s the
    autoscaler averages them over a 60 s stable and a 6 s panic window.

    desired (stable) = ceil(stable concurrency / target); panic starts when the panic window's desired count is
    >= 200% of the Ready pods and lasts until it has stayed below for a stable window; during panic the count only
    goes up. Scale-up at most 1000x, scale-down at most /2 per decision (max-scale-down-rate 2). No data: hold.
    """

    def __init__(self, name: str, target: float, lo: int, hi: int, stable_s: float = 60.0, panic_s: float = 6.0,
                 panic_threshold: float = 2.0):
        self.name, self.target, self.lo, self.hi = name, float(target), lo, hi
        self.knob, self.knob_value = "target", float(target)
        self.stable_s, self.panic_s, self.threshold = stable_s, panic_s, panic_threshold
        self.interval, self.phase = 1.0, 0.0
        self.samples: deque[tuple[float, float]] = deque()
        self.panic_since: float | None = None
        self.max_panic = 0

    def tick(self, now: float, view) -> int | None:
        ready = ready_pods(view)
        if ready:
            self.samples.append((now, float(sum(view.inflight(p.id) for p in ready))))
        while self.samples and self.samples[0][0] <= now - self.stable_s + 1e-9:
            self.samples.popleft()
        if int(round(now)) % 2 or not self.samples:
            return None
        stable = float(np.mean([v for _, v in self.samples]))
        panic_vals = [v for t, v in self.samples if t > now - self.panic_s + 1e-9]
        panic = float(np.mean(panic_vals)) if panic_vals else stable
        n_ready = max(1, len(ready))
        dspc = math.ceil(stable / self.target - 1e-9)
        dppc = math.ceil(panic / self.target - 1e-9)
        max_up, max_down = math.ceil(1000 * n_ready), math.floor(n_ready / 2)
        dspc, dppc = min(max(dspc, max_down), max_up), min(max(dppc, max_down), max_up)
        over = panic / self.target / n_ready >= self.threshold
        if self.panic_since is None and over:
            self.panic_since = now
        elif self.panic_since is not None and over:
            self.panic_since = now  # Knative restarts the panic period while over the threshold
        elif self.panic_since is not None and now - self.panic_since >= self.stable_s:
            self.panic_since, self.max_panic = None, 0
        if self.panic_since is not None:
            self.max_panic = max(self.max_panic, dppc, view.desired)  # no scale-down while panicking
            want = self.max_panic
        else:
            want = dspc
        return max(self.lo, min(self.hi, want))

    def config(self) -> str:
        return (f"autoscaling.knative.dev/class: kpa.autoscaling.knative.dev\nautoscaling.knative.dev/metric: "
                f"concurrency\nautoscaling.knative.dev/target: \"{self.target:g}\"   # in-flight requests per pod "
                f"(target-utilization-percentage folded in)\nautoscaling.knative.dev/window: \"{self.stable_s:g}s\"\n"
                f"autoscaling.knative.dev/panic-window-percentage: \"{100 * self.panic_s / self.stable_s:g}\"\n"
                f"autoscaling.knative.dev/panic-threshold-percentage: \"{100 * self.threshold:g}\"\n"
                f"autoscaling.knative.dev/min-scale: \"{self.lo}\"\nautoscaling.knative.dev/max-scale: \"{self.hi}\"")


# ---- static fleets and the oracle ------------------------------------------------------------------------------

class Static(Policy):
    """A fixed replica count (what a team runs without an autoscaler)."""

    def __init__(self, name: str, replicas: int, why: str = ""):
        self.name, self.replicas, self.why = name, int(replicas), why
        self.knob, self.knob_value = "replicas", float(replicas)
        self.interval, self.phase = 1e9, 0.0

    def tick(self, now: float, view) -> int | None:
        return self.replicas

    def config(self) -> str:
        return f"replicas: {self.replicas}" + (f"   # {self.why}" if self.why else "")


class Oracle(Policy):
    """Knows the trace's future rate (not the random arrivals): every 15 s asks for what the highest offered load
    of the next `horizon` seconds needs at `utilization` of a replica's capacity, so capacity is Ready when the
    load comes. A lower bound on what foresight buys, not a deployable policy.

    `demand`: t (array) -> replicas the offered load needs at 100% of a replica's capacity."""

    def __init__(self, name: str, demand, utilization: float, lo: int, hi: int, horizon: float):
        self.name, self.demand, self.utilization, self.lo, self.hi = name, demand, float(utilization), lo, hi
        self.horizon = float(horizon)
        self.interval, self.phase = 15.0, 0.0
        self.knob, self.knob_value = "utilization", float(utilization)

    def tick(self, now: float, view) -> int | None:
        grid = np.arange(now, now + self.horizon + 1e-9, 5.0)
        need = float(np.max(self.demand(grid)))
        return max(self.lo, min(self.hi, math.ceil(need / self.utilization - 1e-9)))

    def config(self) -> str:
        return (f"replicas(t) = ceil(max over [t, t + {self.horizon:g} s] of offered load / ({self.utilization:g} x "
                f"replica capacity)), every {self.interval:g} s")
