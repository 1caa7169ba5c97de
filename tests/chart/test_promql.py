"""The chart's alerts and the dashboard's batch-fill query, evaluated by Prometheus' own engine (`promtool test
rules`) on synthetic series: the rules as `helm template` renders them, not a copy.

The kube-state-metrics series follow its deployment metrics (labels `namespace`, `deployment`, and `label_*` on
kube_deployment_labels for allow-listed keys); the TEI series follow /work/shared/TEI.md (counters without `_total`,
te_batch_next_tokens records the zero-size batch that ends every wake-up, so its le="1" bucket counts them).
promtool comes with Debian's `prometheus` package, which .ci/run installs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from . import CHART, one, render

PROMTOOL = shutil.which("promtool")


def promtool_test(tmp_path: Path, rules: list[dict], tests: list[dict]) -> subprocess.CompletedProcess:
    if PROMTOOL is None:
        pytest.fail("promtool not found: install Debian's `prometheus` package (apt-get install prometheus)")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rules}))
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(
        {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}, width=1000))
    return subprocess.run([PROMTOOL, "test", "rules", "tests.yaml"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)


def rendered_rules() -> list[dict]:
    """The PrometheusRule's groups as the chart renders them with default thresholds."""
    return one(render({"monitoring": {"prometheusRule": {"enabled": True}}}), "PrometheusRule")["spec"]["groups"]


def ksm(namespace: str, deployment: str, spec: str, available: str, managed_by: str = "tei-operator",
        instances: tuple[str, ...] = ("ksm-0",)) -> list[dict]:
    """kube-state-metrics series of one Deployment, as promtool input (values in promtool's expanding notation)."""
    series = []
    for instance in instances:
        base = f'namespace="{namespace}", deployment="{deployment}", instance="{instance}", job="kube-state-metrics"'
        series += [
            {"series": f"kube_deployment_spec_replicas{{{base}}}", "values": spec},
            {"series": f"kube_deployment_status_replicas_available{{{base}}}", "values": available},
            {"series": f'kube_deployment_labels{{{base}, label_app_kubernetes_io_managed_by="{managed_by}"}}',
             "values": "1x40"},
        ]
    return series


def expected_alert(rules: list[dict], name: str, value: str, **labels: str) -> dict:
    """The alert promtool must see: the rule's labels plus `labels`, annotations with the placeholders filled."""
    rule = next(r for g in rules for r in g["rules"] if r.get("alert") == name)

    def fill(text: str) -> str:
        for key, label in labels.items():
            text = text.replace(f"{{{{ $labels.{key} }}}}", label)
        return text.replace("{{ $value }}", value)

    return {"exp_labels": {**rule["labels"], **labels},
            "exp_annotations": {k: fill(v) for k, v in rule["annotations"].items()}}


def test_not_ready_alerts_fire_for_pending_pods_and_only_for_tei_deployments(tmp_path):
    rules = rendered_rules()
    series = (
        ksm("search", "bge-m3", "2x40", "0x40", instances=("ksm-0", "ksm-1"))  # all Pending; KSM runs twice
        + ksm("search", "rr", "3x40", "1x40")                                  # one of three available
        + ksm("search", "late", "2x40", "0x11 2x28")                           # Ready after 12 minutes
        + ksm("search", "healthy", "2x40", "2x40")
        + ksm("search", "other-app", "2x40", "0x40", managed_by="helm")        # not the operator's
        + ksm("search", "idle", "0x40", "0x40")                                # scaled to zero
    )
    pending = {"namespace": "search", "deployment": "bge-m3", "tei_service": "bge-m3"}
    partial = {"namespace": "search", "deployment": "rr", "tei_service": "rr"}
    tests = [{
        "interval": "1m",
        "input_series": series,
        "alert_rule_test": [
            # `for: 15m`: pending at 10 minutes, not firing yet
            {"eval_time": "10m", "alertname": "TEIServiceNotReady", "exp_alerts": []},
            {"eval_time": "20m", "alertname": "TEIServiceNotReady",
             "exp_alerts": [expected_alert(rules, "TEIServiceNotReady", "2", **pending)]},
            {"eval_time": "20m", "alertname": "TEIServiceReplicasUnavailable",
             "exp_alerts": [expected_alert(rules, "TEIServiceReplicasUnavailable", "2", **pending),
                            expected_alert(rules, "TEIServiceReplicasUnavailable", "2", **partial)]},
        ],
    }]
    result = promtool_test(tmp_path, rules, tests)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_notices_a_wrong_expectation(tmp_path):
    """The check above can fail: expecting the healthy Deployment to alert is refused."""
    rules = rendered_rules()
    healthy = {"namespace": "search", "deployment": "healthy", "tei_service": "healthy"}
    tests = [{"interval": "1m", "input_series": ksm("search", "healthy", "2x40", "2x40"),
              "alert_rule_test": [{"eval_time": "20m", "alertname": "TEIServiceNotReady",
                                   "exp_alerts": [expected_alert(rules, "TEIServiceNotReady", "2", **healthy)]}]}]
    result = promtool_test(tmp_path, rules, tests)
    assert result.returncode != 0 and "TEIServiceNotReady" in result.stdout + result.stderr


