"""Scale to zero (autoscaling/activation.py): the pure decision at and above zero, the activation value's parsing,
and the API's validation of scaleToZero / minReplicas 0 (pydantic and the CRD's CEL rules, same verdicts)."""

from __future__ import annotations

import pytest

from tei_operator.api.autoscaling import AUTOSCALING_CEL_RULES, AutoscalingSpec
from tei_operator.autoscaling.activation import (ACTIVATION_UNAVAILABLE, Activation, ZeroState, activation_value,
                                                 decide_scale_to_zero, is_idle, wake_replicas)
from tei_operator.autoscaling.policy import PolicyState
from tei_operator.autoscaling.signals import Signals
from tei_operator.autoscaling.writer import scaling_limited_condition

MBT = 16384
BASE = {"enabled": True, "minReplicas": 0, "maxReplicas": 8, "objective": "Throughput",
        "scaleToZero": {"activationQuery": "sum(ingest_backlog)", "idleSeconds": 600}}


def spec(**stz) -> AutoscalingSpec:
    doc = {**BASE, "scaleToZero": {**BASE["scaleToZero"], **stz}}
    return AutoscalingSpec.model_validate(doc)


def idle_signals(t: float, current: int = 1) -> Signals:
    return Signals(observed_at=t, current_replicas=current, ready_replicas=current, queue_size_total=0.0,
                   batch_tokens_rate_sum=0.0, batch_rate_count=0.0, overloaded_rate=0.0, request_rate=0.0,
                   success_rate=0.0)


def busy_signals(t: float, current: int = 2) -> Signals:
    return Signals(observed_at=t, current_replicas=current, ready_replicas=current, queue_size_total=40.0,
                   batch_tokens_rate_sum=20000.0, batch_rate_count=1.4 * current, overloaded_rate=0.0,
                   request_rate=2.0, success_rate=2.0, mean_batch_seconds=0.7)


def at_zero(t: float) -> Signals:
    return Signals(observed_at=t, current_replicas=0, ready_replicas=0)


# --- at zero ---------------------------------------------------------------------------------------------------

def test_at_zero_with_no_work_waiting_stays_at_zero_without_running_the_policy():
    d, state, _ = decide_scale_to_zero(at_zero(0), PolicyState(), ZeroState(), spec(), MBT, 0, Activation(0.0))
    assert (d.desired_replicas, d.action, d.limited_by) == (0, "Hold", None)
    assert "Scaled to zero" in d.reason
    assert state == PolicyState()  # decide() did not run: no MetricsUnavailable count for a pool with no pods
    assert scaling_limited_condition(d, 1)["status"] == "False"


def test_activation_above_threshold_wakes_the_pool():
    d, _, _ = decide_scale_to_zero(at_zero(0), PolicyState(), ZeroState(), spec(activationThreshold=5), MBT, 0,
                                   Activation(6.0))
    assert (d.desired_replicas, d.action) == (1, "ScaleUp")
    assert "Activation 6 > activationThreshold 5" in d.reason
    d, _, _ = decide_scale_to_zero(at_zero(0), PolicyState(), ZeroState(), spec(activationThreshold=5), MBT, 0,
                                   Activation(5.0))
    assert d.desired_replicas == 0


@pytest.mark.parametrize("value,per,wake,want", [(1, None, 1, 1), (100, None, 3, 3), (100, 30, 1, 4),
                                                 (1e6, 30, 1, 8), (10, 30, 2, 2)])
def test_wake_count_from_the_backlog(value, per, wake, want):
    s = spec(activationPerReplica=per, wakeReplicas=wake) if per else spec(wakeReplicas=wake)
    assert wake_replicas(value, s) == want
    d, _, _ = decide_scale_to_zero(at_zero(0), PolicyState(), ZeroState(), s, MBT, 0, Activation(float(value)))
    assert d.desired_replicas == want


@pytest.mark.parametrize("activation", [Activation(None, "connection refused"), Activation(float("nan")),
                                        Activation(None)])
