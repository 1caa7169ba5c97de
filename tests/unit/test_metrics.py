"""The operator's own metrics (tei_operator.metrics): names, labels, and what each recording call changes, read back
through Prometheus' own text parser."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tei_operator.metrics import OperatorMetrics, resource_of


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def samples(metrics: OperatorMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, parsed as Prometheus would."""
    out = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def metrics(clock) -> OperatorMetrics:
    return OperatorMetrics(clock=clock, process_collectors=False)


def test_reconciles_are_counted_by_kind_and_result_with_their_duration(metrics):
    metrics.reconciled("EmbeddingService", "success", 0.02)
    metrics.reconciled("EmbeddingService", "success", 0.3)
    metrics.reconciled("RerankerService", "error", 1.5)
    got = samples(metrics)
    assert got[("tei_operator_reconciles_total", (("kind", "EmbeddingService"), ("result", "success")))] == 2
    assert got[("tei_operator_reconciles_total", (("kind", "RerankerService"), ("result", "error")))] == 1
    # every result exists from the start at 0, so rate() and the alerts see a series before the first error
    assert got[("tei_operator_reconciles_total", (("kind", "EmbeddingService"), ("result", "error")))] == 0
    assert got[("tei_operator_reconcile_duration_seconds_count", (("kind", "EmbeddingService"),))] == 2
    assert got[("tei_operator_reconcile_duration_seconds_bucket", (("kind", "EmbeddingService"), ("le", "0.025")))] == 1
    assert got[("tei_operator_reconcile_duration_seconds_sum", (("kind", "RerankerService"),))] == pytest.approx(1.5)


def test_api_requests_by_method_resource_and_code_and_errors_by_code(metrics):
    metrics.api_request("patch", "/apis/apps/v1/namespaces/search/deployments/bge-m3", 200)
    metrics.api_request("PATCH", "/apis/tei-operator.io/v1alpha1/namespaces/s/embeddingservices/x/status", 409)
    metrics.api_request("GET", "/api/v1/namespaces/s/pods?labelSelector=a%3Db", 0)
    got = samples(metrics)
    key = "tei_operator_api_requests_total"
    assert got[(key, (("code", "200"), ("method", "PATCH"), ("resource", "deployments")))] == 1
    assert got[(key, (("code", "409"), ("method", "PATCH"), ("resource", "embeddingservices/status")))] == 1
    assert got[(key, (("code", "0"), ("method", "GET"), ("resource", "pods")))] == 1
    assert got[("tei_operator_api_errors_total", (("code", "409"),))] == 1
    assert got[("tei_operator_api_errors_total", (("code", "0"),))] == 1
    assert ("tei_operator_api_errors_total", (("code", "200"),)) not in got


@pytest.mark.parametrize(("path", "resource"), [
    ("/apis/apps/v1/namespaces/ns/deployments", "deployments"),
    ("/apis/apps/v1/namespaces/ns/deployments/d/scale", "deployments/scale"),
    ("/api/v1/namespaces/ns/pods/p-1:80/proxy/metrics", "pods/proxy"),
    ("/api/v1/nodes", "nodes"),
    ("/api/v1/namespaces/ns", "namespaces"),
    ("/apis/coordination.k8s.io/v1/namespaces/tei-system/leases/tei-operator", "leases"),
    ("/version", "other"),
])
def test_resource_label_never_holds_a_name(path, resource):
    assert resource_of(path) == resource


def test_autoscaler_decisions_and_metric_source_errors(metrics):
    metrics.autoscaler_decision("ScaleUp", None)
    metrics.autoscaler_decision("Hold", "MaxReplicas")
    metrics.autoscaler_decision("Hold", "MaxReplicas")
    metrics.metric_source_result("scrape", None)
    metrics.metric_source_result("prometheus", "Prometheus query queue at http://p:9090 failed")
    got = samples(metrics)
    assert got[("tei_operator_autoscaler_decisions_total", (("action", "ScaleUp"), ("limit", "none")))] == 1
    assert got[("tei_operator_autoscaler_decisions_total", (("action", "Hold"), ("limit", "MaxReplicas")))] == 2
    assert got[("tei_operator_metric_source_errors_total", (("source", "scrape"),))] == 0
    assert got[("tei_operator_metric_source_errors_total", (("source", "prometheus"),))] == 1


def test_seconds_since_the_last_successful_tick_follow_the_clock(metrics, clock):
    stale = "tei_operator_autoscaler_seconds_since_last_successful_tick"
    assert metrics.value(stale) == 0  # the autoscaler does not run here (standby)
    metrics.autoscaler_started()
    clock.now += 40
    assert metrics.value(stale) == 40  # no tick yet: counted from the start, so a loop that never ticks shows
    metrics.autoscaler_tick_succeeded()
    assert metrics.value("tei_operator_autoscaler_last_successful_tick_timestamp_seconds") == 1040
    clock.now += 15
    assert metrics.value(stale) == 15
    metrics.autoscaler_stopped()
    assert metrics.value(stale) == 0


def test_tick_duration_is_observed_when_given(metrics):
    metrics.autoscaler_tick_succeeded(0.3)
    metrics.autoscaler_tick_succeeded(0.5)
    metrics.autoscaler_tick_succeeded()  # no duration: only the timestamp moves
    assert metrics.value("tei_operator_autoscaler_tick_duration_seconds_count") == 2
    assert metrics.value("tei_operator_autoscaler_tick_duration_seconds_sum") == 0.8


def test_leader_gauge_and_transitions(metrics):
    metrics.set_identity("0.1.0", "op-0_ab12cd34")
    assert metrics.value("tei_operator_leader") == 0
    metrics.set_leader(True)
    metrics.set_leader(True)  # a renewal is no transition
    metrics.set_leader(False)
    metrics.set_leader(True)
    assert metrics.value("tei_operator_leader") == 1
    assert metrics.value("tei_operator_leader_transitions_total") == 2
    assert metrics.value("tei_operator_info", {"version": "0.1.0", "identity": "op-0_ab12cd34"}) == 1


def test_queue_depth_is_read_at_scrape_time(metrics):
    depth = [3]
    metrics.watch_queue(lambda: depth[0])
    assert metrics.value("tei_operator_queue_depth") == 3
    depth[0] = 7
    assert metrics.value("tei_operator_queue_depth") == 7
    metrics.watch_queue(None)
    assert metrics.value("tei_operator_queue_depth") == 0


def test_process_collectors_are_there_by_default():
    names = {f.name for f in text_string_to_metric_families(OperatorMetrics().exposition().decode())}
    assert {"process_cpu_seconds", "python_info", "tei_operator_leader"} <= names


def test_docs_list_every_operator_series_and_alert():
    """docs/monitoring.md documents each series the module exports and each operator alert of the chart."""
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    docs = (repo / "docs" / "monitoring.md").read_text()
    metrics = OperatorMetrics(process_collectors=False)
    families = {m.name for m in metrics.registry.collect()}
    counters = {m.name for m in metrics.registry.collect() if m.type == "counter"}
    for name in families:
        shown = name + "_total" if name in counters else name
        assert f"`{shown}`" in docs, f"docs/monitoring.md does not list {shown}"
    rules = (repo / "charts" / "tei-operator" / "templates" / "prometheusrule.yaml").read_text()
    for alert in re.findall(r"- alert: (TEIOperator\w+)", rules):
        assert f"`{alert}`" in docs, f"docs/monitoring.md does not explain {alert}"
