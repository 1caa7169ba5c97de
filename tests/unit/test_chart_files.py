"""The Helm chart's files, checked without Helm or a cluster: values documented and covered by the schema, settings
wired to real Settings fields, CRD templates and crds/ identical to the pydantic models, and the monitoring objects
asking only for metrics TEI exports.

Rendering with Helm and applying to a control plane is in tests/chart/.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from tei_operator.api.crd import generate_crds
from tei_operator.emulator.metrics import METRIC_TYPES
from tei_operator.settings import Settings

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "tei-operator"
TEMPLATES = CHART / "templates"
VALUES_TEXT = (CHART / "values.yaml").read_text()
VALUES = yaml.safe_load(VALUES_TEXT)
SCHEMA = json.loads((CHART / "values.schema.json").read_text())

# Keys the chart's labels helper sets on every object; generated CRD labels with these keys are left to the helper.
CHART_LABEL_KEYS = {"helm.sh/chart", "app.kubernetes.io/name", "app.kubernetes.io/instance",
                    "app.kubernetes.io/version", "app.kubernetes.io/component", "app.kubernetes.io/part-of",
                    "app.kubernetes.io/managed-by"}


# ---------------------------------------------------------------- values.yaml and values.schema.json

def undocumented_keys(text: str) -> list[str]:
    """Keys of a values file with no comment line right above them.

    A key whose comment starts with `# --` is one value: keys nested in its default (e.g. resources.requests.cpu)
    are part of that value and need no comment of their own.
    """
    missing: list[str] = []
    stack: list[tuple[int, bool]] = []  # (indent, documented as one value)
    previous = ""
    for line in text.splitlines():
        stripped = line.strip()
        match = re.match(r"^(\s*)([A-Za-z0-9_.\-/]+):", line)
        if match and not stripped.startswith("#"):
            indent = len(match.group(1))
            while stack and stack[-1][0] >= indent:
                stack.pop()
            inside_value = any(is_value for _, is_value in stack)
            if not inside_value and not previous.startswith("#"):
                missing.append(match.group(2))
            stack.append((indent, previous.startswith("# --")))
        if stripped:
            previous = stripped
    return missing


def test_every_value_has_a_comment():
    assert undocumented_keys(VALUES_TEXT) == []


def test_the_comment_check_finds_an_undocumented_value():
    text = "# -- documented\na: 1\nsection:\n  b: 2\n# -- a default object\nresources:\n  requests: {}\n"
    assert undocumented_keys(text) == ["section", "b"]


def schema_gaps(values: dict, schema: dict, path: str = "") -> list[str]:
    """Values without a schema entry, schema entries without a value or description, at every level."""
    gaps = []
    props = schema.get("properties", {})
    for key, value in values.items():
        where = f"{path}.{key}" if path else key
        if key not in props:
            gaps.append(f"{where}: in values.yaml but not in values.schema.json")
            continue
        if not props[key].get("description"):
            gaps.append(f"{where}: no description in values.schema.json")
        if isinstance(value, dict) and props[key].get("properties"):
            gaps.extend(schema_gaps(value, props[key], where))
    for key in props:
        if key not in values and key != "global":
            gaps.append(f"{path + '.' if path else ''}{key}: in values.schema.json but not in values.yaml")
    return gaps


def test_schema_and_values_cover_each_other():
    assert schema_gaps(VALUES, SCHEMA) == []


def test_schema_refuses_unknown_keys_in_every_section():
    def closed(schema: dict, path: str) -> list[str]:
        out = []
        if schema.get("properties"):
            if schema.get("additionalProperties") is not False:
                out.append(path or "<root>")
            for key, sub in schema["properties"].items():
                out.extend(closed(sub, f"{path}.{key}" if path else key))
        return out

    assert closed(SCHEMA, "") == []


def test_chart_version_matches_the_package():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert chart["apiVersion"] == "v2"
    assert re.fullmatch(r"\d+\.\d+\.\d+", chart["version"])
    assert chart["appVersion"] == project["version"]


# ---------------------------------------------------------------- settings wiring

def deployment_env_names() -> list[str]:
    return re.findall(r"- name: (TEI_OPERATOR_[A-Z_]+)", (TEMPLATES / "deployment.yaml").read_text())


def test_every_operator_env_var_is_a_settings_field():
    names = deployment_env_names()
    assert "TEI_OPERATOR_HEALTH_HOST" in names and "TEI_OPERATOR_NAMESPACES" in names
    unknown = [n for n in names if n.removeprefix("TEI_OPERATOR_").lower() not in Settings.model_fields]
    assert unknown == [], f"the chart sets environment variables Settings does not read: {unknown}"


def test_chart_defaults_agree_with_the_operator_defaults():
    """Installing the chart should not silently change what a bare `tei-operator run` does."""
    fields = Settings.model_fields
    op = VALUES["operator"]
    assert op["teiVersion"] == fields["tei_version"].default
    assert op["teiImageRepository"] == fields["image_repository"].default
    assert op["metricsSource"] == fields["metrics_source"].default
    assert op["autoscalerTickSeconds"] == fields["autoscaler_tick_seconds"].default
    assert op["healthPort"] == fields["health_port"].default
    assert op["logLevel"] == fields["log_level"].default
    assert op["extraFieldManagers"] == fields["extra_field_managers"].default_factory() == []
    # The log format deliberately differs (json for log pipelines in-cluster), but must be one Settings accepts.
    assert op["logFormat"] in SCHEMA["properties"]["operator"]["properties"]["logFormat"]["enum"]
    for value in SCHEMA["properties"]["operator"]["properties"]["logFormat"]["enum"]:
        Settings(log_format=value)


@pytest.mark.parametrize("name", ["reloader", "istio-*", "Reloader.v2", "*", "is*tio", "a b", "a,b", ""])
def test_extra_field_managers_schema_agrees_with_the_operator(name):
    """A name the chart's schema accepts must start the operator, and one it refuses must be refused there too."""
    from tei_operator.settings import SettingsError, load_settings

    items = SCHEMA["properties"]["operator"]["properties"]["extraFieldManagers"]["items"]
    chart_ok = items["minLength"] <= len(name) <= items["maxLength"] and re.search(items["pattern"], name) is not None
    try:
        operator_ok = load_settings(extra_field_managers=[name]).extra_field_managers == [name]
    except SettingsError:
        operator_ok = False
    assert chart_ok == operator_ok
    template = (TEMPLATES / "deployment.yaml").read_text()
    assert '{{ join "," .Values.operator.extraFieldManagers | quote }}' in template