def test_unreadable_activation_at_zero_restores_one_replica_with_a_condition(activation):
    d, _, _ = decide_scale_to_zero(at_zero(0), PolicyState(), ZeroState(), spec(), MBT, 0, activation)
    assert (d.desired_replicas, d.action, d.limited_by) == (1, "ScaleUp", ACTIVATION_UNAVAILABLE)
    cond = scaling_limited_condition(d, 4)
    assert (cond["status"], cond["reason"]) == ("True", ACTIVATION_UNAVAILABLE)
    if activation.error:
        assert activation.error in cond["message"]


# --- above zero ------------------------------------------------------------------------------------------------

def run_idle(s: AutoscalingSpec, until: float, activation: Activation, start: float = 0.0, step: float = 15.0):
    state, zero, t, d = PolicyState(), ZeroState(), start, None
    while t <= until:
        d, state, zero = decide_scale_to_zero(idle_signals(t), state, zero, s, MBT, t, activation)
        if d.desired_replicas == 0:
            return d, t
        t += step
    return d, None


def test_idle_for_idle_seconds_with_activation_zero_goes_to_zero():
    d, when = run_idle(spec(idleSeconds=600), 2000, Activation(0.0))
    assert when == 600  # idle since the first tick at 0
    assert d.action == "ScaleDown" and d.reason.startswith("Idle 600 s, activation 0")


def test_no_scale_to_zero_before_idle_seconds():
    d, when = run_idle(spec(idleSeconds=900), 885, Activation(0.0))
    assert when is None and d.desired_replicas == 1
    assert "idle since 1970-01-01T00:00:00Z: to zero after idleSeconds 900" in d.reason


def test_no_scale_to_zero_while_work_waits_outside():
    d, when = run_idle(spec(), 2000, Activation(3.0))
    assert when is None and d.desired_replicas == 1 and "work is waiting" in d.reason


def test_the_reason_of_an_idle_pool_does_not_change_from_tick_to_tick():
    # status.autoscaling is written only when it changes: an idle pool's reason must not count seconds
    s, state, zero, reasons = spec(idleSeconds=900), PolicyState(), ZeroState(), set()
    for t in range(0, 600, 15):
        d, state, zero = decide_scale_to_zero(idle_signals(t), state, zero, s, MBT, t, Activation(0.0))
        reasons.add(d.reason)
    assert len(reasons) <= 2, reasons  # the first tick may differ (the policy's own window not watched yet)


def test_no_scale_to_zero_when_the_activation_query_fails():
    d, when = run_idle(spec(), 2000, Activation(None, "parse error at char 4"))
    assert when is None and d.desired_replicas == 1
    assert d.limited_by == ACTIVATION_UNAVAILABLE and "parse error at char 4" in d.limited_message


def test_activity_restarts_the_idle_period():
    s = spec(idleSeconds=600)
    state, zero = PolicyState(), ZeroState()
    for t in range(0, 600, 15):
        sig = busy_signals(t, 1) if t == 300 else idle_signals(t)
        d, state, zero = decide_scale_to_zero(sig, state, zero, s, MBT, t, Activation(0.0))
        assert d.desired_replicas >= 1
    assert zero.idle_since == 315


def test_a_busy_pool_is_sized_by_the_throughput_policy_and_never_below_one():
    s = spec()
    state, zero = PolicyState(), ZeroState()
    d, state, zero = decide_scale_to_zero(busy_signals(0, 2), state, zero, s, MBT, 0, Activation(10.0))
    assert d.desired_replicas >= 2 and zero.idle_since is None
    # an idle pool whose policy floor is minReplicas 0: the policy alone never goes below 1
    for t in range(15, 400, 15):
        d, state, zero = decide_scale_to_zero(idle_signals(t, 1), state, zero, spec(idleSeconds=3600), MBT, t,
                                              Activation(0.0))
        assert d.desired_replicas == 1


@pytest.mark.parametrize("change", [{"starting_replicas": 1}, {"pending_replicas": 1}, {"queue_size_total": 2.0},
                                    {"queue_size_total": None}, {"request_rate": 0.1}, {"overloaded_rate": 0.2},
                                    {"batch_rate_count": 0.5}, {"error": "scrape failed"}, {"ready_replicas": 0}])
