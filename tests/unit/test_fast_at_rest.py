"""The fast path does not ask `decide_fast` about a service whose Ready pods are all at rest (one unchanged page
over the window, empty queue): that shortcut must be exact (the decision it skips is always a Hold that keeps the
policy's state), and must not swallow a service with anything to read (a request served, a queue, a 429)."""

from __future__ import annotations

import asyncio

import pytest

from bench.scale.fakepods import IDLE_METRICS
from bench.scale.profile_autoscaler import NOW
from tei_operator.autoscaling.loop import AT_REST, FAST_SOURCE, build_signals
from tei_operator.autoscaling.policy import PolicyState, decide_fast
from tei_operator.autoscaling.sources import PodTarget, aggregate

from .store_world import store_world

# A pod that served requests before and is idle now: its counters are not zero, they just do not move.
USED_PAGE = (IDLE_METRICS.replace('te_request_count{method="batch"} 0', 'te_request_count{method="batch"} 1234')
             .replace('te_request_success{method="batch"} 0', 'te_request_success{method="batch"} 1234'))


def _world(pages):
    """Four autoscaled services (and four others) in the store; `pages(pod)` answers each pod's /metrics."""
    async def page(pod: PodTarget) -> str:
        return pages(pod)

    w = store_world(8, page)
    return w.scaler, w.clock


def _fast_ticks(scaler, clock, n: int):
    loop = asyncio.new_event_loop()
    try:
        outcomes = []
        for _ in range(n):
            clock[0] += 2
            outcomes = loop.run_until_complete(scaler.fast_tick())
        return outcomes
    finally:
        loop.close()


def test_pods_at_rest_are_held_without_a_decision_from_their_second_sample():
    scaler, clock = _world(lambda pod: USED_PAGE)
    first = _fast_ticks(scaler, clock, 1)
    assert len(first) == 4 and all(o.decision.reason != AT_REST for o in first)  # one sample: no window yet
    outcomes = _fast_ticks(scaler, clock, 3)
    assert len(outcomes) == 4
    assert all(o.decision.action == "Hold" and o.decision.reason == AT_REST and o.decision.fast for o in outcomes)


@pytest.mark.parametrize("what", ["a request served", "a queue", "429s"])
def test_a_pod_with_anything_to_read_gets_a_decision(what):
    served = [1234]

    def page(pod: PodTarget) -> str:
        if what == "a request served":
            served[0] += 1
            return USED_PAGE.replace('te_request_count{method="batch"} 1234', f'te_request_count{{method="batch"}} {served[0]}')
        if what == "a queue":
            return USED_PAGE.replace("te_queue_size 0", "te_queue_size 3")  # unchanged, but something waits
        return USED_PAGE + "# TYPE te_request_failure counter\nte_request_failure{err=\"overloaded\"} 7\n"

    scaler, clock = _world(page)
    outcomes = _fast_ticks(scaler, clock, 4)
    assert len(outcomes) == 4
    if what == "429s":
        # a page whose 429 counter does not move is at rest: 7 refusals long ago are not a refusal now
        assert all(o.decision.reason == AT_REST for o in outcomes)
    else:
        assert all(o.decision.reason != AT_REST for o in outcomes), [o.decision.reason for o in outcomes]


STATES = [
    PolicyState(),
    PolicyState(peak_tokens_per_replica=20_000.0, load_seconds=40.0, previous_demand=5_000.0),
    PolicyState(peak_tokens_per_replica=20_000.0, latency_capacity=9_000.0, min_batch_seconds=0.004,
                recommendations=((NOW - 30, 3),), scale_events=((NOW - 30, 1, 3),), last_scale_time=NOW - 30,
                last_scale_up_time=NOW - 30),
    PolicyState(peak_tokens_per_replica=20_000.0, period_seconds=360.0, demand_history=((NOW - 60, 9_000.0),)),
]
SPECS = [{}, {"headroom": 0.3}, {"latency_target_ms": 100}, {"min_replicas": 3}]


@pytest.mark.parametrize("state", STATES, ids=["empty", "learned", "latency", "periodic"])
@pytest.mark.parametrize("changes", SPECS, ids=["default", "headroom", "latency-target", "min-3"])
def test_the_decision_the_shortcut_skips_is_a_hold_that_keeps_the_state(state, changes):
    """The proof of the shortcut: the full path (the pods' histories -> aggregate -> build_signals -> decide_fast)
    on pods at rest, for learned and unlearned states and the spec fields the fast path reads."""
    scaler, clock = _world(lambda pod: USED_PAGE)
    _fast_ticks(scaler, clock, 3)
    now = clock[0]
    loop = asyncio.new_event_loop()
    try:
        views, targets = loop.run_until_complete(scaler._fast_views(now))  # noqa: SLF001 - what the tick reads
    finally:
        loop.close()
    source = scaler.source(FAST_SOURCE)
    result = source.absorb([p.uid for t in targets for p in t.pods], [], now)
    assert views
    for view, target in zip(views, targets):
        metrics = aggregate(target, result, now, stale_seconds=30, fresh_grace_seconds=60)
        current = int(view.deployment["spec"].get("replicas") or 1)
        spec = view.resource.spec.autoscaling.model_copy(update=changes)
        signals = build_signals(now, current, view.counts(now), metrics, None)
        assert signals.ready_replicas >= 1 and signals.request_rate == 0.0
        decision, after = decide_fast(signals, state, spec, view.resource.spec.engine.max_batch_tokens, now, 0)
        assert decision.action == "Hold", decision.reason
        assert after == state