# ---------------------------------------------------------------- CRDs: crds/ and the chart's templates

def generated_by_name() -> dict[str, dict]:
    return {crd["metadata"]["name"]: crd for crd in generate_crds()}


def test_crds_directory_matches_the_models():
    files = sorted((REPO / "crds").glob("*.yaml"))
    on_disk = {}
    for f in files:
        for doc in yaml.safe_load_all(f.read_text()):
            if doc:
                on_disk[doc["metadata"]["name"]] = doc
    assert on_disk == generated_by_name(), "crds/ drifted from the pydantic models: run `make crds`"


def chart_crd(path: Path) -> dict:
    """A CRD template as the object it renders to, without the chart's templated labels and annotations."""
    lines = []
    for line in path.read_text().splitlines():
        if re.fullmatch(r"\s*\{\{-?[^}]*\}\}\s*", line):  # a line that is only a template action
            continue
        if line.strip() == "helm.sh/resource-policy: keep":
            continue
        lines.append(line)
    text = re.sub(r'\{\{ "(\{\{|\}\})" \}\}', r"\1", "\n".join(lines))
    assert "{{" not in text, f"{path.name}: unexpected template action left in a generated CRD"
    return yaml.safe_load(text)


def test_chart_crd_templates_match_the_models():
    generated = generated_by_name()
    templates = sorted(TEMPLATES.glob("crd-*.yaml"))
    assert len(templates) == len(generated)
    for path in templates:
        text = path.read_text()
        assert text.startswith("{{- if .Values.crds.enabled }}"), f"{path.name} is not behind crds.enabled"
        assert "{{- if .Values.crds.keep }}\n    helm.sh/resource-policy: keep" in text
        crd = chart_crd(path)
        want = generated[crd["metadata"]["name"]]
        assert crd["spec"] == want["spec"], f"{path.name} drifted from the pydantic models: run `make crds`"
        own_labels = {k: v for k, v in (want["metadata"].get("labels") or {}).items() if k not in CHART_LABEL_KEYS}
        assert own_labels.items() <= (crd["metadata"].get("labels") or {}).items()


