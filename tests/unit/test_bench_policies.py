"""The baselines of the autoscaling benchmark (bench/autoscaling/policies.py) against a tiny fake FleetView, and the
cost-vs-SLO curve arithmetic (bench/autoscaling/sweep.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pytest

from bench.autoscaling.policies import HpaBehavior, HpaQueue, HpaRate, Keda, Kpa, Oracle, Static
from bench.autoscaling.sweep import Point, frontier, gpu_hours_at, median_points, pick_knob


@dataclass
class Pod:
    id: int
    phase: str = "Ready"
    created_at: float = 0.0
    ready_at: float | None = 0.0


class FakeProm:
    """Answers the two queries the baselines make; None = no series (a metrics outage)."""

    def __init__(self):
        self.queue: float | None = 0.0
        self.rps: float | None = 0.0
        self.calls: list[tuple] = []

    def avg_over_time(self, metric, window):
        self.calls.append(("avg", metric, window))
        return self.queue

    def rate(self, metric, window):
        self.calls.append(("rate", metric, window))
        return self.rps


@dataclass
class FakeView:
    now: float = 0.0
    desired: int = 2
    quota: int | None = None
    prometheus: FakeProm = field(default_factory=FakeProm)
    inflight_total: float = 0.0
    """Requests in flight over the whole fleet, spread evenly over the Ready pods."""

    def pods(self):
        return [Pod(i) for i in range(self.desired)]

    def inflight(self, pod_id):
        return self.inflight_total / self.desired


def drive(policy, view, until, start=0.0, step=None, on_tick=None):
    """Call the policy at its ticks and apply its answer, as the benchmark's driver does."""
    step = step or policy.interval
    t = start + policy.phase
    out = []
    while t < until:
        view.now = t
        if on_tick:
            on_tick(t, view)
        want = policy.tick(t, view)
        if want is not None and want != view.desired:
            out.append((t, view.desired, want))
            view.desired = want
        t += step
    return out


def test_hpa_queue_scales_to_metric_over_target_within_its_rate_limits():
    v = FakeView(desired=2)
    hpa = HpaQueue("hpa-queue", target=4, lo=1, hi=30, behavior=HpaBehavior(up_pods=4, up_percent=100))
    v.prometheus.queue = 100.0  # needs 25 pods
    acts = drive(hpa, v, 60)
    # +max(4 pods, 100%) per 15 s: 2 -> 6 -> 12 -> 24, then 25 is within the 10% tolerance of 24
    assert [a[2] for a in acts] == [6, 12, 24]
    assert v.prometheus.calls[0] == ("avg", "te_queue_size", 60.0)


def test_hpa_tolerance_holds_and_scale_down_waits_for_its_window():
    v = FakeView(desired=10)
    hpa = HpaQueue("hpa-queue", target=4, lo=1, hi=30)
    v.prometheus.queue = 42.0  # 10.5 pods: within 10% of 10
    assert drive(hpa, v, 60) == []
    v.prometheus.queue = 8.0  # 2 pods
    acts = drive(hpa, v, 700, start=60)
    assert acts and acts[0][2] == 2
    assert acts[0][0] >= 60 + 300  # the highest recommendation of the last 300 s held it


def test_hpa_holds_when_the_metric_is_missing():
    v = FakeView(desired=5)
    v.prometheus.queue = None
    assert drive(HpaQueue("hpa-queue", 4, 1, 10), v, 900) == []


def test_hpa_rate_reads_the_request_rate():
    v = FakeView(desired=1)
    v.prometheus.rps = 300.0
    acts = drive(HpaRate("hpa-rate", 100, 1, 10), v, 30)
    assert acts[-1][2] == 3 and ("rate", "te_request_count", 60.0) in v.prometheus.calls


@pytest.mark.parametrize("ignore, downs", [(True, True), (False, False)])
def test_keda_ignore_null_values_decides_what_an_outage_does(ignore, downs):
    v = FakeView(desired=6)
    v.prometheus.queue = 24.0  # exactly 6 pods at target 4
    keda = Keda("keda", 4, 1, 10, ignore_null_values=ignore)
    assert drive(keda, v, 300) == []
    v.prometheus.queue = None
    acts = drive(keda, v, 1200, start=300)
    assert bool(acts) == downs
    if downs:
        assert acts[-1][2] == 1 and all(b < a for _, a, b in acts)
    cfg = keda.config()
    assert "useCachedMetrics: false" in cfg and f'ignoreNullValues: "{str(ignore).lower()}"' in cfg


