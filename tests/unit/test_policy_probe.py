"""The latency capacity probes upward after a whole SLO window on time (policy.LATENCY_PROBE_STEP).

Before the probe, the capacity was only ever the busiest load seen on time: a fleet sized by it never saw a busier
one, so a pool that started or was scaled up over-provisioned stayed there (issue #9: more GPU-hours than a static
fleet at peak on the benchmark's noisy, periodic, step and outage traces)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tei_operator.autoscaling.policy import LATENCY_PROBE_STEP, LATENCY_SLO_SECONDS, decide

from .test_policy import MBT, late_signals, spec, watched


def run(st, sp, t0: float, seconds: float, **kw):
    """Main ticks every 15 s for `seconds` on the same signals; the last decision and the state."""
    d = None
    t = t0
    while t <= t0 + seconds + 1e-9:
        d, st = decide(late_signals(t, **kw), st, sp, MBT, now=t)
        t += 15.0
    return d, st


def test_a_window_on_time_probes_the_capacity_up_and_the_fleet_down():
    sp = spec(latencyTargetMs=100, growthHeadroom=False, periodicHold=False)
    st = watched()
    # 10 replicas at 3,000 tokens/s each, on time: learned 3,000, held (the fleet is sized by it).
    d, st = run(st, sp, 0.0, 60.0, late=0.0, current=10)
    assert st.latency_capacity == pytest.approx(3_000) and d.desired_replicas == 10
    # A whole SLO window on time: the capacity rises by one step (the old policy kept 3,000 for good).
    d, st = run(st, sp, 75.0, LATENCY_SLO_SECONDS, late=0.0, current=10)
    assert st.latency_capacity == pytest.approx(3_000 * (1 + LATENCY_PROBE_STEP))
    assert st.latency_probed_at is not None and d.desired_replicas == 10  # 0.91x: inside the tolerance band
    # The next window on time: another step, and the fleet follows it down: ceil(10 x 3,000 / 3,630) = 9.
    d, st = run(st, sp, 75.0 + LATENCY_SLO_SECONDS + 15, LATENCY_SLO_SECONDS, late=0.0, current=10)
    assert st.latency_capacity == pytest.approx(3_000 * (1 + LATENCY_PROBE_STEP) ** 2)
    # ... once the scale-down window (300 s) has passed since the recommendation of 10.
    # (The signals keep saying 10 replicas, so only the first tick past the window scales down.)
    seen = []
    t = 75.0 + 2 * LATENCY_SLO_SECONDS + 30
    while t <= 75.0 + 3 * LATENCY_SLO_SECONDS:
        d, st = decide(late_signals(t, late=0.0, current=10), st, sp, MBT, now=t)
        seen.append(d.desired_replicas)
        t += 15.0
    assert min(seen) == 9


def test_no_probe_while_requests_are_late_nor_above_the_load_they_were_late_at():
    sp = spec(latencyTargetMs=100, growthHeadroom=False, periodicHold=False)
    # 0.6% late for the whole window (over LATENCY_MISS_LOW): no probe.
    _, st = run(watched(), sp, 0.0, 2 * LATENCY_SLO_SECONDS, late=0.006)
    assert st.latency_capacity == pytest.approx(3_000) and st.latency_probed_at is None
    # Requests were late at 3,100 tokens/s per replica: probes stop there.
    st = replace(watched(), latency_capacity=3_000.0, latency_move=(-10_000.0, 0.02, 100.0, 3_100.0),
                 latency_adjusted_at=-10_000.0)
    _, st = run(st, sp, 0.0, 3 * LATENCY_SLO_SECONDS, late=0.0)
    assert st.latency_capacity == pytest.approx(3_100)
