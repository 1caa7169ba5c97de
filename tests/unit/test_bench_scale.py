"""bench/scale's pure parts: counting apiserver_request_total, the services it plans, the raw baseline's children,
and the table (the measuring itself needs the control plane: tests/integration/test_bench_scale.py runs --quick)."""

from __future__ import annotations

import math

from bench.scale import counts as c
from bench.scale.fleet import RAW_MANAGER, plan, raw_children
from bench.scale.report import goals, table
from bench.scale.run import RunResult
from tei_operator.settings import load_settings

METRICS = """# HELP apiserver_request_total [STABLE] Counter of apiserver requests
# TYPE apiserver_request_total counter
apiserver_request_total{code="200",component="apiserver",dry_run="",group="apps",resource="deployments",scope="resource",subresource="",verb="APPLY",version="v1"} 7
apiserver_request_total{code="201",component="apiserver",dry_run="",group="apps",resource="deployments",scope="resource",subresource="",verb="APPLY",version="v1"} 3
apiserver_request_total{code="200",component="apiserver",dry_run="",group="apps",resource="deployments",scope="resource",subresource="status",verb="PUT",version="v1"} 5
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="namespace",subresource="",verb="LIST",version="v1"} 4
apiserver_request_total{code="200",component="",dry_run="",group="",resource="",scope="",subresource="/metrics",verb="GET",version=""} 9
apiserver_request_total{code="200",component="apiserver",dry_run="",group="coordination.k8s.io",resource="leases",scope="resource",subresource="",verb="PUT",version="v1"} 60
"""


def test_request_totals_by_verb_and_resource_with_subresources_apart():
    got = c.parse_request_totals(METRICS)
    assert got[("APPLY", "deployments")] == 10  # summed over codes
    assert got[("PUT", "deployments/status")] == 5
    assert got[("LIST", "pods")] == 4
    assert ("GET", "") not in got and all(res for _, res in got)  # /metrics is no resource
    assert c.writes(got) == 15  # the Lease renewals left out
    assert c.reads(got) == 4
    assert c.applies_of_children(got) == 10  # status writes are not the child's applies


def test_delta_and_minus_keep_negative_noise():
    before = {("LIST", "pods"): 4.0, ("APPLY", "services"): 1.0}
    after = {("LIST", "pods"): 10.0, ("APPLY", "services"): 1.0, ("POST", "events"): 2.0}
    d = c.delta(after, before)
    assert d == {("LIST", "pods"): 6.0, ("POST", "events"): 2.0}
    diff = c.minus(d, {("LIST", "pods"): 1.0}, {("POST", "events"): 0.5}, scale=[2, 10])
    assert diff == {("LIST", "pods"): 4.0, ("POST", "events"): -3.0}
    assert c.writes(diff) == 0 and c.reads(diff) == 4  # a negative row (noise) counts as 0 in the totals


def test_plan_alternates_kinds_halves_autoscaled_over_20_namespaces():
    services = plan(100, "op")
    assert len({s.namespace for s in services}) == 20
    for kind in ("EmbeddingService", "RerankerService"):
        mine = [s for s in services if s.kind == kind]
        assert len(mine) == 50 and sum(s.autoscaled for s in mine) == 25
    assert len({(s.namespace, s.name) for s in services}) == 100
    assert services[0].manifest()["spec"]["autoscaling"]["enabled"] is True
    assert "autoscaling" not in services[2].manifest()["spec"]


def test_raw_children_are_the_operators_render_without_owner_and_not_labelled_as_its_own():
    service = plan(4, "raw")[0]
    children = raw_children(service, load_settings())
    assert [ch["kind"] for ch in children] == ["Deployment", "Service"]
    deployment = children[0]
    assert "ownerReferences" not in deployment["metadata"]
    assert deployment["metadata"]["labels"]["app.kubernetes.io/managed-by"] == RAW_MANAGER
    assert deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/managed-by"] == RAW_MANAGER
    assert "app.kubernetes.io/managed-by" not in deployment["spec"]["selector"]["matchLabels"]
    limits = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"


def result(n: int, raw: float, op: float, **kw) -> RunResult:
    base = dict(n=n, raw_seconds=raw, operator_seconds=op, children=2 * n, applies_per_child=1.0, create={},
                create_writes=2.0, create_reads=1.0, idle={}, idle_writes=0.0, idle_reads=0.01,
                lease_requests_per_minute=120, rss_mib=100, cpu_seconds_per_minute=1.0, ticks=4, tick_seconds=0.2,
                queries_per_tick=11, pod_reads_per_minute=10)
    base.update(kw)
    return RunResult(**base)


def test_table_has_the_median_row_per_size():
    runs = [result(100, 20, 21), result(100, 22, 30, applies_per_child=3.0), result(100, 30, 22),
            result(1000, 200, 210)]
    lines = table(runs).splitlines()
    assert len(lines) == 2 + 2
    assert lines[2].startswith("| 100 | 3 | 22.0 | 22.0 | 1.00 | 1.00 |")
    assert lines[3].startswith("| 1000 | 1 | 200.0 | 210.0 | 1.05 |")


