"""spec.autoscaling.headroom: spare capacity for a rise in demand faster than a model load (issue #9).

A load step (the benchmark's train step: 1 Q -> 4 Q) is served by the replicas Ready when it arrives until new ones
load (60-180 s); before headroom the only way to hold spare capacity was a latency target tighter than the SLO,
which over-provisioned every other load. Also: the growth projection no longer reads a step's rate-window ramp as
growth once the ramp has ended."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tei_operator.api.autoscaling import AUTOSCALING_CEL_RULES
from tei_operator.autoscaling.policy import _growth_headroom, decide, decide_fast

from .test_policy import MBT, late_signals, spec, watched


def test_headroom_on_a_fleet_on_time_is_built_one_replica_per_scale_down_window():
    # 4 replicas on time at 3,000 tokens/s each: learned capacity 3,000, the fleet holds.
    d, st = decide(late_signals(0, 0.0), watched(), spec(latencyTargetMs=100), MBT, now=0)
    assert d.desired_replicas == 4 and st.latency_capacity == pytest.approx(3_000)
    # The same with headroom 0.5: the target per replica is 3,000 / 1.5 = 2,000, i.e. ceil(4 x 3,000 / 2,000) = 6;
    # the demand fits 4 and nobody is late, so only the headroom asks: one replica now...
    sp = spec(latencyTargetMs=100, headroom=0.5)
    d, st = decide(late_signals(0, 0.0), watched(), sp, MBT, now=0)
    assert st.latency_capacity == pytest.approx(3_000)  # headroom does not change what was learned
    assert d.action == "ScaleUp" and d.desired_replicas == 5
    assert "/ 1 + headroom 0.50" in d.reason and "headroom 0.50 only: one replica added" in d.reason
    # ...then none until a scale-down window (300 s) has passed since it...
    d, st = decide(late_signals(15, 0.0, current=5, per_ready=2_400), st, sp, MBT, now=15)
    assert d.desired_replicas == 5 and "a replica was added 15s ago" in d.reason
    # ...and then the next one only, though the headroom asks for ceil(5 x 2,700 x 1.5 / 3,300) = 7 (the window on
    # time, 0.23% late over its two ticks at 2,400 and 2,700, also probed the capacity by the smallest step,
    # 3,000 -> 3,300: 2,700 x (0.7 / 0.225) ** (1 / 6) = 3,262 is less).
    d, st = decide(late_signals(300, 0.0045, current=5, per_ready=2_700), st, sp, MBT, now=300)
    assert st.latency_capacity == pytest.approx(3_300)
    assert d.desired_replicas == 6, d.reason


def test_late_requests_size_for_the_headroom_at_once():
    # 4 replicas, 30% of the requests late at 4,000 tokens/s each (capacity learned 3,000 before; 15% late over the
    # SLO window's two ticks): the capacity moves down to 3,000 x 0.7 = 2,100 and the fleet is sized by it in the
    # same tick, 1 + headroom larger with headroom: ceil(4 x 4,000 / 2,100) = 8 without, ceil(4 x 4,000 x 1.5 /
    # 2,100) = 12 with 0.5 (at once: requests are late, nothing creeps).
    up = {"maxPodsStep": 20}
    sp0, sp1 = spec(latencyTargetMs=100, scaleUp=up), spec(latencyTargetMs=100, headroom=0.5, scaleUp=up)
    _, st = decide(late_signals(0, 0.0), watched(), sp0, MBT, now=0)
    d0, _ = decide(late_signals(15, 0.3, per_ready=4_000), st, sp0, MBT, now=15)
    d1, _ = decide(late_signals(15, 0.3, per_ready=4_000), st, sp1, MBT, now=15)
    assert (d0.desired_replicas, d1.desired_replicas) == (8, 12)


def test_headroom_keeps_a_scale_down_above_the_demand():
    # 10 replicas at 1,200 tokens/s each (capacity learned 3,000): without headroom the demand needs 4; with 0.5, 6.
    st = watched()
    _, st = decide(late_signals(0, 0.0), st, spec(latencyTargetMs=100), MBT, now=0)
    plain, _ = decide(late_signals(15, 0.0, current=10, per_ready=1_200), st, spec(latencyTargetMs=100), MBT, now=15)
    spare, _ = decide(late_signals(15, 0.0, current=10, per_ready=1_200), st,
                      spec(latencyTargetMs=100, headroom=0.5), MBT, now=15)
    # (the per-period step limit takes both to 8 this minute; the notes say where each was going)
    assert "scale-down to 4 limited" in plain.reason
    assert "scale-down to 6 limited" in spare.reason  # ceil(10 x 1,200 x 1.5 / 3,000)


def test_fast_path_sizes_a_step_with_headroom():
    # A step makes the short window late at 6,000 tokens/s on 4 replicas (capacity 3,000): 8 without headroom,
    # ceil(4 x 6,000 x 1.5 / 3,000) = 12 with 0.5.
    _, st = decide(late_signals(0, 0.0), watched(), spec(latencyTargetMs=100), MBT, now=0)
    step = late_signals(2, 0.3, per_ready=6_000)
    d0, _ = decide_fast(step, st, spec(latencyTargetMs=100), MBT, now=2)
    d1, _ = decide_fast(step, st, spec(latencyTargetMs=100, headroom=0.5), MBT, now=2)
    assert (d0.desired_replicas, d1.desired_replicas) == (8, 12) and d1.fast


def test_periodic_load_gets_no_headroom_the_hold_covers_its_peak():
    from dataclasses import replace

    _, st = decide(late_signals(0, 0.0), watched(), spec(latencyTargetMs=100), MBT, now=0)
    st = replace(st, period_seconds=240.0)
    step = late_signals(2, 0.3, per_ready=6_000)
    d, _ = decide_fast(step, st, spec(latencyTargetMs=100, headroom=0.5), MBT, now=2)
    assert d.desired_replicas == 8


@pytest.mark.parametrize("bad", [-0.1, 4.5, "lots"])
def test_headroom_out_of_range_is_refused_naming_the_field(bad):
    with pytest.raises(ValidationError, match="headroom"):
        spec(headroom=bad)


def test_headroom_with_throughput_objective_is_refused_and_has_a_cel_rule():
    with pytest.raises(ValidationError, match="headroom: must be 0 when objective is Throughput"):
        spec(objective="Throughput", headroom=0.5)
    assert spec(objective="Throughput").headroom == 0.0
    rule = next(r for r in AUTOSCALING_CEL_RULES if r["fieldPath"] == ".headroom")
    assert "Throughput" in rule["rule"] and "self.headroom == 0.0" in rule["rule"]


def test_growth_projection_ignores_a_step_whose_ramp_has_ended():
    # The rate window (60 s) shows a step at t=-90 as a ramp from -90 to -30 and then a plateau: the line through
    # the last 120 s fits (r2 > 0.8) but nothing grows any more. A ramp still under way keeps its projection.
    def demand(t: float) -> float:
        return 10_000.0 + 30_000.0 * min(1.0, max(0.0, (t + 90.0) / 60.0))

    ended = tuple((float(t), demand(t)) for t in range(-120, 0, 15))
    assert _growth_headroom(ended, 0.0, demand(0.0), 120.0, 0.1) is None
    rising = tuple((float(t), 10_000.0 + 200.0 * (t + 120)) for t in range(-120, 0, 15))
    assert _growth_headroom(rising, 0.0, 10_000.0 + 200.0 * 120, 120.0, 0.1) == pytest.approx(200.0 * 120)


def test_the_api_servers_cel_rule_refuses_headroom_on_a_throughput_pool():
    from .test_crds import admit

    base = {"model": {"id": "BAAI/bge-m3"}}

    def auto(**kw):
        return dict(base, autoscaling={"enabled": True, "maxReplicas": 4, **kw})

    assert admit("EmbeddingService", auto(headroom=0.5)) == []
    assert admit("EmbeddingService", auto(objective="Throughput")) == []  # the default 0 passes
    assert admit("EmbeddingService", auto(objective="Throughput", headroom=0.5)) == [
        ".spec.autoscaling.headroom: headroom must be 0 when objective is Throughput"]


def test_fast_path_threshold_is_read_against_the_capacity_not_the_headroom():
    # Late in the short window at 4,200 tokens/s per replica, capacity 3,000: 1.4x of it, under the 1.5x threshold,
    # though 2.1x of 3,000 / 1.5. A wandering load, not a step: the fast path leaves it to the main tick.
    _, st = decide(late_signals(0, 0.0), watched(), spec(latencyTargetMs=100), MBT, now=0)
    d, _ = decide_fast(late_signals(2, 0.3, per_ready=4_200), st, spec(latencyTargetMs=100, headroom=0.5), MBT,
                       now=2)
    assert d.action == "Hold"
    # 1.6x of the capacity is a step: it acts, sized for the headroom: ceil(4 x 4,800 x 1.5 / 3,000) = 10.
    d, _ = decide_fast(late_signals(2, 0.3, per_ready=4_800), st, spec(latencyTargetMs=100, headroom=0.5), MBT,
                       now=2)
    assert d.action == "ScaleUp" and d.desired_replicas == 10
