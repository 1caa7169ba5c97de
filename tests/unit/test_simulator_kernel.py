"""The simulator's compiled kernel forms exactly the batches of the shared batching model.

`tei_operator.emulator.batching.ReplicaModel` is the reference (the rules the emulator runs in real time); the
kernel in bench/autoscaling/kernel.py re-implements them on arrays for speed. Both are run on the same random
requests (bursts, idle gaps, request sizes that split across batches, token and request limits, 429s) and must agree
on every formed batch (time, inputs, tokens, queue gauge after it), every request's status and answer time, and
TEI's counters as the metrics page shows them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.autoscaling.simulator import OpenArrivals, Simulator
from tei_operator.autoscaling.sources.scrape import parse_tei_metrics
from tei_operator.emulator.batching import Profile, ReplicaModel


def random_requests(seed: int, n: int) -> tuple[np.ndarray, list[list[int]]]:
    rng = np.random.default_rng(seed)
    # bursts (many arrivals at nearly the same time) and idle gaps, so the batching task sleeps and wakes often
    gaps = np.where(rng.random(n) < 0.3, rng.exponential(0.0005, n), rng.exponential(0.02, n))
    gaps[rng.random(n) < 0.05] = 0.0  # exact ties with each other and, by chance, with batch ends
    t = np.cumsum(gaps)
    sizes = [[int(x) for x in rng.integers(1, 300, rng.integers(1, 7))] for _ in range(n)]
    return t, sizes


def reference(profile: Profile, t: np.ndarray, sizes: list[list[int]], probes: np.ndarray):
    model = ReplicaModel(profile)
    gauges = []
    events = sorted([(float(x), 1, i) for i, x in enumerate(t)] + [(float(x), 2, j) for j, x in enumerate(probes)])
    for when, kind, i in events:
        while model.busy_until <= when:  # a batch ending at an arrival's time ends first (the kernel's order)
            model.finish(model.busy_until)
        if kind == 1:
            model.arrive(when, sizes[i])
        else:
            gauges.append(model.metrics.gauge)
    while model.busy_until < math.inf:
        model.finish(model.busy_until)
    return model, gauges


@pytest.mark.parametrize("seed,limits", [
    (0, {}),
    (1, {"max_batch_requests": 5}),
    (2, {"max_concurrent_requests": 24}),
    (3, {"max_batch_tokens": 300, "max_batch_requests": 3, "max_concurrent_requests": 16}),
])
def test_kernel_forms_the_reference_batches(seed, limits):
    profile = Profile(name="test", model="m", gpu="g", overhead_s=0.004, seconds_per_token=2e-5,
                      seconds_per_token_sq=3e-8, max_input_length=300,
                      **{"max_batch_tokens": 600, "max_concurrent_requests": 64, **limits})
    t, sizes = random_requests(seed, 1500)
    probes = np.sort(np.random.default_rng(seed + 100).uniform(0, t[-1], 200))
    model, ref_gauges = reference(profile, t, sizes, probes)

    offsets = np.concatenate(([0], np.cumsum([len(s) for s in sizes])))
    arrivals = OpenArrivals(t, np.zeros(len(t), np.int8), offsets, np.concatenate(sizes), np.full(len(t), -1))
    sim = Simulator(profile, replicas0=1, seed=seed, arrivals=arrivals, batch_log=100_000)
    gauges = []
    for probe in probes:
        sim.advance_to(float(probe))
        gauges.append(parse_tei_metrics(sim.metrics_page(0)).queue_size)
    sim.advance_to(float(t[-1]) + 1000.0)

    log = sim.batch_log()
    ref = np.array(model.formed, dtype=float)
    assert len(log) == len(ref) > len(t) / 10
    assert np.array_equal(log[:, 1:], ref)  # time, inputs, tokens, queue left: every batch, empty ones included
    res = sim.results()
    ref_status = np.array([o.status for o in model.outcomes])
    ref_done = np.array([o.done for o in model.outcomes])
    assert np.array_equal(res.status, ref_status)
    assert np.array_equal(res.done, ref_done)
    assert gauges == ref_gauges
    page = parse_tei_metrics(sim.metrics_page(0))
    by = {(name, dict(labels).get("method") or dict(labels).get("err")): v
          for (name, labels), v in model.metrics.counters.items()}
    assert page.requests == sum(v for (n, _), v in by.items() if n == "te_request_count")
    assert page.successes == sum(v for (n, _), v in by.items() if n == "te_request_success")
    assert page.overloaded == by.get(("te_request_failure", "overloaded"), 0.0)
    assert page.batch_count == len(ref) and page.batch_tokens_sum == ref[:, 2].sum()
    assert page.zero_batches == int(np.sum(ref[:, 1] == 0))
    if "max_concurrent_requests" in limits:
        assert (ref_status == 429).any()  # the permit rule was exercised