def test_what_is_not_idle(change):
    import dataclasses

    assert is_idle(idle_signals(0))
    assert not is_idle(dataclasses.replace(idle_signals(0), **change))


def test_unset_rates_of_a_pod_that_never_got_a_request_are_idle():
    assert is_idle(Signals(observed_at=0, current_replicas=1, ready_replicas=1, queue_size_total=0.0))


# --- the activation query's value --------------------------------------------------------------------------------

def test_activation_value_sums_a_vector_and_reads_a_scalar():
    assert activation_value([]) == 0
    assert activation_value([{"metric": {"a": "1"}, "value": [1.0, "3"]},
                             {"metric": {"a": "2"}, "value": [1.0, "4.5"]}]) == 7.5
    assert activation_value([1.0, "2"]) == 2


@pytest.mark.parametrize("bad", [[{"metric": {}, "values": [[1, "2"]]}], [{"metric": {}, "value": [1, "NaN"]}],
                                 [{"metric": {}, "value": [1, "x"]}], "text"])
def test_activation_value_refuses_what_is_not_a_number(bad):
    with pytest.raises(ValueError):
        activation_value(bad)


# --- the API ---------------------------------------------------------------------------------------------------

def _cel(doc: dict) -> list[str]:
    """Messages of the autoscaling CEL rules this object (defaults applied, as the API server has them) fails."""
    import celpy

    full = AutoscalingSpec.model_validate(doc).model_dump(by_alias=True, exclude_none=True, mode="json") \
        if _pydantic(doc) is None else {**{"minReplicas": 1, "objective": "Latency"}, **doc}
    env = celpy.Environment()
    out = []
    for rule in AUTOSCALING_CEL_RULES:
        if not env.program(env.compile(rule["rule"])).evaluate({"self": celpy.json_to_cel(full)}):
            out.append(rule["fieldPath"])
    return out


def _pydantic(doc: dict) -> str | None:
    try:
        AutoscalingSpec.model_validate(doc)
    except ValueError as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("doc,field", [
    ({**BASE}, None),
    ({**BASE, "minReplicas": 1}, "scaleToZero"),
    ({**BASE, "objective": "Latency"}, "minReplicas"),
    ({k: v for k, v in BASE.items() if k != "scaleToZero"}, "minReplicas"),
    ({"enabled": True, "minReplicas": 0, "maxReplicas": 4}, "minReplicas"),
    ({**BASE, "scaleToZero": {**BASE["scaleToZero"], "wakeReplicas": 9}}, "scaleToZero.wakeReplicas"),
    ({"enabled": True, "maxReplicas": 4}, None),
])
def test_scale_to_zero_validation_names_the_field(doc, field):
    error = _pydantic(doc)
    cel = _cel(doc)
    if field is None:
        assert error is None and cel == []
    else:
        assert error is not None and f"{field}:" in error, error
        assert "." + field in cel, cel


@pytest.mark.parametrize("stz,field", [({"activationQuery": ""}, "activation_query"),
                                       ({}, "activation_query"),
                                       ({"activationQuery": "x", "idleSeconds": 5}, "idle_seconds"),
                                       ({"activationQuery": "x", "wakeReplicas": 0}, "wake_replicas"),
                                       ({"activationQuery": "x", "activationPerReplica": 0}, "activation_per_replica"),
                                       ({"activationQuery": "x", "unknown": 1}, "unknown")])
def test_scale_to_zero_field_bounds(stz, field):
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as info:
        AutoscalingSpec.model_validate({**BASE, "scaleToZero": stz})
    locs = [".".join(str(p) for p in e["loc"]) for e in info.value.errors()]
    camel = "".join(w.capitalize() if i else w for i, w in enumerate(field.split("_")))
    assert any(loc.endswith(camel) or loc.endswith(field) for loc in locs), locs