def test_the_drift_check_notices_a_changed_crd(tmp_path):
    path = next(TEMPLATES.glob("crd-*.yaml"))
    changed = tmp_path / path.name
    changed.write_text(path.read_text().replace("served: true", "served: false", 1))
    crd = chart_crd(changed)
    assert crd["spec"] != generated_by_name()[crd["metadata"]["name"]]["spec"]


# ---------------------------------------------------------------- templates

def resource_templates() -> list[Path]:
    return [p for p in sorted(TEMPLATES.rglob("*.yaml"))]


def test_one_kind_per_template_file():
    for path in resource_templates():
        kinds = set(re.findall(r"^kind: (\S+)", path.read_text(), flags=re.M))
        assert len(kinds) == 1, f"{path.relative_to(CHART)} holds {sorted(kinds) or 'no'} kinds"


def test_every_resource_gets_the_shared_labels_and_name():
    for path in resource_templates():
        text = path.read_text()
        assert 'include "tei-operator.labels"' in text, f"{path.name} does not use the labels helper"
        assert re.search(r'name: \{\{ include "tei-operator\.(fullname|serviceAccountName)"', text) \
            or path.name.startswith("crd-"), f"{path.name} does not take its name from a helper"


def test_rbac_never_grants_secrets_or_wildcards():
    text = (TEMPLATES / "_helpers.tpl").read_text()
    rules = text[text.index('define "tei-operator.namespacedRules"'):]
    assert "secrets" not in rules
    assert '"*"' not in rules and "'*'" not in rules


# ---------------------------------------------------------------- monitoring: dashboard and alerts

TEI_SERIES = {
    name + suffix
    for name, kind in METRIC_TYPES.items()
    for suffix in (("_bucket", "_sum", "_count") if kind == "histogram" else ("",))
}


def metric_names(promql: str) -> set[str]:
    return set(re.findall(r"\b(te_[a-z_]+)\b", promql))


def test_dashboard_shows_what_the_issue_asks_for():
    panels = dashboard()["panels"]
    titles = " | ".join(p["title"].lower() for p in panels)
    for word in ("replicas", "queue", "batch fill", "latency", "tokens per second"):
        assert word in titles, f"no dashboard panel about {word}: {titles}"
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))