def test_tei_metric_alerts_pick_the_service_over_its_threshold(tmp_path):
    """Each TEI-metric alert's expression, counted per service: the busy service is over every threshold, the calm
    one under all of them. (Values as counts, so no float is compared.)"""
    rules = rendered_rules()
    exprs = {r["alert"]: r["expr"] for g in rules for r in g["rules"]}
    busy = 'namespace="search", tei_service="bge-m3", pod="bge-m3-0"'
    calm = 'namespace="search", tei_service="calm", pod="calm-0"'
    series = [
        # 16 requests a second, 1 of them refused with 429: 6% > 1%; the calm service refuses none
        {"series": f'te_request_count{{{busy}, method="batch"}}', "values": "0+960x40"},
        {"series": f'te_request_failure{{{busy}, err="overloaded"}}', "values": "0+60x40"},
        {"series": f'te_request_count{{{calm}, method="batch"}}', "values": "0+960x40"},
        {"series": f'te_request_failure{{{calm}, err="overloaded"}}', "values": "0x40"},
        # 40 inputs waiting per pod vs a threshold of 20; the calm service has 3
        {"series": f"te_queue_size{{{busy}}}", "values": "40x40"},
        {"series": f"te_queue_size{{{calm}}}", "values": "3x40"},
        # every request takes between 0.1 and 0.5 s: p99 above 0.1 s; the calm one answers within 25 ms
        {"series": f'te_request_duration_bucket{{{busy}, le="0.1"}}', "values": "0x40"},
        {"series": f'te_request_duration_bucket{{{busy}, le="0.5"}}', "values": "0+960x40"},
        {"series": f'te_request_duration_bucket{{{busy}, le="+Inf"}}', "values": "0+960x40"},
        {"series": f'te_request_duration_bucket{{{calm}, le="0.025"}}', "values": "0+960x40"},
        {"series": f'te_request_duration_bucket{{{calm}, le="0.1"}}', "values": "0+960x40"},
        {"series": f'te_request_duration_bucket{{{calm}, le="+Inf"}}', "values": "0+960x40"},
    ]
    checks = [{"expr": f"count by (namespace, tei_service) ({exprs[alert]})", "eval_time": "20m",
               "exp_samples": [{"labels": '{namespace="search", tei_service="bge-m3"}', "value": 1}]}
              for alert in ("TEIRequestsRejected", "TEIQueueDepthHigh", "TEIRequestLatencyP99High")]
    result = promtool_test(tmp_path, rules, [{"interval": "1m", "input_series": series, "promql_expr_test": checks}])
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_batch_fill_leaves_out_the_empty_batches(tmp_path):
    dashboard = json.loads((CHART / "dashboards" / "tei-services.json").read_text())
    panel = next(p for p in dashboard["panels"] if p["title"].lower().startswith("batch fill"))
    expr = (panel["targets"][0]["expr"].replace("$namespace", ".*").replace("$service", ".*")
            .replace("$max_batch_tokens", "16384"))
    series = []
    # per minute: 100 batches, 40 of them the empty end-of-wake-up batch, 60 x 8192 tokens -> fill 8192/16384
    for service, le in (("a", "1"), ("b", "1.0")):  # TEI writes le="1"; Prometheus 3 normalises it to "1.0"
        sel = f'namespace="search", tei_service="{service}", pod="{service}-0"'
        series += [
            {"series": f"te_batch_next_tokens_sum{{{sel}}}", "values": f"0+{60 * 8192}x40"},
            {"series": f"te_batch_next_tokens_count{{{sel}}}", "values": "0+100x40"},
            {"series": f'te_batch_next_tokens_bucket{{{sel}, le="{le}"}}', "values": "0+40x40"},
            {"series": f'te_batch_next_tokens_bucket{{{sel}, le="+Inf"}}', "values": "0+100x40"},
        ]
    tests = [{"interval": "1m", "input_series": series, "promql_expr_test": [{
        "expr": expr, "eval_time": "20m",
        "exp_samples": [{"labels": '{namespace="search", tei_service="a"}', "value": 0.5},
                        {"labels": '{namespace="search", tei_service="b"}', "value": 0.5}],
    }]}]
    result = promtool_test(tmp_path, [], tests)
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- the operator's own alerts (group tei-operator)