async def test_reader_without_a_prometheus_url_reports_the_setting():
    from tei_operator.autoscaling.activation import ActivationReader

    reader = ActivationReader(None, 1.0)
    try:
        got = await reader.read("sum(x)")
    finally:
        await reader.close()
    assert got.value is None and "TEI_OPERATOR_PROMETHEUS_URL" in got.error


async def test_reader_reports_an_unreachable_prometheus_with_its_url():
    from tests.cluster import free_port
    from tei_operator.autoscaling.activation import ActivationReader

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    reader = ActivationReader(url, 1.0)
    try:
        got = await reader.read("sum(x)")
    finally:
        await reader.close()
    assert got.value is None and url in got.error and "sum(x)" in got.error


def test_a_schedule_window_wakes_the_pool_and_keeps_it_from_zero():
    s = AutoscalingSpec.model_validate({**BASE, "schedule": [{"start": "00:00", "end": "01:00", "minReplicas": 2}]})
    inside, outside = 600.0, 2 * 3600.0  # 1970-01-01 00:10 and 02:00 UTC
    d, _, _ = decide_scale_to_zero(at_zero(inside), PolicyState(), ZeroState(), s, MBT, inside, Activation(0.0))
    assert (d.desired_replicas, d.action) == (2, "ScaleUp") and "Schedule window" in d.reason
    d, _, _ = decide_scale_to_zero(at_zero(outside), PolicyState(), ZeroState(), s, MBT, outside, Activation(0.0))
    assert d.desired_replicas == 0
    d, _, _ = decide_scale_to_zero(at_zero(inside), PolicyState(), ZeroState(), s, MBT, inside, Activation(20.0))
    assert d.desired_replicas == 2  # max(wakeReplicas 1, the window's 2)
    # idle inside the window for longer than idleSeconds: no scale to zero
    state, zero = PolicyState(), ZeroState()
    for t in range(0, 1800, 15):
        sig = idle_signals(t, 2)
        d, state, zero = decide_scale_to_zero(sig, state, zero, s, MBT, t, Activation(0.0))
        assert d.desired_replicas >= 1
    # after the window: it goes
    d, when = run_idle(s, outside + 1000, Activation(0.0), start=outside)
    assert when == outside + 600


def test_a_scale_to_zero_pool_renders_no_pod_disruption_budget():
    """Nothing may block a drain of a pool that is meant to reach zero (and at zero a PDB would select nothing)."""
    from tei_operator.api import ServiceResource
    from tei_operator.render import render_children
    from tei_operator.settings import Settings

    body = {"apiVersion": "tei-operator.io/v1alpha1", "kind": "EmbeddingService",
            "metadata": {"name": "bulk", "namespace": "ingest", "uid": "u1"},
            "spec": {"model": {"id": "BAAI/bge-m3"}, "gpu": {"type": "a100"}, "autoscaling": BASE}}
    children = render_children(ServiceResource.from_body(body), Settings())
    assert children.pdb is None
    assert [c["kind"] for c in children.all()] == ["Deployment", "Service"]
    assert "replicas" not in children.deployment["spec"]  # the autoscaler owns it (0 at creation, reconcile.py)


def test_a_wake_asks_for_no_more_than_the_gpu_nodes_hold_but_at_least_one():
    import dataclasses

    s = spec(activationPerReplica=1)
    for capacity, pending, want in ((3, 0, 3), (3, 2, 5), (0, 0, 1), (None, 0, 8)):
        sig = dataclasses.replace(at_zero(0), schedulable_capacity=capacity)
        d, _, _ = decide_scale_to_zero(sig, PolicyState(), ZeroState(), s, MBT, 0, Activation(50.0), pending)
        assert d.desired_replicas == want, (capacity, pending)


def test_missing_pool_metrics_outrank_an_unreadable_activation():
    import dataclasses

    sig = dataclasses.replace(idle_signals(0), error="pod bulk-0: no metrics")
    d, _, _ = decide_scale_to_zero(sig, PolicyState(), ZeroState(), spec(), MBT, 0, Activation(None, "timeout"))
    assert d.limited_by == "MetricsUnavailable" and d.desired_replicas == 1
    assert "activation query unreadable (timeout)" in d.reason
