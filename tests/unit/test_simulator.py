"""The autoscaling benchmark's simulator: a quick run on the step trace, with properties that can fail."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from bench.autoscaling.__main__ import main, run_all
from bench.autoscaling.run import BenchSettings, run_one, to_open_arrivals
from bench.autoscaling.simulator import Simulator
from bench.autoscaling.traces import RequestMix, TraceError, generate_arrivals, load_trace

ROOT = Path(__file__).resolve().parents[2]
STEP = ROOT / "bench" / "traces" / "step.csv"


@pytest.fixture(scope="module")
def step_results():
    trace = load_trace(STEP)
    results, series = run_all([trace], [0], ("operator", "hpa", "static-peak", "static-mean", "oracle"),
                              BenchSettings.default(), jobs=2)
    return {r.policy: r for r in results}, series


def test_static_peak_beats_static_mean_on_slo(step_results):
    res, _ = step_results
    assert res["static-peak"].slo_attainment > res["static-mean"].slo_attainment + 0.2
    assert res["static-mean"].n_429 > 0 and res["static-peak"].n_429 == 0


def test_oracle_costs_no_more_than_policies_that_serve_as_well(step_results):
    res, _ = step_results
    oracle = res["oracle"]
    for name, r in res.items():
        if r.slo_attainment >= oracle.slo_attainment:
            assert oracle.gpu_hours <= r.gpu_hours + 1e-9, name
    assert oracle.gpu_hours < res["static-peak"].gpu_hours


def test_operator_scales_up_soon_after_the_step(step_results):
    res, _ = step_results
    up = res["operator"].first_scale_up_s
    assert up is not None and up <= 45  # a 15 s tick after a 15 s scrape


def test_cost_accounting_is_consistent(step_results):
    res, _ = step_results
    s = BenchSettings.default()
    static = res["static-peak"]
    # a static fleet of N GPUs for the whole trace costs N * duration
    duration_h = load_trace(STEP).duration / 3600
    assert static.gpu_hours / duration_h == pytest.approx(round(static.gpu_hours / duration_h), abs=1e-6)
    # nothing is cheaper than the physical limit
    for r in res.values():
        assert r.cost_ratio >= 1.0
        assert r.cost_per_mtok == pytest.approx(r.gpu_hours * s.gpu_price_per_hour / (r.served_tokens / 1e6))


def test_same_seed_same_result_other_seed_differs():
    trace = load_trace(STEP).scaled(0.25)
    s = BenchSettings.default()
    a = run_one("operator", trace, 3, s)
    b = run_one("operator", trace, 3, s)
    c = run_one("operator", trace, 4, s)
    assert (a.slo_attainment, a.gpu_hours, a.p99, a.actions) == (b.slo_attainment, b.gpu_hours, b.p99, b.actions)
    assert np.array_equal(a.timeline["latency"], b.timeline["latency"])
    assert (a.slo_attainment, a.p99) != (c.slo_attainment, c.p99)


def test_idle_replica_latency_is_its_service_time():
    # one request alone on an idle replica: one batch of its inputs, nothing else
    trace = load_trace(STEP)
    arr = generate_arrivals(trace, 0, RequestMix())
    e = BenchSettings.default().engine
    sim = Simulator(e, replicas0=1, arrivals=to_open_arrivals(arr))
    sim.advance_to(float(arr.t[0]) + 5.0)
    res = sim.results()
    inputs = int(arr.inputs[0])
    per_input = int(res.tokens[0]) // inputs
    expected = e.batch_seconds(per_input * inputs, per_input * per_input * inputs)
    assert res.status[0] == 200
    assert res.done[0] - res.t[0] == pytest.approx(expected)


def test_bad_trace_is_refused_with_the_field(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("time_s,requests_per_second\n0,10\n60,ten\n")
    with pytest.raises(TraceError, match=r"requests_per_second='ten'"):
        load_trace(p)
    p.write_text("time_s,rps\n0,10\n60,10\n")
    with pytest.raises(TraceError, match="missing"):
        load_trace(p)


def test_cli_quick_with_user_trace_and_service(tmp_path, capsys):
    trace = tmp_path / "mine.csv"
    trace.write_text("# name: mine\ntime_s,requests_per_second\n0,30\n300,30\n")
    svc = tmp_path / "svc.yaml"
    svc.write_text("spec:\n  engine: {maxBatchTokens: 16384}\n  autoscaling: {minReplicas: 1, maxReplicas: 4}\n")
    rc = main(["--quick", "--trace", str(trace), "--service", str(svc), "--policies", "operator,static-mean",
               "--jobs", "1", "--gpu-price", "2.0"])
    out = capsys.readouterr().out
    assert rc == 0 and "== mine" in out and "operator" in out and "static-mean" in out
    svc.write_text("spec:\n  autoscaling: {minReplicas: 5, maxReplicas: 4}\n")
    assert main(["--quick", "--trace", str(trace), "--service", str(svc)]) == 2
    assert "minReplicas" in capsys.readouterr().err
    assert math.isfinite(BenchSettings.default().engine.peak_tokens_per_second())


def test_ready_at_step_is_reported(step_results):
    res, _ = step_results
    assert res["static-peak"].ready_at_step == 10  # sized for the 5x peak at 70%: every replica Ready at t=0
    assert 1 <= res["operator"].ready_at_step < res["static-peak"].ready_at_step


def test_projecting_demand_under_429s_cuts_429s_after_a_step_at_no_cost(monkeypatch):
    # Seed 1 of the step trace: 2 Ready replicas meet a 5x step; the 1-minute rates show a quarter of it per tick.
    # With the projection off (a window of one tick: nothing left to project) the fleet waits a tick longer for
    # capacity while a quarter of the requests are refused.
    import tei_operator.autoscaling.policy as policy

    trace, s = load_trace(STEP), BenchSettings.default()
    arrivals = generate_arrivals(trace, 1, s.mix)
    on = run_one("operator", trace, 1, s, arrivals)
    monkeypatch.setattr(policy, "RATE_WINDOW_TICKS", 1)
    off = run_one("operator", trace, 1, s, arrivals)
    assert on.n_429 < 0.95 * off.n_429
    assert on.gpu_hours <= 1.02 * off.gpu_hours
