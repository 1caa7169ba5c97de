"""The pure scaling policy, one guard at a time, with numbers (no cluster)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tei_operator.api.autoscaling import AutoscalingSpec
from tei_operator.autoscaling.policy import PolicyState, decide
from tei_operator.autoscaling.signals import Signals, mean_batch_tokens, nonempty_batch_rate

MBT = 65536


def spec(**kw) -> AutoscalingSpec:
    base = {"enabled": True, "minReplicas": 1, "maxReplicas": 20, "targetQueueSize": 16}
    base.update(kw)
    return AutoscalingSpec.model_validate(base)


def sig(current: int, ready: int | None = None, queue: float | None = 0.0, t: float = 0.0, **kw) -> Signals:
    return Signals(observed_at=t, current_replicas=current, ready_replicas=current if ready is None else ready,
                   queue_size_total=queue, **kw)


def watched(seconds: float = 10_000) -> PolicyState:
    """A state that has watched long enough for any scale-down window (started `seconds` before t=0)."""
    return PolicyState(first_tick_at=-seconds)


def test_queue_above_target_scales_up_to_demand_and_reason_has_numbers():
    d, st = decide(sig(2, queue=74), PolicyState(), spec(), MBT, now=0)
    assert (d.action, d.desired_replicas) == ("ScaleUp", 5)  # ceil(74 / 16)
    assert "queue 37/replica > target 16" in d.reason
    assert "2.31x" in d.reason
    assert st.scale_events == ((0, 2, 5),)


def test_step_up_bounded_by_pods_and_percent():
    sp = spec(maxReplicas=500, scaleUp={"maxPodsStep": 4, "maxPercentStep": 100})
    # demand ceil(2 * 100) = 200; max(+4 pods, +100% of 2) = +4 -> 6
    d, _ = decide(sig(2, queue=3200), PolicyState(), sp, MBT, now=0)
    assert d.desired_replicas == 6 and d.limited_by == "ScaleUpLimit"
    # 10 replicas: +100% (10) beats +4 -> 20
    d, _ = decide(sig(10, queue=16000), PolicyState(), sp, MBT, now=0)
    assert d.desired_replicas == 20
    # the default step: +8 pods from 2 -> 10
    d, _ = decide(sig(2, queue=3200), PolicyState(), spec(maxReplicas=500), MBT, now=0)
    assert d.desired_replicas == 10


def test_step_up_bounded_per_period_across_ticks():
    sp = spec(maxReplicas=500, scaleUp={"maxPodsStep": 4, "maxPercentStep": 10, "periodSeconds": 60})
    d, st = decide(sig(2, queue=3200), PolicyState(), sp, MBT, now=0)
    assert d.desired_replicas == 6
    # 15 s later, same period: the base is still 2, so no more than 6
    d, st = decide(sig(6, ready=2, starting_replicas=0, queue=3200, t=15), st, sp, MBT, now=15)
    assert (d.action, d.desired_replicas) == ("Hold", 6)
    # after the period, +4 again from 6
    d, _ = decide(sig(6, ready=2, queue=3200, t=61), st, sp, MBT, now=61)
    assert d.desired_replicas == 10


def test_tolerance_band_holds():
    sp = spec(tolerance=0.1)
    d, _ = decide(sig(4, queue=4 * 17.5), watched(), sp, MBT, now=0)  # 1.09x
    assert (d.action, d.desired_replicas) == ("Hold", 4)
    assert "within tolerance" in d.reason
    d, _ = decide(sig(4, queue=4 * 18), watched(), sp, MBT, now=0)  # 1.125x -> ceil(4.5) = 5
    assert (d.action, d.desired_replicas) == ("ScaleUp", 5)


def test_no_scale_down_inside_stabilization_window():
    sp = spec(scaleDown={"stabilizationWindowSeconds": 300, "maxPodsStep": 10, "maxPercentStep": 100})
    st = watched()
    # a high recommendation (8 of 8) at t=0, then idle
    d, st = decide(sig(8, queue=8 * 16), st, sp, MBT, now=0)
    assert d.action == "Hold"
    for t in (15, 150, 299):
        d, st = decide(sig(8, queue=0, t=t), st, sp, MBT, now=t)
        assert (d.action, d.desired_replicas) == ("Hold", 8), t
    d, st = decide(sig(8, queue=0, t=301), st, sp, MBT, now=301)
    assert (d.action, d.desired_replicas) == ("ScaleDown", 1)


def test_no_scale_down_before_window_watched_after_restart():
    sp = spec()
    d, st = decide(sig(8, queue=0, t=1000), PolicyState(), sp, MBT, now=1000)
    assert (d.action, d.desired_replicas) == ("Hold", 8)
    assert "watched 0s of the 300s" in d.reason


def test_scale_down_step_bounded():
    sp = spec(scaleDown={"stabilizationWindowSeconds": 0, "maxPodsStep": 1, "maxPercentStep": 25,
                         "periodSeconds": 60})
    d, st = decide(sig(12, queue=0), watched(), sp, MBT, now=0)
    assert d.desired_replicas == 9  # max(1, floor(12 * 25%)) = 3 removed
    d, st = decide(sig(9, queue=0, t=30), st, sp, MBT, now=30)
    assert (d.action, d.desired_replicas) == ("Hold", 9)  # same period: 3 already removed
    d, st = decide(sig(9, queue=0, t=61), st, sp, MBT, now=61)
    assert d.desired_replicas == 7


@pytest.mark.parametrize(
    "broken",
    [
        {"error": "Prometheus query failed: connection refused"},
        {"queue": None},
        {"t": -500.0},  # stale: 500 s old
    ],
)
def test_missing_metrics_never_scale_down(broken):
    sp = spec(scaleDown={"stabilizationWindowSeconds": 0})
    kw = {"queue": 0.0, "t": 0.0} | broken
    d, st = decide(sig(6, **kw), watched(), sp, MBT, now=0)
    assert (d.action, d.desired_replicas) == ("Hold", 6)
    assert d.limited_by == "MetricsUnavailable"
    assert st.consecutive_failures == 1


def test_metrics_recovered_does_not_scale_down_at_once():
    # failures record "hold at current" in the window, so recovery does not drop the fleet straight away
    sp = spec(scaleDown={"stabilizationWindowSeconds": 60, "maxPodsStep": 10, "maxPercentStep": 100})
    st = watched()
    d, st = decide(sig(6, error="down", t=0), st, sp, MBT, now=0)
    d, st = decide(sig(6, queue=0, t=30), st, sp, MBT, now=30)
    assert (d.action, d.desired_replicas, st.consecutive_failures) == ("Hold", 6, 0)
    d, st = decide(sig(6, queue=0, t=61), st, sp, MBT, now=61)
    assert d.desired_replicas == 1


def test_fallback_after_failure_threshold():
    sp = spec(failureThreshold=3, fallbackReplicas=5)
    st = watched()
    for t in (0, 15):
        d, st = decide(sig(2, error="no series", t=t), st, sp, MBT, now=t)
        assert d.desired_replicas == 2
    d, st = decide(sig(2, error="no series", t=30), st, sp, MBT, now=30)
    assert (d.action, d.desired_replicas) == ("ScaleUp", 5)
    assert "3 or more failures in a row" in d.reason and "fallbackReplicas 5" in d.reason
    # a fallback below the current count never scales down
    d, _ = decide(sig(8, error="no series", t=45), st, sp, MBT, now=45)
    assert d.desired_replicas == 8


def test_an_outage_reads_the_same_every_tick_once_past_the_failure_threshold():
    """What the status quotes (reason, ScalingLimited's message) stops changing once the count reaches
    failureThreshold: an outage does not rewrite every autoscaled service's status every tick."""
    sp = spec(failureThreshold=3)
    st = watched()
    seen = []
    for t in range(0, 150, 15):  # ten ticks of stale metrics, last read at t = -100
        d, st = decide(sig(4, queue=0.0, t=-100.0), st, sp, MBT, now=t)
        assert (d.action, d.desired_replicas, d.limited_by) == ("Hold", 4, "MetricsUnavailable")
        seen.append((d.reason, d.limited_message))
    assert "failure 1 of 3" in seen[0][0] and "for 1 tick(s)" in seen[0][1]
    assert len(set(seen[:3])) == 3  # 1, 2, then "3 or more"
    assert set(seen[2:]) == {seen[2]}, seen[2:]
    assert "3 or more failures in a row" in seen[2][0] and "for 3 or more ticks" in seen[2][1]
    assert st.consecutive_failures == 10  # the policy still counts; only what is written stops at the threshold


def test_gpu_capacity_clamp():
    d, _ = decide(sig(4, queue=4 * 64, schedulable_capacity=6), PolicyState(), spec(), MBT, now=0)
    assert (d.desired_replicas, d.limited_by) == (6, "GpuCapacity")
    assert "can hold 6" in d.limited_message
    d, _ = decide(sig(4, queue=4 * 64, schedulable_capacity=6), PolicyState(), spec(), MBT, now=0, max_pending=1)
    assert d.desired_replicas == 7
    # no free GPU at all: hold, never scale down because of it
    d, _ = decide(sig(4, queue=4 * 64, schedulable_capacity=3), PolicyState(), spec(), MBT, now=0)
    assert (d.action, d.desired_replicas, d.limited_by) == ("Hold", 4, "GpuCapacity")


def test_starting_pods_prevent_overshoot():
    # 2 ready with queue 2x target: demand 4. 2 more are loading their model -> nothing more to add
    d, _ = decide(sig(4, ready=2, starting_replicas=2, queue=64), PolicyState(), spec(), MBT, now=0)
    assert (d.action, d.desired_replicas) == ("Hold", 4)
    assert "while 2 replicas load their model" in d.reason
    # without them the same signals scale up to 4
    d, _ = decide(sig(2, ready=2, queue=64), PolicyState(), spec(), MBT, now=0)
    assert (d.action, d.desired_replicas) == ("ScaleUp", 4)


def test_overload_forces_up_even_inside_tolerance_and_blocks_scale_down():
    d, _ = decide(sig(4, queue=4 * 16, overloaded_rate=3.0), watched(), spec(), MBT, now=0)
    assert (d.action, d.desired_replicas) == ("ScaleUp", 5)
    assert "3 overloaded (429) requests/s" in d.reason
    # a low queue would scale down, but 429s forbid it
    sp = spec(scaleDown={"stabilizationWindowSeconds": 0})
    d, _ = decide(sig(6, queue=0, overloaded_rate=0.5), watched(), sp, MBT, now=0)
    assert d.desired_replicas == 7
    # with replicas already loading, 429s hold instead of stacking more
    d, _ = decide(sig(6, ready=4, starting_replicas=2, queue=4 * 16, overloaded_rate=1.0), watched(), spec(), MBT, now=0)
    assert (d.action, d.desired_replicas) == ("Hold", 6)


def test_min_and_max_clamps():
    d, _ = decide(sig(4, queue=4 * 160), PolicyState(), spec(maxReplicas=6), MBT, now=0)
    assert (d.desired_replicas, d.limited_by) == (6, "MaxReplicas")
    sp = spec(minReplicas=3, scaleDown={"stabilizationWindowSeconds": 0, "maxPercentStep": 100})
    d, _ = decide(sig(5, queue=0), watched(), sp, MBT, now=0)
    assert (d.desired_replicas, d.limited_by) == (3, "MinReplicas")
    # below min (min raised in the spec): up to min even without metrics
    d, _ = decide(sig(1, error="down"), watched(), spec(minReplicas=2), MBT, now=0)
    assert d.desired_replicas == 2


def test_batch_fill_drives_scale_up():
    # queue at target but batches 95% full of 65536 against target 0.7 -> ratio 1.36 -> ceil(4 * 1.357) = 6
    s = sig(4, queue=4 * 16, batch_tokens_rate_sum=0.95 * MBT * 40, batch_rate_count=40.0)
    d, _ = decide(s, PolicyState(), spec(), MBT, now=0)
    assert d.desired_replicas == 6 and d.batch_fill == pytest.approx(0.95)
    assert "batch fill 0.95 > 0.7" in d.reason


def test_learned_peak_sizes_scale_down_by_demand():
    sp = spec(targetUtilization=0.8, scaleDown={"stabilizationWindowSeconds": 0, "maxPercentStep": 100})
    # saturated (batches 90% full > target 0.7): 60000 tokens/s per replica is learned as the peak
    full = {"batch_tokens_rate_sum": 240_000.0, "batch_rate_count": 240_000.0 / (0.9 * MBT)}
    _, st = decide(sig(4, queue=4 * 20, **full), watched(), sp, MBT, now=0)
    assert st.peak_tokens_per_replica == pytest.approx(60_000)
    # later: empty queue, 8 replicas batch 120000 tokens/s -> 120000 / (60000 * 0.8) = 2.5 -> 3 replicas, not 1
    calm = {"batch_tokens_rate_sum": 120_000.0, "batch_rate_count": 600.0}
    d, _ = decide(sig(8, queue=0, t=15, **calm), st, sp, MBT, now=15)
    assert (d.action, d.desired_replicas) == ("ScaleDown", 3)
    assert "demand 15000 tokens/s/replica < 48000" in d.reason


def test_queue_alone_is_not_saturation():
    # a queue above target with small batches does not teach a peak (bursts queue on idle-ish replicas)
    _, st = decide(sig(4, queue=4 * 20, batch_tokens_rate_sum=40_000.0, batch_rate_count=100.0), watched(),
                   spec(), MBT, now=0)
    assert st.peak_tokens_per_replica is None


def test_demand_counts_arrivals_not_only_served_tokens():
    # backlog: the fleet batches 100000 tokens/s (500 requests/s completed, 200 tokens each) but 1000 requests/s
    # arrive -> demand 200000 tokens/s; with a peak of 50000 at 0.8 -> ceil(200000 / 40000) = 5
    st = PolicyState(first_tick_at=-1000, peak_tokens_per_replica=50_000.0)
    s = sig(2, queue=2 * 16, batch_tokens_rate_sum=100_000.0, batch_rate_count=10.0, request_rate=1000.0,
            success_rate=500.0)
    assert s.demand_tokens_rate() == pytest.approx(200_000)
    d, _ = decide(s, st, spec(targetUtilization=0.8), MBT, now=0)
    assert (d.action, d.desired_replicas) == ("ScaleUp", 5)
    assert d.reason.startswith("Demand load 2.50x")


def test_no_ready_replicas_holds():
    d, st = decide(sig(3, ready=0, starting_replicas=3, queue=None), PolicyState(), spec(), MBT, now=0)
    assert (d.action, d.desired_replicas, st.consecutive_failures) == ("Hold", 3, 0)
    assert "loading their model" in d.reason


def test_pure_same_inputs_same_outputs():
    s, st0 = sig(3, queue=100), watched()
    assert decide(s, st0, spec(), MBT, now=0) == decide(s, st0, spec(), MBT, now=0)
    assert st0 == watched()  # input state untouched


def test_bad_input_errors_name_the_field():
    with pytest.raises(ValueError, match="maxBatchTokens"):
        decide(sig(1), PolicyState(), spec(), 0, now=0)
    with pytest.raises(ValueError, match="maxReplicas"):
        decide(sig(1), PolicyState(), AutoscalingSpec(), MBT, now=0)


def test_zero_size_batches_corrected():
    # 100 batches/s counted, 30 of them zero-size (bucket le=1); 70 real batches carry 70000 tokens/s
    nonempty = nonempty_batch_rate(100.0, 30.0)
    assert nonempty == 70.0
    assert mean_batch_tokens(70_000.0, nonempty) == pytest.approx(1000.0)
    assert mean_batch_tokens(70_000.0, 0.0) is None


# A load step seen through 1-minute rates while the fleet refuses requests: 2 Ready replicas batch their peak of
# 50000 tokens/s each (100 requests/s completed, 1000 tokens each), 120 requests/s arrive (120000 tokens/s), 30 of
# them get 429 (25%), and 2 replicas are already loading. The previous tick read 80000 tokens/s of demand.
STEP_UNDER_429 = {"batch_tokens_rate_sum": 100_000.0, "batch_rate_count": 100.0, "request_rate": 120.0,
                  "success_rate": 100.0}


def _after_step(previous_demand: float | None, overloaded: float = 30.0, **kw) -> tuple:
    st = PolicyState(first_tick_at=-1000, peak_tokens_per_replica=50_000.0, previous_demand=previous_demand)
    s = sig(4, ready=2, starting_replicas=2, queue=2 * 300, overloaded_rate=overloaded, **(STEP_UNDER_429 | kw))
    return decide(s, st, spec(), MBT, now=0)


def test_rising_demand_under_429s_is_projected_over_the_rate_window():
    # the rate rose by 40000 in one tick: a window of 4 ticks has seen a quarter of the step, so the step is up to
    # 120000 + 3 x 40000 = 240000 tokens/s -> 120000 per ready replica / (50000 x 0.7) = 3.43x -> ceil(6.86) = 7.
    # Without the projection the 2 loading replicas "cover" ceil(2 x 60000 / 35000) = 4, and the fleet holds at 4
    # for another tick while a quarter of the requests are refused.
    d, st = _after_step(previous_demand=80_000.0)
    assert (d.action, d.desired_replicas) == ("ScaleUp", 7)
    assert "demand projected from 60000 (rising under 429s) to 120000 tokens/s/replica > 35000" in d.reason
    # the state keeps the reading, not the projection: projections never compound from tick to tick
    assert st.previous_demand == pytest.approx(120_000)


@pytest.mark.parametrize(
    "case",
    [
        {"previous_demand": 120_000.0},  # demand flat: the window has caught up
        {"previous_demand": 150_000.0},  # demand falling
        {"previous_demand": None},  # no previous healthy reading (first tick, or metrics failed)
        {"previous_demand": 80_000.0, "overloaded": 5.0},  # 4% refused: a stray 429, not a step
    ],
)
def test_demand_is_not_projected_without_a_rise_under_real_429s(case):
    d, _ = _after_step(**case)
    assert (d.action, d.desired_replicas) == ("Hold", 4)
    assert "projected" not in d.reason


def test_projection_needs_429s():
    # the same rise without any 429: the fleet is not short, the reading stands (queue ignored while loading)
    st = PolicyState(first_tick_at=-1000, peak_tokens_per_replica=50_000.0, previous_demand=80_000.0)
    s = sig(4, ready=2, starting_replicas=2, queue=2 * 300, overloaded_rate=0.0, **STEP_UNDER_429)
    d, _ = decide(s, st, spec(), MBT, now=0)
    assert (d.action, d.desired_replicas) == ("Hold", 4)


def test_failed_metrics_forget_the_previous_demand():
    st = PolicyState(first_tick_at=-1000, peak_tokens_per_replica=50_000.0, previous_demand=80_000.0)
    _, st = decide(sig(4, ready=2, error="Prometheus query failed"), st, spec(), MBT, now=0)
    assert st.previous_demand is None


def test_min_replicas_below_one_is_refused_naming_the_field():
    with pytest.raises(ValueError, match="minReplicas"):
        spec(minReplicas=0)
    # Why: a new Deployment starts at minReplicas, and an empty fleet has no pod to report metrics. The floor of 1
    # brings it back; a floor of 0 (what the API used to accept) would hold it empty for good.
    d, _ = decide(sig(0, queue=None), watched(), spec(), MBT, now=0)
    assert (d.action, d.desired_replicas) == ("ScaleUp", 1)
    d, _ = decide(sig(0, queue=None), watched(), spec().model_copy(update={"min_replicas": 0}), MBT, now=0)
    assert (d.action, d.desired_replicas) == ("Hold", 0)


# -- policy v2 ----------------------------------------------------------------------------------------------------
from tei_operator.autoscaling.policy import (DEFAULT_LOAD_SECONDS, _detect_period, _growth_headroom,  # noqa: E402
                                             decide_fast)

PEAK = 10_000.0  # tokens/s per replica, as learned


def busy(current: int, ready: int, demand_per_ready: float, t: float, **kw) -> Signals:
    """Signals of a fleet whose Ready replicas see `demand_per_ready` tokens/s each (requests = successes)."""
    return sig(current, ready=ready, queue=0.0, t=t, batch_tokens_rate_sum=demand_per_ready * ready,
               batch_rate_count=10.0 * ready, request_rate=10.0 * ready, success_rate=10.0 * ready, **kw)


def learned(**kw) -> PolicyState:
    return PolicyState(first_tick_at=-10_000, peak_tokens_per_replica=PEAK, **kw)


def test_loading_replicas_are_cancelled_when_the_ready_ones_cover_the_load():
    from dataclasses import replace

    # A spike asked for 8; it is over: 4 Ready at 30% of the target, 4 still loading. Cancel those 4 at once,
    # without waiting for the 300 s window (they serve nothing yet), and keep the 4 Ready ones for now.
    st = learned(recommendations=((-30.0, 8),))
    # First tick of the low load: not yet (a burst's queue dropping for one tick is not the demand gone).
    d, st1 = decide(busy(8, 4, 2100, t=0, starting_replicas=4), st, spec(), MBT, now=0)
    assert (d.action, d.desired_replicas) == ("Hold", 8) and st1.low_since == 0
    d, st2 = decide(busy(8, 4, 2100, t=15, starting_replicas=4), st1, spec(), MBT, now=15)
    assert (d.action, d.desired_replicas) == ("Hold", 8)
    d, st3 = decide(busy(8, 4, 2100, t=30, starting_replicas=4), st2, spec(), MBT, now=30)
    assert (d.action, d.desired_replicas) == ("ScaleDown", 4)
    assert "cancelled 4 replica(s) still loading" in d.reason
    st = replace(st, low_since=-30.0)
    # The same load with nothing loading: the scale-down window holds the Ready replicas.
    d, _ = decide(busy(4, 4, 2100, t=0), st, spec(), MBT, now=0)
    assert (d.action, d.desired_replicas) == ("Hold", 4) or d.desired_replicas == 4  # the window's highest is 8
    # Turned off: the loading replicas stay.
    d, _ = decide(busy(8, 4, 2100, t=0, starting_replicas=4), st, spec(cancelLoading=False), MBT, now=0)
    assert d.desired_replicas == 8
    # Demand still needs them (Ready at 90% of target is within tolerance): no cancel.
    d, _ = decide(busy(8, 4, 6300, t=0, starting_replicas=4), st, spec(), MBT, now=0)
    assert d.desired_replicas == 8
    # 429s: never.
    d, _ = decide(busy(8, 4, 2100, t=0, starting_replicas=4, overloaded_rate=1.0), st, spec(), MBT, now=0)
    assert d.desired_replicas == 8


def test_growth_headroom_is_the_slope_times_the_observed_load_time():
    history = tuple((float(t), 10_000.0 + 100.0 * t) for t in range(-120, 0, 15))
    # +100 tokens/s per second, 120 s load: +12,000 tokens/s
    assert _growth_headroom(history, 0.0, 10_000.0, 120.0, 0.1) == pytest.approx(12_000.0)
    # Flat, falling or noisy demand: none.
    assert _growth_headroom(tuple((float(t), 10_000.0) for t in range(-60, 0, 15)), 0, 10_000, 120, 0.1) is None
    assert _growth_headroom(tuple((float(t), 10_000.0 - 50 * t) for t in range(-60, 0, 15)), 0, 13_000, 120,
                            0.1) is None
    noisy = ((-60.0, 10_000.0), (-45.0, 14_000.0), (-30.0, 9_000.0), (-15.0, 13_000.0))
    assert _growth_headroom(noisy, 0.0, 11_000.0, 120.0, 0.1) is None
    # Growth within the tolerance band over one load: none.
    slow = tuple((float(t), 10_000.0 + 1.0 * t) for t in range(-60, 0, 15))
    assert _growth_headroom(slow, 0.0, 10_000.0, 120.0, 0.1) is None


def test_growth_headroom_sizes_the_scale_up_for_the_demand_one_load_ahead():
    # Demand per replica rising 70 tokens/s each second for a minute, on 4 replicas, load time 90 s observed.
    history = tuple((float(t), 4 * (5_000.0 + 70.0 * (t + 60))) for t in range(-120, 0, 15))
    now_demand = 5_000.0 + 70.0 * 60  # 9,200 per replica: 1.31x of 7,000
    st = learned(demand_history=history)
    d, st2 = decide(busy(4, 4, now_demand, t=0, load_seconds=90.0), st, spec(), MBT, now=0)
    # headroom: 4 x 70 x 90 = 25,200 tokens/s -> (36,800 + 25,200) / 7,000 = 8.86 -> 9 replicas
    assert d.desired_replicas == 9 and "one model load ahead" in d.reason
    assert st2.load_seconds == 90.0
    d, _ = decide(busy(4, 4, now_demand, t=0, load_seconds=90.0), st, spec(growthHeadroom=False), MBT, now=0)
    assert d.desired_replicas == 6  # ceil(4 x 1.314)


def test_periodic_load_is_detected_and_held_at_the_cycles_peak():
    # A 6-minute sawtooth (the case: shorter than load 60 s + the 300 s window, 3 cycles seen).
    period = 360.0
    hist = tuple((float(t), 20_000.0 + 40_000.0 * ((t % period) / period)) for t in range(0, 1200, 15))
    assert _detect_period(hist, DEFAULT_LOAD_SECONDS + 300) == pytest.approx(period, abs=15)
    # Noise, or a flat load, or a cycle longer than load + window: no period.
    import random

    rnd = random.Random(3)
    noise = tuple((float(t), 30_000.0 * (1 + 0.3 * rnd.random())) for t in range(0, 1200, 15))
    assert _detect_period(noise, 360) is None
    assert _detect_period(tuple((float(t), 5.0) for t in range(0, 1200, 15)), 360) is None
    slow = tuple((float(t), 20_000.0 + 40_000.0 * ((t % 900) / 900)) for t in range(0, 2700, 15))
    assert _detect_period(slow, 360) is None


def test_periodic_hold_keeps_the_peak_where_the_scale_down_window_would_not(monkeypatch):
    # A 200 s cycle, a 120 s scale-down window and 120 s model loads: the window alone lets the fleet down 120 s
    # after each peak, and the replicas asked back at the next rise arrive 120 s later, when that peak is over.
    period = 200.0

    def run(**kw) -> tuple[list[int], float | None]:
        sp = spec(scaleDown={"stabilizationWindowSeconds": 120, "maxPercentStep": 100, "periodSeconds": 15}, **kw)
        st = learned()
        current, out = 8, []
        for k in range(int(5 * period / 15)):
            t = 15.0 * k
            total = 7_000.0 * (2 + 6 * ((t % period) / period))  # 2..8 replicas' worth
            d, st = decide(busy(current, current, total / current, t=t, load_seconds=120.0), st, sp, MBT, now=t)
            current = d.desired_replicas
            out.append(current)
        return out, st.period_seconds

    held, found = run()
    # (the scale-down memory, autoscaling/scale_down.py, holds a cycling load as well: compared here with the
    # window alone)
    monkeypatch.setattr("tei_operator.autoscaling.scale_down.LEVEL_SHIFT_SHARE", float("inf"))
    followed, none = run(periodicHold=False)
    # Without the hold it follows each cycle down (12 -> 6 -> back up: a reversal per cycle, and a reload).
    # (over the last two cycles: growth headroom does not apply for a window after each scale-down, so the rise
    # back up comes later in the cycle)
    assert min(followed[-27:]) == 6 and max(followed[-27:]) == 12
    # With it, the last cycle stays at the cycle's peak: 8 replicas' worth (growth headroom is off while periodic).
    assert held[-13:] == [8] * 13, held  # a whole 200 s cycle (13 ticks)
    assert found == pytest.approx(period, abs=15) and none is None


def late_signals(t: float, late: float, current: int = 4, per_ready: float = 3_000.0, rate: float = 100.0,
                 **kw) -> Signals:
    """A fleet of `current` Ready replicas at `per_ready` tokens/s each; `late` of its `rate` completed requests/s
    took longer than 0.1 s (te_request_duration buckets; 0.1 s is a bound, so the share is read exactly)."""
    buckets = ((0.05, rate * (1 - late) / 2), (0.1, rate * (1 - late)), (0.2, rate), (float("inf"), rate))
    return sig(current, queue=0.0, t=t, batch_tokens_rate_sum=per_ready * current, batch_rate_count=10.0 * current,
               request_rate=rate, success_rate=rate, request_duration_buckets=buckets, **kw)


def test_share_within_reads_the_target_inside_its_bucket():
    # TEI's buckets around 100 ms: 74.8 and 112.2 ms. 10% took longer than 74.8 ms, 0.1% longer than 112.2 ms.
    lo, hi = 0.07482, 0.11223
    s = sig(1, request_duration_buckets=((lo, 90.0), (hi, 99.9), (float("inf"), 100.0)))
    late = 1 - s.share_within(0.1)[0]
    # Geometric between the bounds: 0.1 x (0.001 / 0.1) ** ((100 - 74.8) / (112.2 - 74.8)) = 0.45% late, not the
    # 10% of the bound below (a 100 ms SLO checked as 75 ms) nor the 3.3% of spreading the bucket evenly.
    assert late == pytest.approx(0.1 * 0.01 ** ((0.1 - lo) / (hi - lo)), rel=1e-6)
    assert 0.004 < late < 0.005
    assert 1 - s.share_within(lo)[0] == pytest.approx(0.1)  # on a bound: exact
    assert s.share_within(0.5) == (pytest.approx(0.999), 100.0)  # past the last finite bound: what it says
    # Nobody past the upper bound: the share is taken to fall 1000x across the bucket, not to zero at once.
    s = sig(1, request_duration_buckets=((lo, 90.0), (hi, 100.0), (float("inf"), 100.0)))
    assert 1 - s.share_within(0.1)[0] == pytest.approx(0.1 * 0.001 ** ((0.1 - lo) / (hi - lo)), rel=1e-6)


def test_latency_target_out_of_reach_stands_down_and_says_so():
    # A lone query's batch takes 23 ms: a 40 ms target would need it to wait out the running batch and run its own
    # in 40 ms. More replicas cannot do that: the policy sizes by targetUtilization instead and says why.
    s = replace(late_signals(0, 0.5), mean_batch_seconds=0.023)
    d, st = decide(s, watched(), spec(latencyTargetMs=40), MBT, now=0)
    plain, _ = decide(s, watched(), spec(), MBT, now=0)
    assert d.desired_replicas == plain.desired_replicas == 3  # the batch fill's scale-down, as without a target
    assert "latencyTargetMs 40 is out of reach" in d.reason and "2 x 23 ms >= 40 ms" in d.reason
    assert st.latency_capacity is None and st.min_batch_seconds == pytest.approx(0.023)
    # The lowest batch time seen is remembered: a busier tick (40 ms batches) is still out of reach.
    d, _ = decide(replace(late_signals(15, 0.5), mean_batch_seconds=0.040), st, spec(latencyTargetMs=40), MBT,
                  now=15)
    assert "out of reach" in d.reason
    # 100 ms is within reach: half the requests late is a shortage, sized from the load they missed at.
    d, st = decide(s, watched(), spec(latencyTargetMs=100), MBT, now=0)
    assert "out of reach" not in d.reason and d.action == "ScaleUp" and st.latency_capacity == pytest.approx(1_500)


def test_latency_capacity_is_learned_without_a_peak_and_moves_down_when_late():
    sp = spec(latencyTargetMs=100, growthHeadroom=False)
    # An online pool never saturates (no learned peak), yet on time at 3,000 tokens/s per replica: that is what a
    # replica can do within the target, and the fleet holds.
    d, st = decide(late_signals(0, 0.0), watched(), sp, MBT, now=0)
    assert st.peak_tokens_per_replica is None and st.latency_capacity == pytest.approx(3_000)
    assert d.action == "Hold" and "met latencyTargetMs 100" in d.reason
    # Busier and still on time: the capacity rises with the evidence.
    _, st = decide(late_signals(15, 0.004, per_ready=3_200), st, sp, MBT, now=15)
    assert st.latency_capacity == pytest.approx(3_200)
    # Load up to 4,000 per replica and 6% late (the last 300 s: 3%): the capacity moves below the load it missed at,
    # 3,200 x 0.85 = 2,720, and the fleet is sized by it this very tick: ceil(4 x 4,000 / 2,720) = 6.
    d, st = decide(late_signals(60, 0.06, per_ready=4_000), st, sp, MBT, now=60)
    assert st.latency_capacity == pytest.approx(2_720)
    assert d.desired_replicas == 6 and "latency capacity 3200 -> 2720" in d.reason
    # A minute later as many are late, on the 6 replicas, and the load grew 30%: the move did not help, and load
    # growth does not re-arm it (that is what ran pools to maxReplicas).
    d, st2 = decide(late_signals(120, 0.06, current=6, per_ready=2_700, rate=130.0), st, sp, MBT, now=120)
    assert st2.latency_capacity == pytest.approx(2_720) and "did not help" in d.reason
    assert d.desired_replicas == 6
    # Late at a load well below the capacity (the tail of a spike draining): not the fleet's size.
    _, st3 = decide(late_signals(180, 0.5, current=6, per_ready=1_000), st, sp, MBT, now=180)
    assert st3.latency_capacity == pytest.approx(2_720)
    # Never while replicas load or under 429s, nor without a target.
    _, st4 = decide(late_signals(180, 0.5, per_ready=4_000, starting_replicas=1), st, sp, MBT, now=180)
    assert st4.latency_capacity == pytest.approx(2_720)
    _, st5 = decide(late_signals(180, 0.5, per_ready=4_000, overloaded_rate=1.0), st, sp, MBT, now=180)
    assert st5.latency_capacity == pytest.approx(2_720)
    _, st6 = decide(late_signals(0, 0.5), watched(), spec(), MBT, now=0)
    assert st6.latency_capacity is None


def test_one_late_minute_on_a_fleet_on_time_over_five_is_a_burst():
    sp = spec(latencyTargetMs=100, growthHeadroom=False)
    st = watched()
    for k in range(4):
        _, st = decide(late_signals(15.0 * k, 0.0), st, sp, MBT, now=15.0 * k)
    # 2% late this minute at 20% above the capacity, but 0.4% over the last 300 s: no move, no scale-up (a
    # wandering load passes the busiest minute seen on time by that much).
    d, st2 = decide(late_signals(60, 0.02, per_ready=3_600), st, sp, MBT, now=60)
    assert st2.latency_capacity == pytest.approx(3_000)
    assert (d.action, d.desired_replicas) == ("Hold", 4) and "held: under 1.50x the latency capacity" in d.reason
    # A step beyond the fast path's threshold (as late this minute) scales up at once.
    d, _ = decide(late_signals(60, 0.02, per_ready=6_000), st, sp, MBT, now=60)
    assert d.desired_replicas == 8
    # A calm minute with 0.5% late: no scale-down while that many miss the target.
    d, _ = decide(late_signals(60, 0.005, per_ready=1_000), st, sp, MBT, now=60)
    assert d.desired_replicas == 4 and "no scale-down: 0.5% of requests took longer than 100 ms" in d.reason


def test_fast_path_uses_the_latency_capacity_only_while_requests_are_late():
    sp = spec(latencyTargetMs=100)
    st = replace(watched(), latency_capacity=2_000.0)
    # 2x the capacity over the short window but on time: ten seconds of a bursty load, not a step.
    d, _ = decide_fast(late_signals(0, 0.0, per_ready=4_000), st, sp, MBT, now=0)
    assert d.action == "Hold"
    # ...and late: a step. Up at once to ceil(4 x 2).
    d, _ = decide_fast(late_signals(0, 0.05, per_ready=4_000), st, sp, MBT, now=0)
    assert (d.action, d.desired_replicas) == ("ScaleUp", 8)


def test_schedule_raises_the_floor_inside_its_window_only():
    sp = spec(schedule=[{"start": "08:00", "end": "18:00", "days": ["Mon", "Tue"], "minReplicas": 6}])
    monday_9am = 4 * 86400 + 9 * 3600  # 1970-01-05 was a Monday
    d, _ = decide(busy(2, 2, 7_000, t=monday_9am), learned(), sp, MBT, now=monday_9am)
    assert d.desired_replicas == 6 and "the schedule's minReplicas is 6" in (d.limited_message or "")
    sunday = 3 * 86400 + 9 * 3600
    d, _ = decide(busy(2, 2, 7_000, t=sunday), learned(), sp, MBT, now=sunday)
    assert d.desired_replicas == 2


def test_fast_path_scales_up_above_its_threshold_only_and_the_main_tick_keeps_it():
    sp = spec()
    st = learned()
    # 1.3x of target: above the tolerance but below the fast threshold 1.5: the fast path leaves it to the main tick.
    d, st1 = decide_fast(busy(4, 4, 9_100, t=0), st, sp, MBT, now=0)
    assert d.action == "Hold" and st1 is st
    # 2x: scale up now, recorded as a recommendation and a scale event.
    d, st2 = decide_fast(busy(4, 4, 14_000, t=0), st, sp, MBT, now=0)
    assert (d.action, d.desired_replicas, d.fast) == ("ScaleUp", 8, True)
    assert d.reason.startswith("Fast path (")
    assert st2.recommendations[-1] == (0, 8) and st2.scale_events[-1] == (0, 4, 8)
    # 429s: up by one even below the threshold.
    d, _ = decide_fast(busy(4, 4, 7_000, t=0, overloaded_rate=2.0), st, sp, MBT, now=0)
    assert d.desired_replicas == 5
    # The next main tick still reads the long window's lower demand: it holds what the fast path asked for.
    d, _ = decide(busy(8, 4, 7_000, t=15, starting_replicas=4), st2, sp, MBT, now=15)
    assert d.desired_replicas == 8
    # Never down, even on an idle window; off when disabled; never on unknown metrics.
    d, _ = decide_fast(busy(8, 8, 100, t=0), st, sp, MBT, now=0)
    assert (d.action, d.desired_replicas) == ("Hold", 8)
    d, _ = decide_fast(busy(4, 4, 14_000, t=0), st, spec(fastScaleUp={"enabled": False}), MBT, now=0)
    assert d.action == "Hold"
    d, _ = decide_fast(sig(4, queue=None, t=0), st, sp, MBT, now=0)
    assert d.action == "Hold"


def test_fast_path_respects_step_limits_and_gpu_capacity():
    sp = spec(scaleUp={"maxPodsStep": 2, "maxPercentStep": 10, "periodSeconds": 15})
    d, st = decide_fast(busy(4, 4, 30_000, t=0), learned(), sp, MBT, now=0)
    assert d.desired_replicas == 6 and d.limited_by == "ScaleUpLimit"
    d, _ = decide_fast(busy(6, 4, 30_000, t=2, starting_replicas=2), st, sp, MBT, now=2)
    assert d.action == "Hold"  # same period: +2 already taken
    d, _ = decide_fast(busy(4, 4, 30_000, t=0, schedulable_capacity=5), learned(), spec(), MBT, now=0)
    assert d.desired_replicas == 5 and d.limited_by == "GpuCapacity"


def test_fast_path_learns_the_peak_from_a_backlog_that_the_main_tick_would_not():
    # Online queries: batches far from full, no 429s, but the queue over the short window is 2x target: the
    # replica serves all it can. The fast path learns that as the peak; the main tick (bursts) does not.
    s = sig(1, queue=32.0, batch_tokens_rate_sum=30_000.0, batch_rate_count=300.0, request_rate=900.0,
            success_rate=800.0)
    _, st = decide(s, watched(), spec(), MBT, now=0)
    assert st.peak_tokens_per_replica is None
    d, st = decide_fast(s, watched(), spec(), MBT, now=0)
    assert st.peak_tokens_per_replica == 30_000.0 and d.action == "ScaleUp"
    # Then the main tick sizes by demand, not by the queue, and does not undo it on a calm queue.
    calm = sig(2, queue=2 * 3.0, batch_tokens_rate_sum=33_000.0, batch_rate_count=600.0, request_rate=1100.0,
               success_rate=1100.0)
    d, _ = decide(calm, replace(st, first_tick_at=-10_000), spec(), MBT, now=15)
    assert d.desired_replicas == 2 and "demand" in d.reason


def test_fast_path_keeps_the_peak_it_learns_while_it_holds():
    # Replicas loading (the queue does not count for scale-up then): a hold, but the backlog still teaches the peak.
    s = sig(3, ready=1, starting_replicas=2, queue=40.0, batch_tokens_rate_sum=30_000.0, batch_rate_count=300.0,
            request_rate=900.0, success_rate=800.0)
    d, st = decide_fast(s, watched(), spec(), MBT, now=0)
    assert d.action == "Hold" and st.peak_tokens_per_replica == 30_000.0


def test_growth_headroom_does_not_ask_back_replicas_just_removed():
    # The benchmark's test noisy trace (seed 4), reduced: a cancel removed a loading replica, and 75 s later the
    # wandering demand lined up as a "steady rise" whose projection one model load ahead asked for it again, a
    # reversal (and a model load) the demand itself did not ask for: 4 x 6,600 = 26,400 tokens/s is 0.94x of the
    # target of 4 replicas (7,000 each), inside the tolerance band.
    history = tuple((float(t), 4 * (5_400.0 + 20.0 * (t + 60))) for t in range(-120, 0, 15))
    sig_now = busy(4, 4, 6_600.0, t=0, load_seconds=90.0)
    d, _ = decide(sig_now, learned(demand_history=history), spec(), MBT, now=0)
    assert d.action == "ScaleUp" and "one model load ahead" in d.reason  # the headroom alone scales up
    after_down = learned(demand_history=history, last_scale_down_time=-75.0)
    d, _ = decide(sig_now, after_down, spec(), MBT, now=0)
    assert (d.action, d.desired_replicas) == ("Hold", 4)
    assert "no growth headroom within the scale-down window after a scale-down" in d.reason
    # A window after the scale-down, the headroom counts again.
    d, _ = decide(sig_now, learned(demand_history=history, last_scale_down_time=-300.0), spec(), MBT, now=0)
    assert d.action == "ScaleUp"
    # Demand above the band still scales up at once after a scale-down.
    d, _ = decide(busy(4, 4, 8_400.0, t=0, load_seconds=90.0), after_down, spec(), MBT, now=0)
    assert (d.action, d.desired_replicas) == ("ScaleUp", 5)
