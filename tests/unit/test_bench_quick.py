"""The autoscaling benchmark end to end on the real simulator: `--quick` mode (what CI runs), and properties of
single runs that can fail (cost accounting, determinism, KEDA's ignoreNullValues during a metrics outage)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.autoscaling.__main__ import main
from bench.autoscaling.classes import QUERY
from bench.autoscaling.experiment import families, grid, make_policy
from bench.autoscaling.policies import Static
from bench.autoscaling.run import ONLINE, load_bench_profile, simulate
from bench.autoscaling.traces import load_trace, write_trace
from bench.autoscaling.workload import make_workload

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def quick():
    out: list = []
    code = main(["--quick", "--jobs", "2"], outcome=out)
    return code, out[0]


def test_quick_mode_runs_every_policy_and_tunes_on_train(quick):
    code, out = quick
    assert code == 0
    fams = set(families())
    assert {"hpa-queue", "hpa-rate", "keda", "keda-strict", "kpa", "static", "oracle"} <= fams
    assert {r.family for r in out.test} == fams
    assert {r.split for r in out.train} == {"train"} and {r.trace for r in out.train} == {"step"}
    profile = load_bench_profile()
    step = load_trace(ROOT / "bench" / "traces" / "train" / "step.csv").scaled(0.25)
    for f, (k, why) in out.tuned.items():
        if f != "keda-strict":
            assert k in grid(f, ONLINE, step, profile, quick=True), f
        assert why


def test_quick_mode_accounts_cost_consistently(quick):
    _, out = quick
    for r in out.test + out.pools:
        assert r.gpu_hours > 0 and r.cost_ratio >= 1.0, (r.family, r.trace)
        if r.family == "static":
            # a static fleet is billed for its replicas over the whole trace, no more
            duration_h = max(r.timeline["t"]) / 3600 if r.timeline else None
            assert r.actions == 0
            if duration_h:
                assert r.gpu_hours == pytest.approx(r.knob * (duration_h + 10 / 3600), rel=0.02)
    q = [r.classes[QUERY] for r in out.test]
    assert all(0 <= c.attainment <= 1 and c.requests > 0 for c in q)


def test_quick_mode_measures_mixed_and_split_pools(quick):
    _, out = quick
    pools = {(r.trace, r.pool) for r in out.pools}
    assert {("ingest", "online"), ("ingest", "ingest"), ("ingest", "mixed")} <= pools
    mixed = next(r for r in out.pools if r.pool == "mixed")
    assert {0, 1, 2} <= set(mixed.classes)  # queries, documents and the bulk job share the one pool
    ingest = next(r for r in out.pools if r.pool == "ingest")
    assert ingest.bulk_tokens > 0 and 0 not in ingest.classes


def small_trace(tmp_path, rows, extra=None):
    p = tmp_path / "t.csv"
    write_trace(p, "t", "test", rows, extra)
    return load_trace(p)


def test_keda_ignore_null_values_true_scales_down_in_an_outage_and_false_holds(tmp_path):
    tr = small_trace(tmp_path, [{"time_s": 0, "query_rps": 250}, {"time_s": 1200, "query_rps": 250}],
                     {"metrics_outage": "300-1000"})
    profile = load_bench_profile()
    w = make_workload(tr, 3)
    res = {}
    for fam in ("keda", "keda-strict", "hpa-queue"):
        res[fam] = simulate(make_policy(fam, 0.5, ONLINE, tr, profile), tr, w, ONLINE, profile, 3, "t", fam)
    assert res["keda"].outage_scale_downs >= 1
    assert res["keda-strict"].outage_scale_downs == 0 and res["hpa-queue"].outage_scale_downs == 0
    # scaling down a loaded fleet costs queries their SLO
    assert res["keda"].query_attainment < res["keda-strict"].query_attainment


def test_same_seed_same_result_and_static_billing(tmp_path):
    tr = small_trace(tmp_path, [{"time_s": 0, "query_rps": 150}, {"time_s": 300, "query_rps": 150}])
    profile = load_bench_profile()
    a = simulate(Static("static", 2), tr, make_workload(tr, 5), ONLINE, profile, 5)
    b = simulate(Static("static", 2), tr, make_workload(tr, 5), ONLINE, profile, 5)
    c = simulate(Static("static", 2), tr, make_workload(tr, 6), ONLINE, profile, 6)
    assert a.classes[QUERY] == b.classes[QUERY] and a.gpu_hours == b.gpu_hours
    assert a.classes[QUERY].requests != c.classes[QUERY].requests
    assert a.gpu_hours == pytest.approx(2 * 300 / 3600)
    assert np.isfinite(a.classes[QUERY].p99) and a.classes[QUERY].p99 < 0.1


def test_bad_trace_argument_is_refused(tmp_path, capsys):
    p = tmp_path / "bad.csv"
    p.write_text("time_s,query_rps\n0,x\n10,1\n")
    assert main(["--quick", "--trace", str(p)]) == 2
    assert "query_rps='x' is not a number" in capsys.readouterr().err


def test_report_is_generated_from_the_run(quick, tmp_path):
    import re

    from bench.autoscaling.__main__ import SIMULATOR_SECTION, TRACES, QUICK_TIME_FACTOR
    from bench.autoscaling.experiment import Plan
    from bench.autoscaling.report import write

    _, out = quick
    train = [load_trace(TRACES / "train" / "step.csv").scaled(QUICK_TIME_FACTOR)]
    test = [load_trace(TRACES / "test" / n).scaled(QUICK_TIME_FACTOR) for n in ("step.csv", "ingest.csv")]
    path = tmp_path / "autoscaling.md"
    write(path, out, train, test, load_bench_profile(), Plan.quick_plan(), "python -m bench.autoscaling --quick",
          SIMULATOR_SECTION)
    text = path.read_text()
    table = text.split("| goal | measured | verdict |\n|---|---|---|\n", 1)[1].split("\n\n", 1)[0]
    rows = [line.rsplit(" | ", 1) for line in table.splitlines()]
    assert len(rows) >= 6 and all(line.startswith("| ") and line.endswith(" |") for line in table.splitlines())
    verdicts = [v[:-2] for _, v in rows]
    met = sum(1 for v in verdicts if v == "met")
    missed = sum(1 for v in verdicts if v.startswith("**NOT"))
    assert f"{met} of {len(rows)} goals met, {missed} not met" in text
    first_up = next(line for line in table.splitlines() if line.startswith("| First scale-up <= 5 s"))
    assert "tests/e2e/test_fast_scale_up.py" in first_up or "NOT MEASURED" in first_up, first_up
    # the equal-attainment table has a row per short test trace and a column per policy
    assert re.search(r"^\| step \| .+ \|$", text, re.M)
    # what each trace allows: a row per short test trace, from the same run's static fleets and oracle
    assert re.search(r"^\| step \| \d+\.\d\d \| .+ \| .+x \| .+ \|$", text.split("### Which goals a trace allows", 1)[1],
                     re.M)
    for section in ("## GPU-hours at equal attainment", "### Policies, exactly as deployed", "useCachedMetrics: false",
                    "## One mixed pool or two", "## Train set: the tuning", "## How the simulator works"):
        assert section in text
    assert (tmp_path / "img" / "autoscaling-curves.png").stat().st_size > 1000
    assert (tmp_path / "img" / "autoscaling-timelines.png").stat().st_size > 1000


def test_dynamic_policies_start_sized_for_the_first_model_load(tmp_path):
    from bench.autoscaling.run import START_UTILIZATION, demand_replicas, initial_replicas

    profile = load_bench_profile()
    # 50 queries/s for 60 s, then 350: the fleet starts sized for the 350 that arrive before a pod could load.
    tr = small_trace(tmp_path, [{"time_s": 0, "query_rps": 50}, {"time_s": 60, "query_rps": 350},
                                {"time_s": 600, "query_rps": 350}])
    need = float(demand_replicas(tr, profile, ONLINE)(100.0))
    assert initial_replicas(tr, profile, ONLINE) == int(np.ceil(need / START_UTILIZATION)) > 1
    # the same rise after the slowest cold load: sized for the first load only
    late = small_trace(tmp_path, [{"time_s": 0, "query_rps": 50}, {"time_s": 400, "query_rps": 350},
                                  {"time_s": 600, "query_rps": 350}])
    first = float(demand_replicas(late, profile, ONLINE)(0.0))
    assert initial_replicas(late, profile, ONLINE) == max(1, int(np.ceil(first / START_UTILIZATION)))
