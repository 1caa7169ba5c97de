"""The chart rendered by the real helm binary (no cluster): lint, defaults, watchNamespaces mode, monitoring,
schema errors that name the field, and the CRDs identical to the pydantic models."""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap

import pytest
import yaml

from tei_operator.api.crd import generate_crds

from . import CHART, KUBE_VERSION, by_kind, helm, one, render, template, values_file

ALL_ON = {
    "watchNamespaces": ["search", "rag"],
    "image": {"repository": "registry.example.com/mirror/tei-operator",
              "digest": "sha256:" + "a" * 64},
    "imagePullSecrets": ["mirror-pull"],
    "crds": {"enabled": True, "keep": False},
    "operator": {"metricsSource": "prometheus", "prometheusUrl": "http://prometheus.monitoring.svc:9090",
                 "teiImageRepository": "registry.example.com/mirror/tei", "teiVersion": "1.9.2",
                 "autoscalerTickSeconds": 10, "logFormat": "plain",
                 "extraEnv": [{"name": "TEI_OPERATOR_MAX_PENDING_REPLICAS", "value": "2"}]},
    "monitoring": {"podMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
                   "serviceMonitor": {"enabled": True},
                   "operatorServiceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
                   "prometheusRule": {"enabled": True, "alertLabels": {"team": "search"}},
                   "dashboard": {"enabled": True, "namespace": "monitoring"}},
    "priorityClassName": "system-cluster-critical",
}


def env_of(deployment: dict) -> dict[str, str]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in container["env"]}


def rules_of(role: dict) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
            for v in rule["verbs"]}


def test_lint_strict_with_default_and_non_default_values(tmp_path):
    helm("lint", "--strict", str(CHART))
    values = tmp_path / "all-on.yaml"
    values.write_text(yaml.safe_dump(ALL_ON))
    helm("lint", "--strict", str(CHART), "-f", str(values))


