"""The throughput objective (spec.autoscaling.objective: Throughput): sized for busy GPUs, with numbers."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from tei_operator.api.autoscaling import AutoscalingSpec
from tei_operator.autoscaling import throughput
from tei_operator.autoscaling.policy import PolicyState, decide, decide_fast
from tei_operator.autoscaling.signals import Signals

MBT = 16384


def spec(**kw) -> AutoscalingSpec:
    base = {"enabled": True, "minReplicas": 1, "maxReplicas": 12, "objective": "Throughput"}
    base.update(kw)
    return AutoscalingSpec.model_validate(base)


def sig(ready: int, busy: float, queue: float = 0.0, current: int | None = None, batch_s: float = 1.4,
        t: float = 0.0, **kw) -> Signals:
    """Signals of `ready` replicas each busy `busy` of the time with batches of `batch_s` seconds."""
    rate = busy * ready / batch_s
    return Signals(observed_at=t, current_replicas=ready if current is None else current, ready_replicas=ready,
                   queue_size_total=queue * ready, batch_rate_count=rate, batch_tokens_rate_sum=rate * 16000,
                   mean_batch_seconds=batch_s, request_rate=rate / 2, success_rate=rate / 2, **kw)


def watched() -> PolicyState:
    return PolicyState(first_tick_at=-10_000)


def test_busy_share_from_batches_and_batch_time():
    assert throughput.busy_share(sig(4, 0.5)) == pytest.approx(0.5)
    assert throughput.busy_share(sig(4, 0.0)) == 0.0  # no batch in the window: idle, not unknown
    assert throughput.busy_share(Signals(observed_at=0, current_replicas=2, ready_replicas=2)) is None


def test_idle_replicas_scale_down_to_what_keeps_them_busy():
    # 12 replicas busy 50%: the same work keeps ceil(12 x 0.5 / target) busy
    d, _ = decide(sig(12, 0.5), watched(), spec(), MBT, now=0)
    assert (d.action, d.desired_replicas) == ("ScaleDown", math.ceil(12 * 0.5 / throughput.BUSY_TARGET - 1e-9))
    assert "busy 50%" in d.reason


def test_busy_at_target_holds_even_with_full_batches_and_a_queue():
    # The latency objective would read full batches and a queue above target as load; throughput holds.
    d, _ = decide(sig(5, 0.93, queue=10), watched(), spec(), MBT, now=0)
    assert d.action == "Hold"
    lat, _ = decide(sig(5, 0.93, queue=30), watched(), spec(objective="Latency"), MBT, now=0)
    assert lat.action == "ScaleUp"


def test_backlog_on_busy_replicas_adds_one_replica():
    d, _ = decide(sig(4, 1.0, queue=40), watched(), spec(), MBT, now=0)
    assert (d.action, d.desired_replicas) == ("ScaleUp", 5)
    assert d.reason.startswith("Backlog 40.0 > targetQueueSize 16")
    # ...but not while one is loading
    d, _ = decide(sig(4, 0.97, queue=40, current=5, starting_replicas=1), watched(), spec(), MBT, now=0)
    assert d.desired_replicas == 5


def test_arrivals_beyond_completions_count_as_work():
    s = sig(4, 1.0)
    s = Signals(**{**s.__dict__, "request_rate": s.success_rate * 2})  # open-loop arrivals twice the completions
    d, _ = decide(s, watched(), spec(), MBT, now=0)
    assert d.desired_replicas == math.ceil(4 * 2 / throughput.BUSY_TARGET - 1e-9)


def test_scale_down_is_prompt_by_default_and_the_users_window_wins():
    st = PolicyState(first_tick_at=0.0)
    # one busy tick at 12, then idle: the default throughput window is 60 s, not 300 s
    d, st = decide(sig(12, 1.0, t=0), st, spec(), MBT, now=0)
    assert d.action == "Hold"
    d, st = decide(sig(12, 0.2, t=30), st, spec(), MBT, now=30)
    assert d.action == "Hold"  # inside the 60 s window
    d, st = decide(sig(12, 0.2, t=75), st, spec(), MBT, now=75)
    # all at once, no 1-pod / 25% step limit
    assert (d.action, d.desired_replicas) == ("ScaleDown", math.ceil(12 * 0.2 / throughput.BUSY_TARGET - 1e-9))
    st = PolicyState(first_tick_at=0.0)
    sp = spec(scaleDown={"stabilizationWindowSeconds": 300})
    for t in (0, 30, 75):
        d, st = decide(sig(12, 1.0 if t == 0 else 0.2, t=t), st, sp, MBT, now=t)
    assert d.action == "Hold"


def test_effective_spec_keeps_explicit_scale_down_settings():
    sp = spec(scaleDown={"maxPercentStep": 10})
    eff = throughput.effective_spec(sp)
    assert eff.scale_down.stabilization_window_seconds == throughput.THROUGHPUT_SCALE_DOWN_WINDOW_SECONDS
    assert eff.scale_down.max_percent_step == 10


def test_no_fast_path_under_throughput():
    d, st = decide_fast(sig(2, 1.0, queue=500), PolicyState(), spec(), MBT, now=0)
    assert d.action == "Hold"
    d, _ = decide_fast(sig(2, 1.0, queue=500), PolicyState(), spec(objective="Latency"), MBT, now=0)
    assert d.action == "ScaleUp"


def test_429s_add_a_replica():
    d, _ = decide(sig(3, 0.9, overloaded_rate=2.0), watched(), spec(), MBT, now=0)
    assert d.desired_replicas == 4 and "429" in d.reason


def test_objective_validation_names_the_field():
    with pytest.raises(ValidationError, match="latencyTargetMs"):
        spec(latencyTargetMs=100)
    with pytest.raises(ValidationError, match="objective"):
        spec(objective="Cheap")
    assert spec(objective="Latency", latencyTargetMs=100).objective == "Latency"
    assert AutoscalingSpec.model_validate({"enabled": True, "maxReplicas": 2}).objective == "Latency"


def test_bulk_pool_example_is_the_benchmarks_bulk_pool():
    from pathlib import Path

    import yaml

    from bench.autoscaling.bulk_pools import BULK_POOL
    from tei_operator.api import ServiceResource

    path = Path(__file__).resolve().parents[2] / "examples" / "embedding-bulk-pool.yaml"
    (doc,) = [d for d in yaml.safe_load_all(path.read_text()) if d]
    svc = ServiceResource.from_body(doc)
    assert svc.spec.autoscaling.objective == BULK_POOL.objective == "Throughput"
    assert svc.spec.engine.max_batch_tokens == BULK_POOL.max_batch_tokens
    assert svc.spec.autoscaling.max_replicas == BULK_POOL.max_replicas


def test_cel_rule_refuses_a_latency_target_on_a_throughput_pool():
    import celpy

    from tei_operator.api.autoscaling import AUTOSCALING_CEL_RULES

    (rule,) = [r for r in AUTOSCALING_CEL_RULES if "latencyTargetMs" in r["rule"]]
    env = celpy.Environment()
    program = env.program(env.compile(rule["rule"]))

    def ok(doc):
        return bool(program.evaluate({"self": celpy.json_to_cel(doc)}))

    assert not ok({"objective": "Throughput", "latencyTargetMs": 100})
    assert ok({"objective": "Throughput"}) and ok({"objective": "Latency", "latencyTargetMs": 100}) and ok({})
    assert rule["fieldPath"] == ".latencyTargetMs"