OPERATOR = 'job="tei-tei-operator-metrics", namespace="tei-system"'


def operator_alert(rules: list[dict], name: str, labels: dict[str, str], fills: dict[str, str]) -> dict:
    """The alert promtool must see, with the annotation templates in `fills` replaced by their rendered text."""
    rule = next(r for g in rules for r in g["rules"] if r.get("alert") == name)
    annotations = {}
    for key, text in rule["annotations"].items():
        for template, value in fills.items():
            text = text.replace(template, value)
        annotations[key] = text
    return {"exp_labels": {**rule["labels"], **labels}, "exp_annotations": annotations}


def test_operator_down_fires_when_no_replica_answers(tmp_path):
    rules = rendered_rules()
    series = [
        # both replicas answer for 5 minutes, then neither does
        {"series": f'up{{{OPERATOR}, pod="op-a"}}', "values": "1x5 0x30"},
        {"series": f'up{{{OPERATOR}, pod="op-b"}}', "values": "1x5 0x30"},
    ]
    down = operator_alert(rules, "TEIOperatorDown", {}, {})
    tests = [{"interval": "1m", "input_series": series, "alert_rule_test": [
        {"eval_time": "5m", "alertname": "TEIOperatorDown", "exp_alerts": []},
        {"eval_time": "9m", "alertname": "TEIOperatorDown", "exp_alerts": []},   # `for: 5m` not over yet
        {"eval_time": "15m", "alertname": "TEIOperatorDown", "exp_alerts": [down]},
    ]}, {"interval": "1m", "input_series": [  # one replica left: not down
        {"series": f'up{{{OPERATOR}, pod="op-a"}}', "values": "1x30"},
        {"series": f'up{{{OPERATOR}, pod="op-b"}}', "values": "0x30"},
    ], "alert_rule_test": [{"eval_time": "20m", "alertname": "TEIOperatorDown", "exp_alerts": []}]}]
    result = promtool_test(tmp_path, rules, tests)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_leader_fires_when_replicas_answer_but_none_leads(tmp_path):
    rules = rendered_rules()
    headless = [{"series": f'tei_operator_leader{{{OPERATOR}, pod="op-a"}}', "values": "1x2 0x30"},
                {"series": f'tei_operator_leader{{{OPERATOR}, pod="op-b"}}', "values": "0x32"}]
    # a takeover: op-a stops leading at 2m, op-b leads from 3m on
    handed_over = [{"series": f'tei_operator_leader{{{OPERATOR}, pod="op-a"}}', "values": "1x2 0x30"},
                   {"series": f'tei_operator_leader{{{OPERATOR}, pod="op-b"}}', "values": "0x3 1x30"}]
    alert = operator_alert(rules, "TEIOperatorNoLeader", {}, {})
    tests = [
        {"interval": "1m", "input_series": headless, "alert_rule_test": [
            {"eval_time": "6m", "alertname": "TEIOperatorNoLeader", "exp_alerts": []},
            {"eval_time": "10m", "alertname": "TEIOperatorNoLeader", "exp_alerts": [alert]}]},
        {"interval": "1m", "input_series": handed_over, "alert_rule_test": [
            {"eval_time": "10m", "alertname": "TEIOperatorNoLeader", "exp_alerts": []}]},
    ]
    result = promtool_test(tmp_path, rules, tests)
    assert result.returncode == 0, result.stdout + result.stderr


