"""The scaling policies compared by the benchmark. Each sees the fleet only through what it would see for real: the
simulator's `FleetView` (pods, their /metrics pages, a simulated Prometheus).

- `OperatorPolicy`: tei-operator's own `decide()` (imported, not copied), fed `Signals` built from the simulated
  Prometheus the way the operator's Prometheus source builds them, every 15 s.
- `HpaPolicy`: a Kubernetes HPA on an External metric (sum of te_queue_size, AverageValue target) with the default
  behaviour; `KedaPolicy`: the same HPA fed by KEDA's Prometheus scaler (30 s polling, empty result read as 0).
- `StaticPolicy`: a fixed fleet; `OraclePolicy`: knows the trace's future rate (a lower bound on cost).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tei_operator.api.autoscaling import AutoscalingSpec
from tei_operator.autoscaling.policy import PolicyState, decide
from tei_operator.autoscaling.signals import Signals, nonempty_batch_rate

from tei_operator.emulator.batching import Profile

from .simulator import FleetView
from .traces import Trace

RATE_WINDOW = 60.0


def fleet_metrics(view: FleetView, window: float = RATE_WINDOW) -> dict[str, float] | None:
    """The fleet totals the policies below read from Prometheus (None: no series, e.g. during an outage):
    queue (sum of te_queue_size now), queue_avg (sum of avg_over_time), and rate()s over `window`."""
    prom = view.prometheus
    queue = prom.last("te_queue_size")
    if queue is None:
        return None
    out = {"queue": queue, "queue_avg": prom.avg_over_time("te_queue_size", window) or 0.0}
    tokens = prom.rate("te_batch_next_tokens_sum", window)
    if tokens is not None:
        count = prom.rate("te_batch_next_tokens_count", window) or 0.0
        zero = prom.rate("te_batch_next_tokens_bucket", window, {"le": "1.0"}) or 0.0
        out.update(tokens=tokens, nonempty=nonempty_batch_rate(count, zero),
                   requests=prom.rate("te_request_count", window) or 0.0,
                   overloaded=prom.rate("te_request_failure", window, {"err": "overloaded"}) or 0.0,
                   successes=prom.rate("te_request_success", window) or 0.0)
    return out


@dataclass
class Policy:
    """Base: `tick` returns the replica count to ask for, or None to leave it."""

    name: str
    interval: float = 15.0
    phase: float = 0.0
    actions: list[tuple[float, int, int]] = field(default_factory=list)

    def tick(self, now: float, view: FleetView) -> int | None:
        raise NotImplementedError


class OperatorPolicy(Policy):
    """tei-operator's policy, exactly as the live loop calls it."""

    def __init__(self, spec: AutoscalingSpec, engine: Profile, name: str = "operator", max_pending: int = 0):
        super().__init__(name, interval=15.0, phase=7.0)
        self.spec, self.engine, self.max_pending = spec, engine, max_pending
        # starts with the trace, like an operator (re)started then: it watches a full window before scaling down
        self.state = PolicyState()
        self.decisions: list = []

    def tick(self, now: float, view: FleetView) -> int | None:
        m = fleet_metrics(view)
        grace = self.spec.startup_grace_seconds
        live = [p for p in view.pods() if p.phase != "Draining"]
        starting = sum(1 for p in live if p.phase == "Loading" and now - p.created_at < grace)
        kw = {}
        if m is None:
            kw["error"] = "Prometheus returned no series for te_queue_size"
        else:
            kw = {"queue_size_total": m["queue_avg"], "batch_tokens_rate_sum": m.get("tokens"),
                  "batch_rate_count": m.get("nonempty"), "overloaded_rate": m.get("overloaded"),
                  "request_rate": m.get("requests"), "success_rate": m.get("successes")}
        s = Signals(observed_at=now, current_replicas=view.desired,
                    ready_replicas=sum(1 for p in live if p.phase == "Ready"), starting_replicas=starting,
                    pending_replicas=sum(1 for p in live if p.phase == "Pending"),
                    schedulable_capacity=view.quota, **kw)
        d, self.state = decide(s, self.state, self.spec, self.engine.max_batch_tokens, now, self.max_pending)
        self.decisions.append((now, d))
        return d.desired_replicas


