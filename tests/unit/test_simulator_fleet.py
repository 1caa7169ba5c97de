"""The per-batch simulator around its kernel: pod lifecycle and billing, permits, routing, bulk clients, the
simulated Prometheus and the metrics pages a policy reads. Each test builds a tiny fleet whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from bench.autoscaling import kernel as K
from bench.autoscaling.simulator import BulkClients, OpenArrivals, Simulator, SimulatorError
from tei_operator.autoscaling.sources.scrape import parse_tei_metrics
from tei_operator.emulator.batching import (LoadSeconds, Profile, ProfileError, load_profile, profile_from_dict,
                                           profile_names)

FAST = Profile(name="fast", model="m", gpu="g", overhead_s=0.01, seconds_per_token=1e-4, max_batch_tokens=1024,
               max_concurrent_requests=64, max_input_length=512)


def steady(rate: float, seconds: float, inputs: int = 1, tokens: int = 100, seed: int = 0,
           conns: int | None = None) -> OpenArrivals:
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(1 / rate, int(rate * seconds * 1.2)))
    t = t[t < seconds]
    conn = None if conns is None else rng.integers(0, conns, len(t))
    return OpenArrivals.uniform_sizes(t, inputs, tokens, conn=conn)


def phases(sim: Simulator) -> dict[int, str]:
    return {p.id: p.phase for p in sim.view.pods()}


def test_pods_go_pending_loading_ready_and_gpus_are_billed_from_loading():
    sim = Simulator(FAST, replicas0=1, quota=2, arrivals=steady(1, 1), load_time=10.0)
    sim.advance_to(5.0)
    sim.set_desired(3, 5.0)
    assert phases(sim) == {0: "Ready", 1: "Loading", 2: "Pending"}  # no GPU left for pod 2
    sim.advance_to(15.0)
    assert phases(sim) == {0: "Ready", 1: "Ready", 2: "Pending"}
    assert sim.view.pods()[1].ready_at == 15.0
    sim.advance_to(20.0)
    assert sim.gpu_seconds() == pytest.approx(20.0 + 15.0)  # pod 0 since 0 s, pod 1 since 5 s, pod 2 never
    sim.set_desired(1, 20.0)  # the Pending pod goes first, then the most recently Ready one (idle: gone at once)
    assert phases(sim) == {0: "Ready"}
    sim.advance_to(30.0)
    assert sim.gpu_seconds() == pytest.approx(30.0 + 15.0)


def test_scaling_down_cancels_a_loading_pod_and_stops_its_bill():
    sim = Simulator(FAST, replicas0=1, arrivals=steady(1, 1), load_time=60.0)
    sim.set_desired(2, 0.0)
    sim.advance_to(10.0)
    sim.set_desired(1, 10.0)
    assert phases(sim) == {0: "Ready"}
    sim.advance_to(100.0)
    assert sim.gpu_seconds() == pytest.approx(100.0 + 10.0)


def test_a_draining_pod_answers_its_queue_and_hands_its_gpu_to_a_pending_pod():
    # 2 pods, a burst of 40 requests of 8 inputs x 100 tokens (each batch: 10 inputs, ~0.11 s): both are busy for
    # seconds. Scaling to 1 drains the newer pod; scaling back to 2 leaves the new pod Pending (quota 2) until the
    # draining one is gone, then it loads.
    arrivals = OpenArrivals.uniform_sizes(np.linspace(0.0, 0.01, 40), 8, 100)
    sim = Simulator(FAST.with_limits(max_concurrent_requests=512), replicas0=2, quota=2, arrivals=arrivals,
                    load_time=5.0)
    sim.advance_to(0.5)
    sim.set_desired(1, 0.5)
    assert phases(sim) == {0: "Ready", 1: "Draining"}
    sim.set_desired(2, 0.5)
    assert phases(sim) == {0: "Ready", 1: "Draining", 2: "Pending"}
    sim.advance_to(30.0)
    res = sim.results()
    assert (res.status == 200).all()  # nothing lost in the drain
    drained = res.pods[1]
    last_answer = res.done[res.pod == 1].max()
    assert drained.gone_at == last_answer > 0.5
    assert res.pods[2].scheduled_at == drained.gone_at and res.pods[2].ready_at == drained.gone_at + 5.0
    # after pod 1 is gone, no request is routed to it
    assert not ((res.pod == 1) & (res.t > 0.5)).any()


def test_429_when_a_request_cannot_get_a_permit_for_every_input():
    profile = FAST.with_limits(max_concurrent_requests=8)
    arrivals = OpenArrivals.uniform_sizes(np.zeros(5), 4, 100)  # 5 x 4 inputs at once, 8 permits
    sim = Simulator(profile, replicas0=1, arrivals=arrivals)
    sim.advance_to(0.0)
    page = parse_tei_metrics(sim.metrics_page(0))
    assert page.requests == 5 and page.overloaded == 3 and page.queue_size == 0  # 8 inputs form one batch
    assert sim.view.inflight(0) == 2
    sim.advance_to(5.0)
    res = sim.results()
    assert list(res.status) == [200, 200, 429, 429, 429]
    assert sim.view.inflight(0) == 0


def test_no_ready_pod_is_a_503():
    sim = Simulator(FAST, replicas0=0, arrivals=steady(10, 2), load_time=1.0)
    sim.set_desired(1, 0.0)
    sim.advance_to(3.0)
    res = sim.results()
    assert (res.status[res.t < 1.0] == 503).all() and (res.status[res.t > 1.0] == 200).all()


def test_keepalive_connections_keep_new_pods_idle_until_they_reopen():
    def share_of_new_pods(routing: str) -> float:
        sim = Simulator(FAST, replicas0=2, arrivals=steady(50, 40, conns=20), routing=routing, load_time=0.0,
                        connection_lifetime_s=1000.0)
        sim.advance_to(10.0)
        sim.set_desired(4, 10.0)
        sim.advance_to(40.0)
        res = sim.results()
        late = res.t > 10.0
        return float(np.isin(res.pod[late], [2, 3]).mean())

    assert share_of_new_pods("random") == pytest.approx(0.5, abs=0.06)
    assert share_of_new_pods("keepalive") < 0.05  # the 20 connections stay where they were opened


def test_keepalive_connections_spread_as_they_reopen():
    sim = Simulator(FAST, replicas0=2, arrivals=steady(50, 200, conns=20), routing="keepalive", load_time=0.0,
                    connection_lifetime_s=5.0)
    sim.set_desired(4, 0.0)
    sim.advance_to(200.0)
    res = sim.results()
    assert 0.3 < np.isin(res.pod[res.t > 100], [2, 3]).mean() < 0.7


def test_bulk_workers_retry_429_with_backoff_and_finish_every_request():
    profile = FAST.with_limits(max_concurrent_requests=16)
    bulk = BulkClients(workers=4, start_s=0.0, stop_s=20.0, inputs_per_request=8, tokens_min=50, tokens_max=150,
                       backoff_initial_s=0.2, backoff_max_s=1.0, seed=3)
    sim = Simulator(profile, replicas0=1, arrivals=OpenArrivals.uniform_sizes(np.zeros(0), 1, 1), bulk=bulk)
    sim.advance_to(40.0)
    r = sim.results()
    assert (r.bulk_status == 429).sum() > 10 and (r.bulk_status == 200).sum() > 10
    for w in range(4):
        mine = r.bulk_worker == w
        seqs = r.bulk_seq[mine]
        assert np.all(np.diff(seqs) >= 0)  # a worker retries a request until it is answered, then sends the next
        ok = r.bulk_status[mine] == 200
        answered = sorted(seqs[ok])
        assert answered == list(range(len(answered)))  # every request answered exactly once, in order
        assert seqs.max() <= len(answered)  # at most the last one was still being retried at stop_s
        t, status = r.bulk_t[mine], r.bulk_status[mine]
        for i in range(len(t) - 1):
            gap = t[i + 1] - (r.bulk_done[mine][i])
            if status[i] == 429:
                assert 0.1 - 1e-9 <= gap <= 1.0  # backoff: initial 0.2 s x [0.5, 1), capped at 1 s
            else:
                assert gap == 0.0  # the next request goes out as soon as the answer comes
    assert r.bulk_t.max() < 20.0
    assert r.served_tokens[2] == r.bulk_tokens[r.bulk_status == 200].sum() > 0
    assert np.all((r.bulk_tokens >= 8 * 50) & (r.bulk_tokens <= 8 * 150))


def test_same_seed_same_run_other_seed_differs():
    def run(seed: int):
        sim = Simulator(FAST, replicas0=3, seed=seed, arrivals=steady(100, 30))
        for now in range(1, 31):
            sim.advance_to(float(now))
            if now == 10:
                sim.set_desired(2, 10.0)
        return sim.results()

    a, b, c = run(1), run(1), run(2)
    assert np.array_equal(a.done, b.done, equal_nan=True) and np.array_equal(a.pod, b.pod)
    assert not np.array_equal(a.pod, c.pod)


def test_prometheus_rates_averages_and_outage():
    sim = Simulator(FAST, replicas0=2, arrivals=steady(40, 300), metrics_outage=(150.0, 200.0))
    prom = sim.view.prometheus
    sim.advance_to(120.0)
    assert prom.rate("te_request_count", 60.0) == pytest.approx(40, rel=0.2)
    assert prom.query("sum(rate(te_request_count[1m]))") == prom.rate("te_request_count", 60.0)
    assert prom.query('sum(rate(te_request_failure{err="overloaded"}[1m]))') is None  # no 429 yet: no series
    per_pod = prom.rate("te_request_success", 60.0, by_pod=True)
    assert set(per_pod) == {0, 1} and sum(per_pod.values()) == pytest.approx(40, rel=0.2)
    tokens = prom.rate("te_batch_next_tokens_sum", 60.0)
    assert tokens == pytest.approx(40 * 100, rel=0.2)
    assert prom.avg_over_time("te_queue_size", 60.0) is not None
    assert prom.query('sum(rate(te_batch_next_tokens_bucket{le=~"1|1\\\\.0"}[60s]))') > 0  # the empty batches
    sim.advance_to(160.0)
    assert prom.rate("te_request_count", 60.0) is None and prom.last("te_queue_size") is None
    sim.advance_to(230.0)  # two scrapes after the outage: rates again, from them only
    assert prom.rate("te_request_count", 60.0) == pytest.approx(40, rel=0.3)
    with pytest.raises(SimulatorError, match="query"):
        prom.query("histogram_quantile(0.9, te_request_duration_bucket)")


def test_metrics_page_is_teis_exposition():
    sim = Simulator(FAST, replicas0=1, arrivals=OpenArrivals.uniform_sizes(np.array([1.0, 1.0]), [1, 3], 50))
    assert sim.metrics_page(0) == ""  # an idle TEI has no series yet
    sim.advance_to(2.0)
    page = sim.metrics_page(0)
    assert "# TYPE te_request_count counter" in page and "te_request_count_total" not in page
    assert 'te_request_count{method="single"} 1' in page and 'te_request_success{method="batch"} 1' in page
    assert "# TYPE te_queue_size gauge\nte_queue_size 0" in page
    assert 'te_batch_next_size_bucket{le="4.0"}' in page and 'te_request_duration_bucket{le="+Inf"} 2' in page
    sample = parse_tei_metrics(page)  # the operator's scrape source reads it
    assert sample.batch_count == 4 and sample.zero_batches == 2  # {1 input}, empty, {3 inputs}, empty and sample.batch_tokens_sum == 200
    with pytest.raises(SimulatorError, match="Ready"):
        sim.metrics_page(7)


def test_bad_input_names_the_field():
    with pytest.raises(SimulatorError, match="routing"):
        Simulator(FAST, replicas0=1, arrivals=steady(1, 1), routing="round-robin")
    with pytest.raises(SimulatorError, match="input_offsets"):
        OpenArrivals(np.zeros(2), np.zeros(2), np.array([0, 1]), np.array([5]), np.full(2, -1))
    with pytest.raises(SimulatorError, match="sorted"):
        OpenArrivals.uniform_sizes(np.array([2.0, 1.0]), 1, 5)
    with pytest.raises(SimulatorError, match="inputs_per_request"):
        Simulator(FAST, replicas0=1, arrivals=steady(1, 1), bulk=BulkClients(1, 0, 1, inputs_per_request=64))
    with pytest.raises(SimulatorError, match="backoff"):
        BulkClients(1, 0, 1, backoff_initial_s=0)


def test_shipped_profiles_load_and_bad_ones_are_refused_by_field(tmp_path):
    assert {"bge-m3-a100", "bge-reranker-v2-m3-a100", "cpu-small"} <= set(profile_names())
    bge = load_profile("bge-m3-a100")
    assert 55_000 < bge.peak_tokens_per_second(256) < 65_000  # ~60k tokens/s at full batches (shared/TEI.md)
    assert 0.005 < bge.batch_seconds_of([24]) < 0.015  # a single query: TEI's 5-15 ms
    rerank = load_profile("bge-reranker-v2-m3-a100")
    pairs_per_s = 64 / rerank.batch_seconds_of([256] * 64)
    assert 700 < pairs_per_s < 900
    with pytest.raises(ProfileError, match="seconds_per_token"):
        profile_from_dict({"model": "m", "gpu": "g", "overhead_s": 0.0, "seconds_per_token": -1}, "x.yaml")
    with pytest.raises(ProfileError, match="unknown field.*tokens_per_sec"):
        profile_from_dict({"model": "m", "gpu": "g", "overhead_s": 0.0, "seconds_per_token": 1e-5,
                           "tokens_per_sec": 5}, "x.yaml")
    with pytest.raises(ProfileError, match="no such profile"):
        load_profile("h100-dream")
    bad = tmp_path / "p.yaml"
    bad.write_text("model: m\ngpu: g\noverhead_s: 0\nseconds_per_token: 1e-5\nmax_batch_tokens: 100\n")
    with pytest.raises(ProfileError, match="max_batch_tokens: must be at least max_input_length"):
        load_profile(bad)


def test_saturated_replica_serves_its_full_batch_capacity():
    # 1.5x what one replica can do with full batches of 100-token inputs (1024 tokens: 10 per batch): the queue stays
    # long, every batch is full, and the answered rate is the profile's capacity.
    profile = FAST.with_limits(max_concurrent_requests=4096)
    capacity = profile.peak_tokens_per_second(100) / 100  # inputs/s
    sim = Simulator(profile, replicas0=1, arrivals=steady(1.5 * capacity, 60, inputs=1, tokens=100))
    sim.advance_to(60.0)
    res = sim.results()
    answered_in_second_half = ((res.status == 200) & (res.done > 30.0)).sum() / 30.0
    assert answered_in_second_half == pytest.approx(capacity, rel=0.03)
    page = parse_tei_metrics(sim.metrics_page(0))
    assert page.queue_size > 100  # a long queue ...
    inputs = sim._pc[0, K.C_BATCH_INPUTS]
    assert inputs / (page.batch_count - page.zero_batches) > 9.5  # ... so batches of 10 inputs


def test_speed_script_quick_mode_prints_its_table(capsys):
    from bench.autoscaling.speed import main

    assert main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "simulator CPU time, one core" in out and "speed-up over the reference" in out


def test_a_gpu_that_held_the_model_loads_it_warm():
    # The profile's load time: cold uniform in [cold_min, cold_max] on a GPU new to the model, warm on one that held
    # it (nodes keep the image and the model on disk). 2 pods, down to 1, up to 2 again: the GPU given back is warm;
    # a third pod needs a new GPU and loads cold.
    profile = FAST.with_limits(load_seconds=LoadSeconds(cold_min=40.0, cold_max=60.0, warm=5.0))
    sim = Simulator(profile, replicas0=2, arrivals=steady(1, 1))
    sim.set_desired(1, 10.0)
    sim.set_desired(3, 20.0)
    loads = sorted(r.load_s for r in sim.results().pods if r.scheduled_at == 20.0)
    assert loads[0] == 5.0 and 40.0 <= loads[1] <= 60.0
    same = Simulator(profile, replicas0=2, arrivals=steady(1, 1))
    same.set_desired(1, 10.0)
    same.set_desired(3, 20.0)
    assert sorted(r.load_s for r in same.results().pods if r.scheduled_at == 20.0) == loads  # seeded draws


def test_several_bulk_groups_run_in_their_own_windows():
    # A day's ingestion as two stretches with different worker counts: each group's workers send only inside its
    # window, with its own request size.
    early = BulkClients(workers=2, start_s=0.0, stop_s=10.0, inputs_per_request=4, seed=1)
    late = BulkClients(workers=5, start_s=20.0, stop_s=30.0, inputs_per_request=8, seed=2)
    none = OpenArrivals.uniform_sizes(np.zeros(0), 1, 1)
    sim = Simulator(FAST, replicas0=2, arrivals=none, bulk=[early, late])
    sim.advance_to(40.0)
    r = sim.results()
    g0, g1 = r.bulk_group == 0, r.bulk_group == 1
    assert set(r.bulk_worker[g0]) == {0, 1} and set(r.bulk_worker[g1]) == {2, 3, 4, 5, 6}
    assert r.bulk_t[g0].max() < 10.0 and 20.0 <= r.bulk_t[g1].min() and r.bulk_t[g1].max() < 30.0
    assert set(r.bulk_inputs[g0]) == {4} and set(r.bulk_inputs[g1]) == {8}
    with pytest.raises(SimulatorError, match=r"bulk\[1\]\.inputs_per_request"):
        Simulator(FAST, replicas0=1, arrivals=none, bulk=[early, BulkClients(1, 0, 1, inputs_per_request=99)])