def test_goals_say_which_are_met_at_the_largest_size():
    text = goals([result(100, 20, 21), result(1000, 200, 260, idle_writes=2.5, tick_seconds=math.nan)])
    assert "| goal (at N = 1000) |" in text
    assert "| time to all Ready <= 1.1x the raw client | 1.30x (260 s vs 200 s) | **no** |" in text
    assert "| 0 writes per service per idle minute | 2.500 | **no** |" in text
    assert "| RSS <= 200 MiB | 100 MiB | yes |" in text
    assert "n/a s" in text  # no tick measured is said, not hidden


def test_linear_cost_is_judged_on_the_writes_to_the_settle_where_measured():
    def linear_row(runs) -> str:
        return next(line for line in goals(runs).splitlines() if line.startswith("| cost growing linearly"))

    # 3 writes per service within the creating phase at N = 100, 5 at N = 1000 (a phase 10x longer holds more of
    # each service's later writes); to the settle 5.0 and 5.2.
    row = linear_row([result(100, 20, 21, create_writes=3.0, settled_writes=5.0),
                      result(1000, 200, 210, create_writes=5.0, settled_writes=5.2)])
    assert "writes 1.04 from the apply to the settle (1.67 within the creating phase)" in row
    assert row.endswith("| yes |")
    row = linear_row([result(100, 20, 21, create_writes=3.0, settled_writes=5.0),
                      result(1000, 200, 210, create_writes=5.0, settled_writes=6.0)])
    assert "writes 1.20 from the apply to the settle" in row and row.endswith("| **no** |")
    # Runs saved before the settle was measured: the creating phase's writes decide.
    row = linear_row([result(100, 20, 21, create_writes=3.0), result(1000, 200, 210, create_writes=5.0)])
    assert "writes 1.67 within the creating phase" in row and row.endswith("| **no** |")


def test_runs_saved_as_json_load_back_for_the_before_table(tmp_path):
    import json

    from bench.scale.__main__ import before_section, load_runs

    run = result(100, 20, 25, create={("APPLY", "deployments"): 3.5}, idle={("LIST", "pods"): 2.0})
    path = tmp_path / "before.json"
    path.write_text(json.dumps({"code": "commit abc1234", "command": "python -m bench.scale --sizes 100",
                                "runs": [run.to_json()]}))
    runs, info = load_runs(path)
    assert info["code"] == "commit abc1234" and len(runs) == 1
    assert runs[0].create == run.create and runs[0].idle == run.idle and runs[0].raw_seconds == 20
    # The totals follow from the saved rows (2.0 and 0.01 in the file's fields are not trusted)
    assert (runs[0].create_writes, runs[0].create_reads, runs[0].idle_writes, runs[0].idle_reads) == (3.5, 0, 0, 2.0)
    section = before_section(path)
    assert "## Before: the same benchmark on commit abc1234" in section
    assert "| 100 | 1 | 20.0 | 25.0 | 1.25 |" in section


def test_the_fast_path_cost_is_the_cpu_with_it_on_less_off_per_pod_read():
    from bench.scale.report import fast_path_cost

    assert fast_path_cost([result(100, 20, 21)]) == ""  # not measured: no table
    on = [result(300, 60, 66, cpu_seconds_per_minute=5.0, cpu_seconds_per_minute_no_fast=2.0,
                 fast_pod_reads_per_minute=4500.0, gc_seconds_per_minute=0.2, gc_seconds_per_minute_no_fast=0.1,
                 reconciles_per_minute=0.0, reconciles_per_minute_no_fast=40.0),
          result(300, 60, 66, cpu_seconds_per_minute=7.0, cpu_seconds_per_minute_no_fast=2.0,
                 fast_pod_reads_per_minute=4500.0, gc_seconds_per_minute=0.4, gc_seconds_per_minute_no_fast=0.1,
                 reconciles_per_minute=0.0, reconciles_per_minute_no_fast=60.0)]
    lines = fast_path_cost(on).splitlines()
    # medians: on 6.0, off 2.0 -> 4.0 CPU-s a minute for 4500 reads: 0.889 CPU-ms per read; GC 0.3 / 0.1; the off
    # window ran 50 reconciles a minute
    assert lines[2] == "| 300 | 6.00 | 2.00 | 4.00 | 4500 | 0.889 | 0.30 | 0.10 | 0 | 50 |"
    # Saved runs from before the measure existed load with it unknown.
    saved = result(100, 20, 21).to_json()
    for name in ("cpu_seconds_per_minute_no_fast", "fast_pod_reads_per_minute", "gc_seconds_per_minute",
                 "reconciles_per_minute_no_fast"):
        del saved[name]
    loaded = RunResult.from_json(saved)
    assert math.isnan(loaded.cpu_seconds_per_minute_no_fast) and math.isnan(loaded.gc_seconds_per_minute)
    assert math.isnan(loaded.reconciles_per_minute_no_fast)
