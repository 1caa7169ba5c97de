"""The bulk pool with scale to zero in the benchmark (bench/autoscaling/bulk_zero.py): the simulated operator's
main tick goes through `decide_scale_to_zero` with the bulk workers' backlog as the activation value, on the real
simulator (the compressed 30-minute ingest trace: a job from 5 to 20 min)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.autoscaling.bulk_breakdown import run
from bench.autoscaling.bulk_pools import BULK_POOL, ObjectivePool
from bench.autoscaling.bulk_zero import backlog_reader, make_zero_policy
from bench.autoscaling.traces import load_trace

TRACE = Path(__file__).resolve().parents[2] / "bench" / "traces" / "test" / "ingest.csv"


def test_backlog_is_read_one_scrape_late():
    trace = load_trace(TRACE)
    at = backlog_reader(trace, 15.0)
    assert at(300.0) == 0 and at(314.0) == 0  # the job starts at 300 s; the 300 s sample is readable from 315 s
    assert at(315.0) == 8 and at(1214.0) == 8 and at(1215.0) == 0


@pytest.fixture(scope="module")
def runs():
    trace = load_trace(TRACE).scaled(0.5)
    policy = make_zero_policy(BULK_POOL, trace, idle_seconds=120)
    zero = run(trace, 1, BULK_POOL, policy=policy, replicas0=0)
    one = ObjectivePool("bulk", BULK_POOL.classes, True, BULK_POOL.max_batch_tokens, 1, BULK_POOL.max_replicas,
                        objective="Throughput")
    return policy, zero, run(trace, 1, one)


def test_pool_wakes_on_the_backlog_and_goes_to_zero_after_the_idle_period(runs):
    policy, zero, _ = runs
    start, end = zero.window  # the job's hours in the compressed trace (150-600 s)
    assert zero.objective == "Throughput + scale to zero"
    (woke_at, n), = policy.woke
    assert start + 15 <= woke_at <= start + 30 and n == 2  # read one scrape late; 8 workers / activationPerReplica 4
    (slept_at,) = policy.slept
    assert end + 15 + 120 <= slept_at <= end + 15 + 120 + 60  # the backlog reads 0 one scrape late, then 120 s idle
    assert zero.bulk_tokens > 0


def test_scale_to_zero_costs_less_outside_the_job_than_min_replicas_one(runs):
    _, zero, one = runs
    assert zero.total("rest") < 0.5 * one.total("rest")
    assert zero.ratio() < one.ratio()
    # the wake-up (one scrape of delay, then a model load) costs the job part of its first minutes, not more
    assert zero.bulk_tokens > 0.7 * one.bulk_tokens