def test_kpa_panics_on_a_burst_and_does_not_scale_down_while_panicking():
    v = FakeView(desired=2)
    kpa = Kpa("kpa", target=10, lo=1, hi=50)
    v.inflight_total = 20.0  # exactly at target: stable at 2
    assert drive(kpa, v, 70) == []
    v.inflight_total = 120.0  # 6x the target per pod: the panic window sees it within seconds
    acts = drive(kpa, v, 80, start=70)
    assert any(b >= 4 and t - 70 <= 4 for t, _, b in acts)
    peak = v.desired
    assert peak == 12
    v.inflight_total = 1.0  # the burst is gone; panic holds the count for a stable window
    acts = drive(kpa, v, 80 + 50, start=80)
    assert v.desired == peak and not any(b < a for _, a, b in acts)
    drive(kpa, v, 80 + 200, start=80 + 50)
    assert v.desired < peak


def test_kpa_stable_mode_follows_the_60_second_average():
    v = FakeView(desired=4)
    kpa = Kpa("kpa", target=10, lo=1, hi=50)
    v.inflight_total = 40.0
    drive(kpa, v, 100)
    assert v.desired == 4
    v.inflight_total = 60.0  # 60 in flight -> 6 pods (below the panic threshold of 8)
    acts = drive(kpa, v, 200, start=100)
    six = [t for t, _, b in acts if b == 6]
    assert v.desired == 6 and six and six[0] > 100 + 10  # the 60 s average needs time to cross 50


def test_oracle_scales_ahead_of_the_load():
    demand = lambda t: np.where(np.asarray(t) >= 600, 8.0, 2.0)  # noqa: E731
    v = FakeView(desired=3)
    o = Oracle("oracle", demand, utilization=0.8, lo=1, hi=20, horizon=180)
    acts = drive(o, v, 700)
    up = [a for a in acts if a[2] == 10]
    assert up and 420 <= up[0][0] < 600  # ceil(8 / 0.8) = 10, asked within the horizon before the step


def test_static_and_configs_print_their_knobs():
    assert Static("static", 7).tick(0, FakeView()) == 7
    assert "averageValue: 4" in HpaQueue("hpa-queue", 4, 1, 8).config()
    assert "stabilizationWindowSeconds: 300" in HpaRate("hpa-rate", 150, 1, 8).config()
    kc = Kpa("kpa", 5, 1, 8).config()
    assert 'panic-threshold-percentage: "200"' in kc and 'window: "60s"' in kc and \
        'panic-window-percentage: "10"' in kc


# ---- sweep arithmetic ---------------------------------------------------------------------------------------------

def test_gpu_hours_at_goal_interpolates_on_the_frontier():
    pts = [Point(1, 2.0, 0.90), Point(2, 3.0, 0.98), Point(3, 4.0, 1.0), Point(9, 5.0, 0.97)]
    assert [p.knob for p in frontier(pts)] == [1, 2, 3]  # the dominated point (5.0 h, 97%) is off the frontier
    a = gpu_hours_at(pts, 0.99)
    assert a.gpu_hours == pytest.approx(3.5) and a.bound == "=" and a.text() == "3.50"
    low = gpu_hours_at(pts, 0.85)
    assert low.gpu_hours == 2.0 and low.bound == "<=" and low.text().startswith("<=")
    never = gpu_hours_at(pts[:2], 0.99)
    assert never.gpu_hours is None and never.best.knob == 2 and "never" in never.text()


def test_median_points_and_pick_knob():
    rows = [(1, s, g, a) for s, g, a in ((1, 1.0, 0.9), (2, 3.0, 0.95), (3, 2.0, 0.99))]
    (p,) = median_points(rows)
    assert (p.gpu_hours, p.attainment) == (2.0, 0.95)
    per = {"a": [Point(1, 1, 0.98), Point(2, 2, 0.995), Point(3, 3, 1.0)],
           "b": [Point(1, 1, 0.999), Point(2, 2, 0.99), Point(3, 3, 0.999)]}
    assert pick_knob(per, 0.99) == (2, "cheapest value reaching 99% on every train trace")
    k, why = pick_knob({"a": [Point(1, 1, 0.5), Point(2, 2, 0.7)]}, 0.99)
    assert k == 2 and "no value reaches" in why
    # A train trace no value reaches (a spike) does not decide: the cheapest value reaching it on the others wins,
    # not the one that buys a point on the spike with twice the GPU-hours elsewhere (the old rule picked 1 here).
    per = {"spike": [Point(1, 4, 0.96), Point(2, 2, 0.83)], "step": [Point(1, 5, 0.999), Point(2, 3, 0.992)]}
    k, why = pick_knob(per, 0.99)
    assert k == 2 and "none does on spike" in why
    # Reachable on each trace, but by different values only: the best worst-trace attainment.
    per = {"a": [Point(1, 1, 0.995), Point(2, 2, 0.95)], "b": [Point(1, 1, 0.95), Point(2, 2, 0.996)]}
    assert "no value reaches" in pick_knob(per, 0.99)[1]
    assert math.isnan(Point(1, 1, math.nan).attainment)