def test_default_operator_deployment_is_locked_down():
    deployment = one(render(), "Deployment")
    spec = deployment["spec"]
    # two replicas, one leader: a rolling update never takes the last one away before its successor is up
    assert spec["replicas"] == 2 and spec["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    container = pod["containers"][0]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
    probe = container["livenessProbe"]["httpGet"]
    assert probe == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert {"name": "health", "containerPort": 8080, "protocol": "TCP"} in container["ports"]
    assert {"name": "metrics", "containerPort": 8081, "protocol": "TCP"} in container["ports"]
    env = env_of(deployment)
    assert env["TEI_OPERATOR_HEALTH_HOST"] == "0.0.0.0"
    assert env["TEI_OPERATOR_METRICS_PORT"] == "8081"
    assert env["TEI_OPERATOR_NAMESPACES"] == ""
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert container["image"] == f"ghcr.io/tei-operator/tei-operator:{app_version}"  # what the release publishes
    assert pod["serviceAccountName"] == one(render(), "ServiceAccount")["metadata"]["name"]


def test_default_runs_two_replicas_with_leader_election_a_pdb_and_a_spread():
    objects = render()
    deployment = one(objects, "Deployment")
    env = env_of(deployment)
    assert env["TEI_OPERATOR_LEADER_ELECTION"] == "true"
    assert env["TEI_OPERATOR_LEADER_ELECTION_LEASE_NAME"] == "tei-tei-operator"
    assert (env["TEI_OPERATOR_LEADER_ELECTION_LEASE_DURATION_SECONDS"],
            env["TEI_OPERATOR_LEADER_ELECTION_RENEW_DEADLINE_SECONDS"],
            env["TEI_OPERATOR_LEADER_ELECTION_RETRY_PERIOD_SECONDS"]) == ("8", "6", "1")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    lease_ns = next(e for e in container["env"] if e["name"] == "TEI_OPERATOR_LEADER_ELECTION_NAMESPACE")
    assert lease_ns["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"] == {"minAvailable": 1, "selector": deployment["spec"]["selector"]}
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread == [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
                       "labelSelector": deployment["spec"]["selector"]}]
    # the Lease: create (no name possible), get/update of the release's Lease only, in the release namespace
    roles = {r["metadata"]["name"]: r for r in by_kind(objects, "Role")}
    lease_role = roles["tei-tei-operator-leader-election"]
    assert lease_role["metadata"]["namespace"] == "tei-system"
    assert lease_role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["tei-tei-operator"],
         "verbs": ["get", "update"]}]
    binding = one(objects, "RoleBinding")
    assert binding["roleRef"]["name"] == lease_role["metadata"]["name"]
    assert binding["subjects"][0]["name"] == deployment["spec"]["template"]["spec"]["serviceAccountName"]
    # the metrics Service reaches every replica's metrics port
    services = {s["metadata"]["name"]: s for s in by_kind(objects, "Service")}
    metrics = services["tei-tei-operator-metrics"]
    assert metrics["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert metrics["spec"]["ports"] == [{"name": "metrics", "port": 8081, "targetPort": "metrics", "protocol": "TCP"}]


def test_a_single_replica_without_leader_election_is_replaced_with_recreate():
    objects = render({"replicaCount": 1, "leaderElection": {"enabled": False}})
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert env_of(deployment)["TEI_OPERATOR_LEADER_ELECTION"] == "false"
    assert by_kind(objects, "PodDisruptionBudget") == [] and by_kind(objects, "RoleBinding") == []
    assert "topologySpreadConstraints" not in deployment["spec"]["template"]["spec"]
    # one replica with election: no PDB (minAvailable 1 of 1 would block every drain)
    assert by_kind(render({"replicaCount": 1}), "PodDisruptionBudget") == []
    assert by_kind(render({"operator": {"metricsPort": 0}}), "Service")[0]["metadata"]["name"] == "tei-tei-operator"


@pytest.mark.parametrize(("values", "message"), [
    ({"replicaCount": 2, "leaderElection": {"enabled": False}}, "replicaCount > 1 needs leaderElection.enabled"),
    ({"leaderElection": {"enabled": True, "renewDeadlineSeconds": 8}},
     "leaderElection.renewDeadlineSeconds must be below leaderElection.leaseDurationSeconds"),
    ({"leaderElection": {"enabled": True, "retryPeriodSeconds": 5}},
     "leaderElection.retryPeriodSeconds x 1.2 must be below leaderElection.renewDeadlineSeconds"),
    ({"podDisruptionBudget": {"minAvailable": 2}}, "podDisruptionBudget.minAvailable must be below replicaCount"),
    ({"replicaCount": 0}, "/replicaCount"),
    ({"operator": {"metricsPort": 80}}, "/operator/metricsPort"),
])
def test_unsafe_ha_values_are_refused_naming_the_field(values, message):
    result = template(values, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_default_is_cluster_wide_rbac():
    objects = render()
    # the only namespaced RBAC is the Lease's, in the release namespace
    assert [r["metadata"]["name"] for r in by_kind(objects, "Role") + by_kind(objects, "RoleBinding")] == \
        ["tei-tei-operator-leader-election"] * 2
    rules = rules_of(one(objects, "ClusterRole"))
    for needed in [("tei-operator.io", "embeddingservices", "watch"), ("tei-operator.io", "rerankerservices/status", "patch"),
                   ("apps", "deployments", "create"), ("apps", "deployments/scale", "patch"),
                   ("", "services", "patch"), ("policy", "poddisruptionbudgets", "create"),
                   ("", "pods/proxy", "get"), ("", "events", "create"), ("events.k8s.io", "events", "create"),
                   ("", "nodes", "list"), ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
                   ("", "namespaces", "watch"),
                   # the managed model cache (spec.cache.managed): its claim and download Jobs
                   ("", "persistentvolumeclaims", "create"), ("batch", "jobs", "create"), ("batch", "jobs", "watch"),
                   ("batch", "jobs", "delete")]:
        assert needed in rules, needed
    assert not {r for r in rules if r[1] == "secrets" or "*" in r}
    assert ("tei-operator.io", "embeddingservices", "delete") not in rules
    binding = one(objects, "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "tei-tei-operator", "namespace": "tei-system"}]


def test_watch_namespaces_gives_roles_there_and_a_small_cluster_role():
    objects = render({"watchNamespaces": ["search", "rag"]})
    roles = [r for r in by_kind(objects, "Role") if not r["metadata"]["name"].endswith("-leader-election")]
    bindings = [b for b in by_kind(objects, "RoleBinding") if not b["metadata"]["name"].endswith("-leader-election")]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["rag", "search"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["rag", "search"]
    assert ("apps", "deployments/scale", "patch") in rules_of(roles[0])
    cluster_rules = rules_of(one(objects, "ClusterRole"))
    assert {r[1] for r in cluster_rules} == {"nodes", "customresourcedefinitions", "namespaces"}
    assert {r[2] for r in cluster_rules} == {"get", "list", "watch"}
    assert env_of(one(objects, "Deployment"))["TEI_OPERATOR_NAMESPACES"] == "search,rag"


def test_settings_values_become_environment():
    env = env_of(one(render(ALL_ON), "Deployment"))
    assert env["TEI_OPERATOR_PROMETHEUS_URL"] == "http://prometheus.monitoring.svc:9090"
    assert env["TEI_OPERATOR_METRICS_SOURCE"] == "prometheus"
    assert env["TEI_OPERATOR_IMAGE_REPOSITORY"] == "registry.example.com/mirror/tei"
    assert env["TEI_OPERATOR_TEI_VERSION"] == "1.9.2"
    assert env["TEI_OPERATOR_AUTOSCALER_TICK_SECONDS"] == "10"
    assert env["TEI_OPERATOR_LOG_FORMAT"] == "plain"
    assert env["TEI_OPERATOR_MAX_PENDING_REPLICAS"] == "2"
    assert env["TEI_OPERATOR_CACHE_DOWNLOAD_IMAGE"] == "python:3.12-slim"
    assert env["TEI_OPERATOR_CACHE_JOB_BACKOFF_LIMIT"] == "3"
    assert "TEI_OPERATOR_PROMETHEUS_URL" not in env_of(one(render(), "Deployment"))


def test_image_digest_wins_over_tag():
    container = one(render(ALL_ON), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example.com/mirror/tei-operator@sha256:" + "a" * 64


def test_monitoring_is_off_by_default_and_complete_when_on():
    kinds = {o["kind"] for o in render()}
    assert not kinds & {"PodMonitor", "ServiceMonitor", "PrometheusRule", "ConfigMap"}
    objects = render(ALL_ON)
    pod_monitor = one(objects, "PodMonitor")
    assert pod_monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert pod_monitor["spec"]["namespaceSelector"] == {"matchNames": ["search", "rag"]}
    relabel = pod_monitor["spec"]["podMetricsEndpoints"][0]["relabelings"]
    assert {"sourceLabels": ["__meta_kubernetes_pod_label_tei_operator_io_service"], "targetLabel": "tei_service"} in relabel
    assert one(render({"monitoring": {"podMonitor": {"enabled": True}}}), "PodMonitor")["spec"]["namespaceSelector"] == {"any": True}
    rule = one(objects, "PrometheusRule")
    alerts = {r["alert"]: r for r in rule["spec"]["groups"][0]["rules"]}
    assert set(alerts) == {"TEIRequestLatencyP99High", "TEIQueueDepthHigh", "TEIRequestsRejected", "TEIServiceNotReady",
                           "TEIServiceReplicasUnavailable"}
    assert alerts["TEIRequestLatencyP99High"]["expr"].strip().endswith("> 0.1")
    assert alerts["TEIQueueDepthHigh"]["expr"].strip().endswith("> 20")
    assert alerts["TEIQueueDepthHigh"]["labels"] == {"severity": "warning", "team": "search"}
    assert "{{ $labels.tei_service }}" in alerts["TEIServiceNotReady"]["annotations"]["summary"]
    operator_alerts = {r["alert"]: r for r in rule["spec"]["groups"][1]["rules"]}
    assert rule["spec"]["groups"][1]["name"] == "tei-operator"
    assert set(operator_alerts) == {"TEIOperatorDown", "TEIOperatorNoLeader", "TEIOperatorReconcileErrors",
                                    "TEIOperatorAutoscalerStale", "TEIOperatorMetricsUnavailable"}
    assert 'up{job="tei-tei-operator-metrics", namespace="tei-system"}' in operator_alerts["TEIOperatorDown"]["expr"]
    monitors = {m["metadata"]["name"]: m for m in by_kind(objects, "ServiceMonitor")}
    operator_monitor = monitors["tei-tei-operator-operator"]
    metrics_service = next(s for s in by_kind(objects, "Service") if s["metadata"]["name"].endswith("-metrics"))
    # it selects the metrics Service (and only it: the health Service lacks the metrics label) and its port
    assert operator_monitor["spec"]["selector"]["matchLabels"].items() <= metrics_service["metadata"]["labels"].items()
    assert "tei-operator.io/metrics" in operator_monitor["spec"]["selector"]["matchLabels"]
    assert operator_monitor["spec"]["endpoints"][0]["port"] == metrics_service["spec"]["ports"][0]["name"]
    assert operator_monitor["spec"]["namespaceSelector"] == {"matchNames": ["tei-system"]}
    assert operator_monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    dashboard = one(objects, "ConfigMap")
    assert dashboard["metadata"]["namespace"] == "monitoring"
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["tei-services.json"])["uid"] == "tei-operator-services"
    assert json.loads(dashboard["data"]["tei-operator.json"])["uid"] == "tei-operator-operator"


def test_not_ready_alerts_select_the_operators_deployments_in_kube_state_metrics():
    rule = one(render({"monitoring": {"prometheusRule": {"enabled": True, "notReadyFor": "30m"}}}), "PrometheusRule")
    alerts = {r["alert"]: r for r in rule["spec"]["groups"][0]["rules"]}
    for name, severity in (("TEIServiceNotReady", "critical"), ("TEIServiceReplicasUnavailable", "warning")):
        alert = alerts[name]
        assert alert["for"] == "30m" and alert["labels"]["severity"] == severity
        assert 'kube_deployment_labels{label_app_kubernetes_io_managed_by="tei-operator"}' in alert["expr"]
        assert "up{" not in alert["expr"] and "up)" not in alert["expr"]
        assert alert["expr"].count("(") == alert["expr"].count(")"), alert["expr"]
    # a custom pod selector becomes the kube-state-metrics label matchers, key by key
    selector = {"app.kubernetes.io/managed-by": "tei-operator", "platform.example.com/tier": "gpu"}
    rule = one(render({"monitoring": {"teiPodSelector": selector, "prometheusRule": {"enabled": True}}}),
               "PrometheusRule")
    expr = {r["alert"]: r["expr"] for r in rule["spec"]["groups"][0]["rules"]}["TEIServiceNotReady"]
    assert ('kube_deployment_labels{label_app_kubernetes_io_managed_by="tei-operator", '
            'label_platform_example_com_tier="gpu"}') in expr


def test_crds_render_as_the_models_generate_them():
    rendered = {c["metadata"]["name"]: c for c in by_kind(render(), "CustomResourceDefinition")}
    generated = {c["metadata"]["name"]: c for c in generate_crds()}
    assert rendered.keys() == generated.keys()
    for name, crd in rendered.items():
        assert crd["spec"] == generated[name]["spec"], f"{name} drifted: run `make crds`"
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"


def test_crds_can_be_left_out_or_not_kept():
    assert by_kind(render({"crds": {"enabled": False, "keep": True}}), "CustomResourceDefinition") == []
    for crd in by_kind(render({"crds": {"enabled": True, "keep": False}}), "CustomResourceDefinition"):
        assert "helm.sh/resource-policy" not in crd["metadata"]["annotations"]


def test_helm_test_hook_checks_the_health_endpoint():
    objects = [o for o in render(include_tests=True) if o["kind"] == "Pod"]
    assert len(objects) == 1
    pod = objects[0]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = pod["spec"]["containers"][0]["args"][0]
    assert "http://tei-tei-operator.tei-system.svc:8080/healthz" in script
    assert pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize(("values", "message"), [
    ({"operator": {"logFormat": "xml"}}, "/operator/logFormat"),
    ({"operator": {"metricsSource": "prometheus"}}, "/operator/prometheusUrl"),
    ({"operator": {"autoscalerTickSeconds": 0}}, "/operator/autoscalerTickSeconds"),
    ({"watchNamespaces": ["Not_A_Namespace"]}, "/watchNamespaces/0"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ({"image": {"digest": "latest"}}, "/image/digest"),
    ({"monitoring": {"prometheusRule": {"for": "ten minutes"}}}, "/monitoring/prometheusRule/for"),
    ({"replicas": 2}, "additional properties 'replicas' not allowed"),
])
def test_bad_values_are_refused_naming_the_field(values, message):
    result = template(values, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_existing_service_account_must_be_named():
    result = template({"serviceAccount": {"create": False}}, check=False)
    assert result.returncode != 0
    assert "serviceAccount.name is required" in result.stderr
    objects = render({"serviceAccount": {"create": False, "name": "platform-sa"}})
    assert by_kind(objects, "ServiceAccount") == []
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "platform-sa"


# ---------------------------------------------------------------- NOTES.txt

def notes(values: dict | None, tmp_path) -> str:
    """NOTES.txt as `helm install` prints it. `helm template` does not render NOTES.txt, so a copy of the chart gets
    a ConfigMap template whose data is NOTES.txt rendered with `tpl` (same values, same helpers)."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    (chart / "notes-under-test.txt").write_text((chart / "templates" / "NOTES.txt").read_text())
    (chart / "templates" / "zz-notes-under-test.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\ndata:\n  notes: |\n"
        '{{ tpl (.Files.Get "notes-under-test.txt") . | indent 4 }}\n')
    args = ["template", "tei", str(chart), "--namespace", "tei-system", "--kube-version", KUBE_VERSION,
            "--show-only", "templates/zz-notes-under-test.yaml"]
    return yaml.safe_load(helm(*args, *values_file(values, tmp_path / "values")).stdout)["data"]["notes"]


def inline_manifest(text: str) -> dict:
    """The manifest between `<<'EOF'` and `EOF` in the notes."""
    block = text.split("<<'EOF'\n", 1)[1].split("\nEOF\n", 1)[0]
    return yaml.safe_load(textwrap.dedent(block))


def pasted_heredoc(text: str) -> str:
    """What a user pastes: from the `kubectl apply ... <<'EOF'` line (its indentation dropped) to the end."""
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if "<<'EOF'" in line)
    return "\n".join([lines[first].strip()] + lines[first + 1:]) + "\n"


def test_the_notes_heredoc_ends_when_pasted_into_a_shell(tmp_path):
    # An indented closing EOF never ends a heredoc: the shell would wait for more input forever. Paste the block
    # into bash with kubectl standing in as `cat` (the rest of the notes becomes harmless `:` lines) and check that
    # the heredoc ends and hands over exactly the manifest.
    text = notes({"watchNamespaces": ["search"]}, tmp_path)
    block = pasted_heredoc(text).split("\nEOF\n", 1)
    assert len(block) == 2, "no closing EOF at the left margin: a pasted heredoc would never end"
    script = "kubectl() { cat; }\n" + block[0] + "\nEOF\necho PASTE-ENDED\n"
    result = subprocess.run(["bash", "-s"], input=script, capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stderr
    manifest_text, ended, rest = result.stdout.partition("PASTE-ENDED")
    assert ended and rest.strip() == "", "the heredoc swallowed what follows it"
    assert yaml.safe_load(manifest_text) == inline_manifest(text)


def test_notes_name_the_image_the_release_runs(tmp_path):
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    text = notes(None, tmp_path / "default")
    assert text.startswith(f"tei-operator {app_version} (image ghcr.io/tei-operator/tei-operator:{app_version}) is "
                           "installed"), text.splitlines()[0]
    assert "WARNING" not in text, "the default image is the published one: nothing to warn about"
    own = notes({"image": {"repository": "registry.example.com/platform/tei-operator", "tag": "dev"}},
                tmp_path / "own")
    assert "(image registry.example.com/platform/tei-operator:dev)" in own


def test_notes_carry_a_manifest_that_works_without_a_checkout(tmp_path):
    from tei_operator.api import ServiceResource

    text = notes({"watchNamespaces": ["search"], "monitoring": {"prometheusRule": {"enabled": True}}}, tmp_path)
    assert "kubectl apply -n search -f - <<'EOF'" in text
    assert "examples/ directory of\n   a checkout" in text and "-f examples/" not in text
    manifest = inline_manifest(text)
    resource = ServiceResource.from_body(manifest, default_namespace="search")  # the operator's own validation
    assert resource.kind == "EmbeddingService" and resource.spec.gpu.count == 0
    assert f"embeddingservice/{manifest['metadata']['name']} -n search" in text
    assert "--metric-labels-allowlist=deployments=[app.kubernetes.io/managed-by]" in text


# ---------------------------------------------------------------- imagePullSecrets

@pytest.mark.parametrize("secrets", [[{"name": "regcred"}], ["regcred"], [{"name": "regcred"}, "mirror-pull"]])
def test_image_pull_secrets_in_the_pod_spec_form_or_by_name(secrets):
    # `[{name: regcred}]` is how every other chart and the pod spec write it; a bare name is accepted too.
    pod_spec = one(render({"imagePullSecrets": secrets}), "Deployment")["spec"]["template"]["spec"]
    names = [s["name"] if isinstance(s, dict) else s for s in secrets]
    assert pod_spec["imagePullSecrets"] == [{"name": n} for n in names]


@pytest.mark.parametrize("secrets,words", [
    ([{"secret": "regcred"}], "imagePullSecrets"),
    ([{"name": "Reg_Cred"}], "imagePullSecrets"),
    (["UPPER"], "imagePullSecrets"),
])
def test_image_pull_secrets_that_are_no_secret_names_are_refused(secrets, words):
    result = template({"imagePullSecrets": secrets}, check=False)
    assert result.returncode != 0 and words in result.stderr


# ---------------------------------------------------------------- the TEI NetworkPolicy admits the chart's operator

def test_a_services_network_policy_admits_the_operator_pods_this_chart_runs():
    # spec.networkPolicy admits the operator's scraper by TEI_OPERATOR_OPERATOR_POD_LABELS (default) in the
    # namespace read from the ServiceAccount mount: both must hold for the pods the chart runs, or turning a
    # policy on would blind the autoscaler.
    from tei_operator.api import ServiceResource
    from tei_operator.render import render_children
    from tei_operator.settings import Settings

    template = one(render({}), "Deployment")["spec"]["template"]
    env = {e["name"]: e.get("value") for e in template["spec"]["containers"][0].get("env") or []}
    labels = env.get("TEI_OPERATOR_OPERATOR_POD_LABELS")
    settings = Settings(operator_namespace="tei-system", **({"operator_pod_labels": labels} if labels else {}))
    assert settings.operator_pod_labels.items() <= template["metadata"]["labels"].items()
    assert template["spec"].get("automountServiceAccountToken") is not False
    service = ServiceResource.from_body({
        "apiVersion": "tei-operator.io/v1alpha1", "kind": "EmbeddingService",
        "metadata": {"name": "x", "namespace": "search"},
        "spec": {"model": {"id": "m"}, "networkPolicy": {"enabled": True, "prometheus": []}}})
    (rule,) = render_children(service, settings).network_policy["spec"]["ingress"]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "tei-system"}},
                             "podSelector": {"matchLabels": settings.operator_pod_labels}}]