def test_autoscaler_stale_reads_the_leader_only(tmp_path):
    rules = rendered_rules()
    stale = "tei_operator_autoscaler_seconds_since_last_successful_tick"

    def fleet(leader_staleness: str, standby_staleness: str) -> list[dict]:
        return [{"series": f'tei_operator_leader{{{OPERATOR}, pod="op-a"}}', "values": "1x30"},
                {"series": f'tei_operator_leader{{{OPERATOR}, pod="op-b"}}', "values": "0x30"},
                {"series": f'{stale}{{{OPERATOR}, pod="op-a"}}', "values": leader_staleness},
                {"series": f'{stale}{{{OPERATOR}, pod="op-b"}}', "values": standby_staleness}]

    alert = operator_alert(rules, "TEIOperatorAutoscalerStale", {}, {"{{ $value | humanizeDuration }}": "5m 0s"})
    tests = [
        # the leader's last tick ends at 5m; from 6m it is 300 s old (> 120 s), `for: 1m`
        {"interval": "1m", "input_series": fleet("15x5 300x25", "0x30"), "alert_rule_test": [
            {"eval_time": "5m", "alertname": "TEIOperatorAutoscalerStale", "exp_alerts": []},
            {"eval_time": "10m", "alertname": "TEIOperatorAutoscalerStale", "exp_alerts": [alert]}]},
        # a standby's number never fires it
        {"interval": "1m", "input_series": fleet("15x30", "9999x30"), "alert_rule_test": [
            {"eval_time": "10m", "alertname": "TEIOperatorAutoscalerStale", "exp_alerts": []}]},
    ]
    result = promtool_test(tmp_path, rules, tests)
    assert result.returncode == 0, result.stdout + result.stderr


def test_reconcile_errors_and_unreadable_metrics_fire_per_their_own_series(tmp_path):
    rules = rendered_rules()
    reconciles = "tei_operator_reconciles_total"
    decisions = "tei_operator_autoscaler_decisions_total"
    series = [
        # one failed EmbeddingService reconcile a second, for 40 minutes; RerankerServices succeed
        {"series": f'{reconciles}{{{OPERATOR}, pod="op-a", kind="EmbeddingService", result="error"}}',
         "values": "0+60x40"},
        {"series": f'{reconciles}{{{OPERATOR}, pod="op-a", kind="RerankerService", result="error"}}',
         "values": "0x40"},
        {"series": f'{reconciles}{{{OPERATOR}, pod="op-a", kind="RerankerService", result="success"}}',
         "values": "0+60x40"},
        # four services held for unreadable metrics every minute
        {"series": f'{decisions}{{{OPERATOR}, pod="op-a", action="Hold", limit="MetricsUnavailable"}}',
         "values": "0+4x40"},
        {"series": f'{decisions}{{{OPERATOR}, pod="op-a", action="ScaleUp", limit="none"}}', "values": "0+9x40"},
    ]
    errors = operator_alert(rules, "TEIOperatorReconcileErrors", {"kind": "EmbeddingService"},
                            {"{{ $labels.kind }}": "EmbeddingService", "{{ $value | humanize }}": "1"})
    unreadable = operator_alert(rules, "TEIOperatorMetricsUnavailable", {}, {})
    tests = [{"interval": "1m", "input_series": series, "alert_rule_test": [
        {"eval_time": "12m", "alertname": "TEIOperatorReconcileErrors", "exp_alerts": []},  # `for: 15m`
        {"eval_time": "30m", "alertname": "TEIOperatorReconcileErrors", "exp_alerts": [errors]},
        {"eval_time": "8m", "alertname": "TEIOperatorMetricsUnavailable", "exp_alerts": []},  # `for: 10m`
        {"eval_time": "30m", "alertname": "TEIOperatorMetricsUnavailable", "exp_alerts": [unreadable]},
    ]}]
    result = promtool_test(tmp_path, rules, tests)
    assert result.returncode == 0, result.stdout + result.stderr