def test_dashboard_and_alerts_use_only_series_tei_exports():
    dashboard = json.loads((CHART / "dashboards" / "tei-services.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs.append((TEMPLATES / "prometheusrule.yaml").read_text())
    used = set().union(*(metric_names(e) for e in exprs))
    assert used, "no TEI metric found in the dashboard or alerts"
    unknown = used - TEI_SERIES
    assert unknown == set(), f"TEI exports no such series (counters have no _total): {unknown}"


@pytest.mark.parametrize("alert", ["TEIRequestLatencyP99High", "TEIQueueDepthHigh", "TEIRequestsRejected",
                                   "TEIServiceNotReady", "TEIServiceReplicasUnavailable"])
def test_prometheus_rule_has_alert(alert):
    assert f"alert: {alert}" in (TEMPLATES / "prometheusrule.yaml").read_text()


# Deployment series kube-state-metrics exports (its docs/metrics/workload/deployment-metrics.md), for a typo check.
KSM_DEPLOYMENT_SERIES = {
    "kube_deployment_spec_replicas", "kube_deployment_status_replicas", "kube_deployment_status_replicas_available",
    "kube_deployment_status_replicas_ready", "kube_deployment_status_replicas_unavailable",
    "kube_deployment_status_replicas_updated", "kube_deployment_status_observed_generation",
    "kube_deployment_status_condition", "kube_deployment_metadata_generation", "kube_deployment_labels",
}


def alert_exprs() -> dict[str, str]:
    """alert name -> its expr block, read from the template text (the rendered objects are in tests/chart/)."""
    text = (TEMPLATES / "prometheusrule.yaml").read_text()
    found = re.findall(r"- alert: (\w+)\n\s+expr: \|\n(.*?)\n\s+for:", text, flags=re.S)
    return {name: expr for name, expr in found}


def test_not_ready_alerts_see_pods_that_never_got_a_scrape_target():
    """`up == 0` never fires for a Pending pod (no target, no `up` series): the not-Ready alerts must compare the
    Deployment's wanted and available replicas from kube-state-metrics, for the operator's Deployments only."""
    exprs = alert_exprs()
    assert set(exprs) >= {"TEIServiceNotReady", "TEIServiceReplicasUnavailable"}
    for name in ("TEIServiceNotReady", "TEIServiceReplicasUnavailable"):
        expr = exprs[name]
        assert not re.search(r"\bup\b", expr), f"{name} still reads `up`"
        used = set(re.findall(r"\b(kube_[a-z_]+)\b", expr))
        assert {"kube_deployment_spec_replicas", "kube_deployment_status_replicas_available",
                "kube_deployment_labels"} <= used, name
        assert used <= KSM_DEPLOYMENT_SERIES, f"{name}: kube-state-metrics has no {used - KSM_DEPLOYMENT_SERIES}"
        assert 'include "tei-operator.ksmDeploymentMatchers"' in expr, f"{name} is not limited to TEI Deployments"
        assert '"tei_service", "$1", "deployment"' in expr, f"{name} does not name the service"
    assert "unless on (namespace, deployment)" in exprs["TEIServiceNotReady"]


def dashboard() -> dict:
    return json.loads((CHART / "dashboards" / "tei-services.json").read_text())


def test_dashboard_batch_fill_leaves_out_empty_batches_as_the_autoscaler_does():
    from tei_operator.api.engine import EngineSpec
    from tei_operator.autoscaling.signals import NONEMPTY_BATCH_RATE_PROMQL

    panels = [p for p in dashboard()["panels"] if p["title"].lower().startswith("batch fill")]
    assert len(panels) == 1, "no batch fill panel"
    expr = panels[0]["targets"][0]["expr"]
    assert {"te_batch_next_tokens_sum", "te_batch_next_tokens_count", "te_batch_next_tokens_bucket"} <= \
        metric_names(expr)
    # the zero-size batches TEI records sit in the le="1" bucket: the same matcher as the autoscaler's query
    autoscaler_le = re.search(r'le=~"[^"]+"', NONEMPTY_BATCH_RATE_PROMQL.format(sel="x", w="5m")).group(0)
    bucket = re.search(r"te_batch_next_tokens_bucket\{([^}]*)\}", expr).group(1)
    assert autoscaler_le in bucket
    subtracted = r"_count\{[^}]*\}\[5m\]\)\)\s*-\s*sum by \(namespace, tei_service\) \(rate\(te_batch_next_tokens_bucket"
    assert re.search(subtracted, expr), "empty batches are not subtracted from the batch count"
    assert expr.rstrip().endswith("/ $max_batch_tokens")
    assert panels[0]["fieldConfig"]["defaults"]["unit"] == "percentunit"
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    box = variables["max_batch_tokens"]
    assert box["type"] == "textbox"
    assert int(box["query"]) == int(box["current"]["value"]) == EngineSpec.model_fields["max_batch_tokens"].default


def test_monitoring_selects_the_pods_and_ports_the_operator_renders():
    """The PodMonitor/ServiceMonitor defaults must match what render/ gives TEI pods and Services."""
    from tei_operator.api import ServiceResource
    from tei_operator.render import render_children

    body = yaml.safe_load((REPO / "examples" / "embedding-cpu.yaml").read_text())
    children = render_children(ServiceResource.from_body(body, default_namespace="default"), Settings())
    pod = children.deployment["spec"]["template"]
    mon = VALUES["monitoring"]
    assert mon["teiPodSelector"].items() <= pod["metadata"]["labels"].items()
    assert mon["teiPodSelector"].items() <= children.service["metadata"]["labels"].items()
    assert pod["metadata"]["labels"][mon["teiServiceLabel"]] == body["metadata"]["name"]
    assert pod["metadata"]["labels"][mon["teiComponentLabel"]] == "embedding"
    assert mon["teiMetricsPort"] in {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
    assert mon["serviceMonitor"]["port"] in {p["name"] for p in children.service["spec"]["ports"]}
    # the not-Ready alerts join kube-state-metrics' Deployment series on these labels and name the service after
    # the Deployment
    assert mon["teiPodSelector"].items() <= children.deployment["metadata"]["labels"].items()
    assert children.deployment["metadata"]["name"] == body["metadata"]["name"]


# ---------------------------------------------------------------- monitoring: the operator's own metrics

def operator_series() -> set[str]:
    """Every series name the operator's metrics module exposes (counters with _total, histograms' parts)."""
    from prometheus_client.parser import text_string_to_metric_families

    from tei_operator.metrics import OperatorMetrics

    metrics = OperatorMetrics(process_collectors=False)
    metrics.api_request("GET", "/api/v1/pods", 500)  # labelled series appear once used
    metrics.reconciled("EmbeddingService", "success", 0.1)
    metrics.autoscaler_decision("Hold", None)
    metrics.metric_source_result("scrape", "down")
    metrics.set_identity("0", "x")
    return {s.name for f in text_string_to_metric_families(metrics.exposition().decode()) for s in f.samples}


def test_operator_dashboard_and_alerts_use_only_series_the_operator_exports():
    board = json.loads((CHART / "dashboards" / "tei-operator.json").read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    exprs.append((TEMPLATES / "prometheusrule.yaml").read_text())
    used = set().union(*(set(re.findall(r"\b(tei_operator_[a-z_]+)\b", e)) for e in exprs))
    assert len(used) >= 8
    assert used - operator_series() == set(), "the operator exports no such series"
    titles = " | ".join(p["title"].lower() for p in board["panels"])
    for word in ("leader", "reconciles", "duration", "queue", "api errors", "decisions", "source errors",
                 "since the last autoscaler tick"):
        assert word in titles, f"no operator dashboard panel about {word}"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    configmap = (TEMPLATES / "dashboard-configmap.yaml").read_text()
    assert '.Files.Get "dashboards/tei-operator.json"' in configmap


def test_operator_alerts_use_the_metrics_services_job():
    """The operator alerts select `job` = the metrics Service's name, which is what a ServiceMonitor gives its
    targets, so they see exactly what operatorServiceMonitor scrapes."""
    rule = (TEMPLATES / "prometheusrule.yaml").read_text()
    service = (TEMPLATES / "service-metrics.yaml").read_text()
    assert 'name: {{ include "tei-operator.fullname" . }}-metrics' in service
    assert '(printf "%s-metrics" (include "tei-operator.fullname" .))' in rule


def test_chart_leader_election_and_metrics_defaults_agree_with_the_operator():
    fields = Settings.model_fields
    election = VALUES["leaderElection"]
    assert election["enabled"] is fields["leader_election"].default is True
    assert election["leaseDurationSeconds"] == fields["leader_election_lease_duration_seconds"].default
    assert election["renewDeadlineSeconds"] == fields["leader_election_renew_deadline_seconds"].default
    assert election["retryPeriodSeconds"] == fields["leader_election_retry_period_seconds"].default
    assert VALUES["operator"]["metricsPort"] == fields["metrics_port"].default
    assert VALUES["replicaCount"] == 2 and VALUES["podDisruptionBudget"]["minAvailable"] == 1