class HpaPolicy(Policy):
    """Kubernetes HPA (autoscaling/v2) on an External metric with an AverageValue target, default behaviour.

    desired = ceil(metric / target) unless |metric / (target * currentReplicas) - 1| <= 0.1; currentReplicas is
    spec.replicas (unready pods are not discounted for External metrics). Scale-up: no window, at most
    max(4 pods, 100%) per 15 s; scale-down: 300 s window, at most 100% per 15 s. No metric: no scaling.
    """

    def __init__(self, target: float, min_replicas: int, max_replicas: int, name: str = "hpa"):
        super().__init__(name, interval=15.0, phase=3.0)
        self.target, self.lo, self.hi = target, min_replicas, max_replicas
        self.recs: list[tuple[float, int]] = []
        self.events: list[tuple[float, int]] = []  # (time, change)

    def metric(self, now: float, view: FleetView) -> float | None:
        m = fleet_metrics(view)
        return None if m is None else m["queue"]

    def tick(self, now: float, view: FleetView) -> int | None:
        value = self.metric(now, view)
        cur = view.desired
        if value is None or cur == 0:
            return None
        usage = value / (self.target * cur)
        rec = cur if abs(usage - 1.0) <= 0.1 else math.ceil(value / self.target - 1e-9)
        self.recs = [(t, r) for t, r in self.recs if t > now - 300] + [(now, rec)]
        up, down = rec, max(r for _, r in self.recs)  # scale-up window 0 s, scale-down window 300 s
        stab = min(max(cur, up), down)
        self.events = [(t, d) for t, d in self.events if t > now - 15 + 1e-9]
        if stab > cur:  # at most max(4 pods, 100%) added per 15 s; scale-down allows 100% per 15 s (no bound)
            base = cur - sum(d for t, d in self.events if d > 0)
            stab = min(stab, max(base + 4, base * 2))
        stab = max(self.lo, min(self.hi, stab))
        if stab != cur:
            self.events.append((now, stab - cur))
        return stab


class KedaPolicy(HpaPolicy):
    """KEDA's Prometheus scaler feeding the HPA above: the value is polled every 30 s and an empty result is 0."""

    def __init__(self, target: float, min_replicas: int, max_replicas: int, name: str = "keda"):
        super().__init__(target, min_replicas, max_replicas, name)
        self._cached: tuple[float, float] | None = None

    def metric(self, now: float, view: FleetView) -> float | None:
        if self._cached is None or now - self._cached[0] >= 30.0:
            m = fleet_metrics(view)
            self._cached = (now, 0.0 if m is None else m["queue"])
        return self._cached[1]


class StaticPolicy(Policy):
    """A fixed replica count (what a team runs without an autoscaler)."""

    def __init__(self, replicas: int, name: str):
        super().__init__(name, interval=1e9)
        self.replicas = replicas

    def tick(self, now: float, view: FleetView) -> int | None:
        return self.replicas


class OraclePolicy(Policy):
    """Knows the trace's rate ahead: asks, at each tick, for what the highest rate of the next `horizon` seconds
    needs at `utilization` of a replica's peak throughput. The horizon covers the longest model load, so capacity
    is ready when load arrives. It does not see the random arrivals, only the rate."""

    def __init__(self, trace: Trace, engine: Profile, mean_tokens: float, lo: int, hi: int,
                 utilization: float = 0.85, name: str = "oracle"):
        super().__init__(name, interval=15.0)
        self.trace, self.engine, self.mean_tokens = trace, engine, mean_tokens
        self.lo, self.hi, self.u = lo, hi, utilization
        self.horizon = engine.load_seconds.cold_max + 2 * self.interval

    def need(self, rate: float) -> int:
        return math.ceil(rate * self.mean_tokens / (self.engine.peak_tokens_per_second(200) * self.u))

    def tick(self, now: float, view: FleetView) -> int | None:
        tr = self.trace
        inside = (tr.times > now) & (tr.times < now + self.horizon)
        peak = max(float(tr.rate_at(now)), float(tr.rates[inside].max()) if inside.any() else 0.0)
        return max(self.lo, min(self.hi, self.need(peak)))
