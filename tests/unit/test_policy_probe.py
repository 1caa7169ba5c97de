"""The latency capacity probes upward after a whole SLO window on time (policy.LATENCY_PROBE_STEP).

Before the probe, the capacity was only ever the busiest load seen on time: a fleet sized by it never saw a busier
one, so a pool that started or was scaled up over-provisioned stayed there (issue #9: more GPU-hours than a static
fleet at peak on the benchmark's noisy, periodic, step and outage traces)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from tei_operator.autoscaling.policy import (LATENCY_PROBE_AIM, LATENCY_PROBE_MAX_STEP, LATENCY_PROBE_STEP,
                                             LATENCY_SLO_SECONDS, LATENCY_TAIL_ELASTICITY, _probe_target, decide)

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
    # A whole SLO window with nobody late: the capacity rises by the largest step (the old policy kept 3,000 for
    # good; a 10% step took an hour to bring a fleet 40% too large down).
    d, st = run(st, sp, 75.0, LATENCY_SLO_SECONDS, late=0.0, current=10)
    first = 3_000 * (1 + LATENCY_PROBE_MAX_STEP)
    assert st.latency_capacity == pytest.approx(first)
    assert st.latency_probed_at is not None
    # The next window on time at 3,000 per replica, under 0.8x the capacity now: no second probe (the replicas
    # run well below it, a probe would say nothing); the fleet follows the capacity down: ceil(10 x 3,000 / 3,900)
    # = 8 ...
    d, st = run(st, sp, 75.0 + LATENCY_SLO_SECONDS + 15, LATENCY_SLO_SECONDS, late=0.0, current=10)
    assert st.latency_capacity == pytest.approx(first)
    # ... once the scale-down window (300 s) has passed since the recommendation of 10.
    # (The signals keep saying 10 replicas, so each tick past the window asks again, one step per period.)
    seen = []
    t = 75.0 + 2 * LATENCY_SLO_SECONDS + 30
    while t <= 75.0 + 3 * LATENCY_SLO_SECONDS:
        d, st = decide(late_signals(t, late=0.0, current=10), st, sp, MBT, now=t)
        seen.append(d.desired_replicas)
        t += 15.0
    assert min(seen) < 10 and all(n >= math.ceil(10 * 3_000 / first) == 8 for n in seen)


@pytest.mark.parametrize("late, expected", [
    # 0.3% late at 3,000 per replica: 0.7% is read near 3,000 x (0.7 / 0.3) ** (1 / 6) = 3,456.
    (0.003, 3_000 * (LATENCY_PROBE_AIM / 0.003) ** (1 / LATENCY_TAIL_ELASTICITY)),
    # 0.45% late: that load is 3,229, less than the smallest step: the smallest step.
    (0.0045, 3_000 * (1 + LATENCY_PROBE_STEP)),
    # 0.01% late: 3,000 x 70 ** (1 / 6) = 6,090, more than the largest step: the largest step.
    (0.0001, 3_000 * (1 + LATENCY_PROBE_MAX_STEP)),
])
def test_the_probe_goes_as_far_as_the_window_was_from_late(late, expected):
    sp = spec(latencyTargetMs=100, growthHeadroom=False, periodicHold=False)
    _, st = run(watched(), sp, 0.0, LATENCY_SLO_SECONDS + 15, late=late, current=10)
    assert 3_000 * (1 + LATENCY_PROBE_STEP) - 1 <= expected <= 3_000 * (1 + LATENCY_PROBE_MAX_STEP) + 1
    assert st.latency_probed_at is not None
    assert st.latency_capacity == pytest.approx(expected)


def test_the_probe_reads_the_load_the_window_was_on_time_at_not_its_last_ticks():
    # 17 ticks on time at 2,000 tokens/s per replica, then a load step: 3 ticks at 3,400 (the capacity learned
    # 3,400, the busiest load seen on time). The window was 0.1% late at 2,000 for most of it: 0.7% is read near
    # 2,000 x 7 ** (1 / 6) = 2,766, under the smallest step, so the capacity rises by the smallest step only; read
    # from the step's ticks it would have gone 30% above 3,400 (a test step seed at 95% of queries on time).
    history = tuple((15.0 * i, 0.001, 100.0, 2_000.0) for i in range(17)) + tuple(
        (15.0 * i, 0.001, 100.0, 3_400.0) for i in range(17, 20))
    assert _probe_target(3_400.0, 0.001, history) == pytest.approx(3_400 * (1 + LATENCY_PROBE_STEP))
    # 12 ticks at 2,000 and 8 at 3,000, 0.3% late: read from its busier ticks (the late requests came from them),
    # 3,000 x (0.7 / 0.3) ** (1 / 6) = 3,456; from its median, 2,000, it would take the smallest step only.
    history = tuple((15.0 * i, 0.003, 100.0, 2_000.0 if i < 12 else 3_000.0) for i in range(20))
    assert _probe_target(3_000.0, 0.003, history) == pytest.approx(3_456, abs=1)


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
