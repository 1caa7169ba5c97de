"""The benchmark's request classes, traces and arrival generation (bench/autoscaling/classes.py, traces.py,
workload.py, make_traces.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.autoscaling.classes import (BULK, CLASSES, DOCUMENT, QUERY, RERANK, RERANK_CLASS, rerank_slo)
from bench.autoscaling.make_traces import make_all
from bench.autoscaling.traces import TraceError, load_trace, write_trace
from bench.autoscaling.workload import bulk_clients, make_workload, open_arrivals, select

ROOT = Path(__file__).resolve().parents[2]
TRACES = ROOT / "bench" / "traces"


def trace_file(tmp_path, rows, extra=None, name="t"):
    p = tmp_path / f"{name}.csv"
    write_trace(p, name, "a test trace", rows, extra)
    return load_trace(p)


def per_request(arr):
    counts = np.diff(arr.input_offsets)
    return counts, np.split(arr.input_tokens, arr.input_offsets[1:-1])


def test_classes_have_the_issues_slos_and_fixed_ids():
    assert (QUERY, DOCUMENT, BULK, RERANK) == (0, 1, 2, 3)
    assert CLASSES[QUERY].slo_seconds == 0.1 and CLASSES[DOCUMENT].slo_seconds == 2.0
    assert CLASSES[BULK].slo_seconds is None
    # the rerank target comes from the reranker's throughput: 2 x 100 pairs at 800 pairs/s
    assert RERANK_CLASS.slo_seconds == rerank_slo(800) == 0.25
    assert rerank_slo(400) == 0.5
    with pytest.raises(ValueError, match="pairs_per_second"):
        rerank_slo(0)


def test_arrivals_follow_the_trace_rates_and_class_sizes(tmp_path):
    tr = trace_file(tmp_path, [{"time_s": 0, "query_rps": 200, "document_rps": 5, "rerank_rps": 3},
                               {"time_s": 100, "query_rps": 50, "document_rps": 0, "rerank_rps": 3},
                               {"time_s": 200, "query_rps": 50, "document_rps": 0, "rerank_rps": 3}])
    a = open_arrivals(tr, seed=7)
    assert np.all(np.diff(a.t) >= 0) and a.t[0] >= 0 and a.t[-1] < 200
    assert len(a.input_offsets) == len(a.t) + 1 and a.input_offsets[-1] == len(a.input_tokens)
    assert np.all(a.conn == -1)
    first = a.t < 100
    q1 = np.count_nonzero((a.cls == QUERY) & first)
    q2 = np.count_nonzero((a.cls == QUERY) & ~first)
    assert q1 == pytest.approx(20000, rel=0.05) and q2 == pytest.approx(5000, rel=0.05)
    assert np.count_nonzero((a.cls == DOCUMENT) & ~first) == 0
    counts, toks = per_request(a)
    for c, lo_in, hi_in, lo_t, hi_t in ((QUERY, 1, 1, 8, 64), (DOCUMENT, 1, 32, 128, 512)):
        idx = np.flatnonzero(a.cls == c)
        assert counts[idx].min() >= lo_in and counts[idx].max() <= hi_in
        t = np.concatenate([toks[i] for i in idx])
        assert t.min() >= lo_t and t.max() <= hi_t
    rr = np.flatnonzero(a.cls == RERANK)
    assert counts[rr].min() >= 20 and counts[rr].max() <= 100
    # each pair is the request's one query (8-64 tokens) plus a passage (64-256 tokens)
    pairs = np.concatenate([toks[i] for i in rr])
    assert pairs.min() >= 72 and pairs.max() <= 320


def test_same_seed_same_arrivals_other_seed_differs(tmp_path):
    tr = trace_file(tmp_path, [{"time_s": 0, "query_rps": 30, "document_rps": 1}, {"time_s": 60, "query_rps": 30}])
    a, b, c = open_arrivals(tr, 1), open_arrivals(tr, 1), open_arrivals(tr, 2)
    assert np.array_equal(a.t, b.t) and np.array_equal(a.input_tokens, b.input_tokens)
    assert len(a.t) != len(c.t) or not np.array_equal(a.t, c.t)


def test_bursty_arrivals_have_the_asked_variability(tmp_path):
    rows = [{"time_s": 0, "query_rps": 100, "cv": 3.0}, {"time_s": 2000, "query_rps": 100, "cv": 3.0}]
    a = open_arrivals(trace_file(tmp_path, rows), 3)
    gaps = np.diff(a.t)
    assert len(a.t) == pytest.approx(200000, rel=0.1)
    assert gaps.std() / gaps.mean() == pytest.approx(3.0, rel=0.15)
    poisson = open_arrivals(trace_file(tmp_path, [{"time_s": 0, "query_rps": 100}, {"time_s": 2000, "query_rps": 100}],
                                       name="p"), 3)
    g = np.diff(poisson.t)
    assert g.std() / g.mean() == pytest.approx(1.0, rel=0.05)


def test_keepalive_connections_are_optional_and_per_class(tmp_path):
    tr = trace_file(tmp_path, [{"time_s": 0, "query_rps": 50, "document_rps": 5}, {"time_s": 60, "query_rps": 50}])
    a = open_arrivals(tr, 1, connections=8)
    q, d = a.conn[a.cls == QUERY], a.conn[a.cls == DOCUMENT]
    assert set(q) == set(range(8)) and set(d) <= set(range(8, 16))


def test_bulk_workers_become_closed_loop_groups(tmp_path):
    tr = trace_file(tmp_path, [{"time_s": 0, "query_rps": 1, "bulk_workers": 0},
                               {"time_s": 100, "query_rps": 1, "bulk_workers": 4},
                               {"time_s": 200, "query_rps": 1, "bulk_workers": 4},
                               {"time_s": 300, "query_rps": 1, "bulk_workers": 8},
                               {"time_s": 400, "query_rps": 1, "bulk_workers": 0},
                               {"time_s": 500, "query_rps": 1, "bulk_workers": 0}])
    groups = bulk_clients(tr, seed=5)
    assert [(g.workers, g.start_s, g.stop_s) for g in groups] == [(4, 100, 300), (8, 300, 400)]
    assert all(g.inputs_per_request == 32 and g.backoff_initial_s < g.backoff_max_s for g in groups)
    assert len({g.seed for g in groups}) == 2


def test_select_keeps_each_requests_inputs(tmp_path):
    tr = trace_file(tmp_path, [{"time_s": 0, "query_rps": 40, "document_rps": 4}, {"time_s": 50, "query_rps": 4}])
    a = open_arrivals(tr, 9)
    d = select(a, {DOCUMENT})
    assert np.all(d.cls == DOCUMENT) and len(d.t) == np.count_nonzero(a.cls == DOCUMENT)
    _, toks_all = per_request(a)
    _, toks_d = per_request(d)
    for i, j in zip(np.flatnonzero(a.cls == DOCUMENT), range(len(d.t))):
        assert np.array_equal(toks_all[i], toks_d[j])


@pytest.mark.parametrize("rows, field", [
    ("time_s,query_rps,speed\n0,1,2\n10,1,2\n", "unknown columns: ['speed']"),
    ("time_s,query_rps\n0,abc\n10,1\n", "query_rps='abc' is not a number"),
    ("time_s,query_rps\n0,1\n0,1\n", "time_s must start at 0 and increase strictly"),
    ("time_s,query_rps,cv\n0,1,0\n10,1,1\n", "cv='0' must be a finite number > 0"),
    ("time_s,query_rps,bulk_workers\n0,1,2.5\n10,1,0\n", "bulk_workers='2.5' must be a whole number"),
    ("# metrics_outage: 20-10\ntime_s,query_rps\n0,1\n10,1\n", "metrics_outage: START must be >= 0 and below END"),
    ("# gpu_quota: two\ntime_s,query_rps\n0,1\n10,1\n", "gpu_quota must be a whole number"),
    ("time_s,cv\n0,1\n10,1\n", "at least one of"),
])
def test_bad_trace_is_refused_naming_the_field(tmp_path, rows, field):
    p = tmp_path / "bad.csv"
    p.write_text(rows)
    with pytest.raises(TraceError) as e:
        load_trace(p)
    assert field in str(e.value) and "bad.csv" in str(e.value)


def test_old_format_is_read_as_queries(tmp_path):
    p = tmp_path / "old.csv"
    p.write_text("time_s,requests_per_second\n0,60\n600,300\n900,300\n")
    tr = load_trace(p)
    assert tr.rate_at(700.0, QUERY) == 300 and tr.classes() == [QUERY]


def test_committed_traces_are_what_make_traces_writes(tmp_path):
    written = make_all(tmp_path)
    assert {p.relative_to(tmp_path).as_posix() for p in written} == \
        {p.relative_to(TRACES).as_posix() for p in TRACES.glob("*/*.csv")}
    for p in written:
        assert p.read_text() == (TRACES / p.relative_to(tmp_path)).read_text(), p.name


def test_train_and_test_sets_differ_and_the_day_is_not_compressed():
    train = {p.stem: load_trace(p) for p in (TRACES / "train").glob("*.csv")}
    test = {p.stem: load_trace(p) for p in (TRACES / "test").glob("*.csv")}
    for name in set(train) & set(test):
        a, b = train[name], test[name]
        assert len(a.times) != len(b.times) or not np.array_equal(a.rate_at(a.times[:-1], QUERY),
                                                                   b.rate_at(b.times[:-1], QUERY)), name
    assert {"step", "spike", "noisy", "outage", "quota", "periodic", "diurnal"} <= set(test)
    day = test["diurnal"]
    assert day.duration == 86400 and day.has_bulk() and day.bulk_job_tokens
    assert test["outage"].metrics_outage and test["quota"].gpu_quota
    # the test spike is shorter than a model load; the train spike is not
    assert test["spike"].step_seconds < 60 <= train["spike"].step_seconds


def test_workload_of_a_trace_has_open_and_closed_loop_parts():
    w = make_workload(load_trace(TRACES / "test" / "ingest.csv"), seed=1)
    assert w.requests(QUERY) > 0 and w.requests(DOCUMENT) > 0 and w.requests(BULK) == 0
    assert len(w.bulk) == 1 and w.bulk[0].workers == 8
