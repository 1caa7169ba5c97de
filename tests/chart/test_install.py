"""The chart against the real local control plane (tests/cluster): server-side dry runs of the rendered objects,
`helm install`/`upgrade`/`uninstall`, and the operator's ServiceAccount proving its RBAC is enough (and no more)
for what the operator does: create, update, scale, status and events; in watchNamespaces mode nothing elsewhere.

The `cluster` fixture errors when the control plane cannot start: nothing here is skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.cluster import free_port

from . import CHART, MONITORING_CRDS, helm, template, token_kubeconfig
from .test_render import ALL_ON

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
OUR_CRDS = ("embeddingservices.tei-operator.io", "rerankerservices.tei-operator.io")


@dataclass
class Release:
    name: str
    namespace: str
    service_account: str

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def wait_established(cluster, *crds: str) -> None:
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                    *[f"crd/{name}" for name in crds])


def install(cluster, release: str, namespace: str, *extra: str) -> Release:
    cluster.kubectl("create", "namespace", namespace)
    helm("install", release, str(CHART), "--namespace", namespace, "--wait", "--timeout", "120s", *extra,
         kubeconfig=cluster.kubeconfig)
    return Release(release, namespace, f"{release}-tei-operator")


def can_i(cluster, user: str, verb: str, resource: str, namespace: str | None = None,
          subresource: str | None = None) -> bool:
    """`kubectl auth can-i` as USER; namespace "*" asks about every namespace at once."""
    args = ["auth", "can-i", verb, resource, "--as", user]
    if namespace == "*":
        args.append("--all-namespaces")
    elif namespace:
        args += ["-n", namespace]
    args += [f"--subresource={subresource}"] if subresource else []
    result = cluster.kubectl(*args, check=False)
    answer = result.stdout.strip()
    assert answer in ("yes", "no"), f"kubectl auth can-i gave {answer!r}: {result.stderr}"
    return answer == "yes"


def as_service_account(cluster, kubeconfig: Path, *args: str, input: str | None = None,
                       check: bool = True) -> subprocess.CompletedProcess:
    """kubectl with the ServiceAccount's token (real requests, not impersonation)."""
    from tests.cluster import tools

    result = subprocess.run([str(tools.binary("kubectl")), "--kubeconfig", str(kubeconfig), *args],
                            input=input, capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} as the operator failed: {result.stderr}")
    return result


@pytest.fixture(scope="module")
def monitoring_crds(cluster):
    cluster.apply(MONITORING_CRDS)
    wait_established(cluster, *[c["metadata"]["name"] for c in MONITORING_CRDS])


@pytest.fixture(scope="module")
def release(cluster):
    """The chart installed cluster-wide with its CRDs, as a platform team would."""
    rel = install(cluster, "tei", unique("tei-system"))
    wait_established(cluster, *OUR_CRDS)
    yield rel
    helm("uninstall", rel.name, "--namespace", rel.namespace, "--wait", kubeconfig=cluster.kubeconfig, check=False)
    cluster.kubectl("delete", "namespace", rel.namespace, "--wait=false", check=False)


def dry_run(cluster, manifests: str) -> subprocess.CompletedProcess:
    return cluster.kubectl("apply", "--dry-run=server", "--server-side", "--field-manager", "helm-test",
                           "--force-conflicts", "-f", "-", input=manifests)


# ---------------------------------------------------------------- server-side dry runs

def test_default_render_is_accepted_by_the_api_server(cluster, namespace):
    manifests = template(namespace=namespace, include_tests=True).stdout
    result = dry_run(cluster, manifests)
    kinds = {line.split("/")[0] for line in result.stdout.splitlines()}
    assert {"serviceaccount", "clusterrole.rbac.authorization.k8s.io", "deployment.apps", "service", "pod",
            "customresourcedefinition.apiextensions.k8s.io"} <= kinds, result.stdout


def test_non_default_render_is_accepted_by_the_api_server(cluster, namespace, monitoring_crds):
    other = unique("t-other")
    cluster.kubectl("create", "namespace", other)
    try:
        values = json.loads(json.dumps(ALL_ON))
        values["watchNamespaces"] = [namespace, other]
        values["monitoring"]["dashboard"]["namespace"] = namespace
        values["priorityClassName"] = "system-cluster-critical"
        manifests = template(values, namespace=namespace, include_tests=True).stdout
        result = dry_run(cluster, manifests)
        out = result.stdout
        for kind in ("podmonitor.monitoring.coreos.com", "servicemonitor.monitoring.coreos.com",
                     "prometheusrule.monitoring.coreos.com", "configmap", "role.rbac.authorization.k8s.io",
                     "poddisruptionbudget.policy"):
            assert kind in out, out
        # one per watched namespace, and the leader election's in the release namespace
        assert sum(line.startswith("rolebinding.rbac.authorization.k8s.io/") for line in out.splitlines()) == 3
    finally:
        cluster.kubectl("delete", "namespace", other, "--wait=false", check=False)


@pytest.mark.parametrize(("rule", "complaint"), [
    ({"alert": "A", "expr": "up == 0", "for": "10m", "annotation": {}}, 'unknown field "spec.groups[0].rules[0].annotation"'),
    ({"alert": "A", "expr": "up == 0", "for": "ten minutes"}, "spec.groups[0].rules[0].for"),
])
def test_minimal_monitoring_crds_catch_a_wrong_field(cluster, namespace, monitoring_crds, rule, complaint):
    """The stand-in Prometheus Operator CRDs really check: a misspelt field and a bad duration are refused."""
    bad = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
           "metadata": {"name": "bad", "namespace": namespace},
           "spec": {"groups": [{"name": "g", "rules": [rule]}]}}
    result = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(bad), check=False)
    assert result.returncode != 0
    assert complaint in result.stderr, result.stderr


# ---------------------------------------------------------------- install and RBAC, cluster-wide

def test_install_runs_the_operator_with_its_own_identity(cluster, release):
    deployment = json.loads(cluster.kubectl("get", "deployment", f"{release.name}-tei-operator",
                                            "-n", release.namespace, "-o", "json").stdout)
    assert deployment["status"].get("availableReplicas") == 2  # the leader and its standby
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == release.service_account
    pdb = json.loads(cluster.kubectl("get", "pdb", f"{release.name}-tei-operator", "-n", release.namespace,
                                     "-o", "json").stdout)
    assert pdb["spec"]["minAvailable"] == 1
    for crd in OUR_CRDS:
        meta = json.loads(cluster.kubectl("get", "crd", crd, "-o", "json").stdout)["metadata"]
        assert meta["annotations"]["meta.helm.sh/release-name"] == release.name
        assert meta["annotations"]["helm.sh/resource-policy"] == "keep"


OPERATOR_CAN = [
    ("get", "embeddingservices.tei-operator.io", None), ("list", "rerankerservices.tei-operator.io", None),
    ("watch", "embeddingservices.tei-operator.io", None),
    ("patch", "embeddingservices.tei-operator.io", "status"), ("update", "rerankerservices.tei-operator.io", "status"),
    ("create", "deployments.apps", None), ("patch", "deployments.apps", None), ("delete", "deployments.apps", None),
    ("update", "deployments.apps", "scale"), ("patch", "deployments.apps", "scale"),
    ("create", "services", None), ("patch", "services", None), ("delete", "services", None),
    ("create", "poddisruptionbudgets.policy", None), ("delete", "poddisruptionbudgets.policy", None),
    ("list", "pods", None), ("watch", "pods", None), ("get", "pods", "proxy"),
    ("create", "events", None), ("patch", "events.events.k8s.io", None),
]
OPERATOR_CANNOT = [
    ("get", "secrets", None), ("list", "secrets", None), ("create", "pods", None), ("delete", "pods", None),
    ("create", "pods", "exec"), ("create", "pods", "attach"), ("create", "pods", "portforward"),
    ("create", "embeddingservices.tei-operator.io", None),
    ("patch", "embeddingservices.tei-operator.io", None), ("update", "rerankerservices.tei-operator.io", None),
    ("delete", "rerankerservices.tei-operator.io", None), ("create", "configmaps", None),
    ("create", "roles.rbac.authorization.k8s.io", None),
]


def test_cluster_wide_rbac_allows_exactly_what_the_operator_does(cluster, release, namespace):
    user = release.user
    denied = [c for c in OPERATOR_CAN if not can_i(cluster, user, c[0], c[1], namespace, c[2])]
    assert denied == [], f"{user} lacks {denied}"
    allowed = [c for c in OPERATOR_CANNOT if can_i(cluster, user, c[0], c[1], namespace, c[2])]
    assert allowed == [], f"{user} may do more than it needs: {allowed}"
    for verb, resource in [("list", "nodes"), ("watch", "customresourcedefinitions.apiextensions.k8s.io"),
                           ("list", "namespaces"), ("watch", "embeddingservices.tei-operator.io")]:
        assert can_i(cluster, user, verb, resource, "*"), (verb, resource)
    assert not can_i(cluster, user, "patch", "nodes")
    assert not can_i(cluster, user, "create", "customresourcedefinitions.apiextensions.k8s.io")


def test_lease_rbac_is_the_release_namespace_and_lease_only(cluster, release, namespace):
    user, lease = release.user, f"leases.coordination.k8s.io/{release.name}-tei-operator"
    assert can_i(cluster, user, "create", "leases.coordination.k8s.io", release.namespace)
    assert can_i(cluster, user, "get", lease, release.namespace)
    assert can_i(cluster, user, "update", lease, release.namespace)
    assert not can_i(cluster, user, "update", "leases.coordination.k8s.io/kube-scheduler", release.namespace)
    assert not can_i(cluster, user, "delete", lease, release.namespace)
    assert not can_i(cluster, user, "create", "leases.coordination.k8s.io", namespace)
    assert not can_i(cluster, user, "update", "leases.coordination.k8s.io/kube-scheduler", "kube-system")


def test_service_account_token_can_create_update_scale_status_and_events(cluster, release, namespace, tmp_path):
    """Real requests with the chart's ServiceAccount token: what the controller and autoscaler send."""
    kubeconfig = token_kubeconfig(cluster, release.namespace, release.service_account, tmp_path / "sa.kubeconfig")
    service = yaml.safe_load((REPO / "examples" / "embedding-cpu.yaml").read_text())
    service["metadata"]["namespace"] = namespace
    cluster.apply(service)  # users create services; the operator may not
    name = service["metadata"]["name"]
    owner = json.loads(cluster.kubectl("get", "embeddingservice", name, "-n", namespace, "-o", "json").stdout)
    owner_ref = {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": name,
                 "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}
    labels = {"app.kubernetes.io/instance": name, "app.kubernetes.io/managed-by": "tei-operator"}
    children = [
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": name, "namespace": namespace, "labels": labels, "ownerReferences": [owner_ref]},
         "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels},
                               "spec": {"containers": [{"name": "tei", "image": "example.invalid/tei:cpu-1.9.3"}]}}}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": name, "namespace": namespace, "labels": labels, "ownerReferences": [owner_ref]},
         "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": 80}]}},
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
         "metadata": {"name": name, "namespace": namespace, "labels": labels, "ownerReferences": [owner_ref]},
         "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels}}},
    ]
    docs = yaml.safe_dump_all(children)
    sa = lambda *args, **kw: as_service_account(cluster, kubeconfig, *args, **kw)  # noqa: E731
    # create and update with server-side apply, as the controller does
    sa("apply", "--server-side", "--field-manager", "tei-operator", "-f", "-", input=docs)
    children[0]["spec"]["template"]["metadata"]["annotations"] = {"tei-operator.io/restartedAt": "now"}
    sa("apply", "--server-side", "--field-manager", "tei-operator", "-f", "-", input=yaml.safe_dump_all(children))
    # scale through the scale subresource, as the autoscaler does
    sa("scale", "deployment", name, "-n", namespace, "--replicas", "3")
    assert cluster.kubectl("get", "deployment", name, "-n", namespace,
                           "-o", "jsonpath={.spec.replicas}").stdout == "3"
    # status of the custom resource
    sa("patch", "embeddingservice", name, "-n", namespace, "--subresource=status", "--type=merge",
       "-p", json.dumps({"status": {"observedGeneration": owner["metadata"]["generation"], "replicas": 3}}))
    assert cluster.kubectl("get", "embeddingservice", name, "-n", namespace,
                           "-o", "jsonpath={.status.replicas}").stdout == "3"
    # but never the resource itself (spec, labels, annotations: the users' and GitOps' part)
    annotated = sa("annotate", "embeddingservice", name, "-n", namespace, "tei-operator.io/x=y", check=False)
    assert annotated.returncode != 0 and "forbidden" in annotated.stderr.lower(), annotated.stderr
    # events, both APIs
    event = {"apiVersion": "v1", "kind": "Event",
             "metadata": {"name": f"{name}.scaled", "namespace": namespace},
             "involvedObject": {"apiVersion": owner["apiVersion"], "kind": "EmbeddingService", "name": name,
                                "namespace": namespace, "uid": owner["metadata"]["uid"]},
             "reason": "Scaled", "message": f"Scaled Deployment {name} from 1 to 3", "type": "Normal",
             "source": {"component": "tei-operator"}}
    sa("create", "-f", "-", input=yaml.safe_dump(event))
    new_event = {"apiVersion": "events.k8s.io/v1", "kind": "Event",
                 "metadata": {"name": f"{name}.reconciled", "namespace": namespace},
                 "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "tei-operator.io/operator",
                 "reportingInstance": "tei-operator-0", "action": "Reconcile", "reason": "Reconciled", "type": "Normal",
                 "regarding": event["involvedObject"], "note": f"Reconciled EmbeddingService {name}"}
    sa("create", "-f", "-", input=yaml.safe_dump(new_event))
    # the built-in scrape reaches pods through the API server's pod proxy: allowed (the pod itself may not answer)
    pods = json.loads(sa("get", "pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={name}",
                         "-o", "json").stdout)["items"]
    if pods:
        proxy = sa("get", "--raw", f"/api/v1/namespaces/{namespace}/pods/{pods[0]['metadata']['name']}:80/proxy/metrics",
                   check=False)
        assert "forbidden" not in proxy.stderr.lower(), proxy.stderr
    # delete children (e.g. the PDB when minAvailable is removed)
    sa("delete", "poddisruptionbudget", name, "-n", namespace)
    # and never the secrets the pods reference
    secret = sa("get", "secrets", "-n", namespace, check=False)
    assert secret.returncode != 0 and "forbidden" in secret.stderr.lower()


# ---------------------------------------------------------------- watchNamespaces mode

def test_watch_namespaces_mode_cannot_touch_other_namespaces(cluster, release, namespace, tmp_path):
    watched, elsewhere = namespace, unique("t-elsewhere")
    cluster.kubectl("create", "namespace", elsewhere)
    rel = install(cluster, unique("tns"), unique("tei-ns"), "--set", f"watchNamespaces={{{watched}}}",
                  "--set", "crds.enabled=false")
    try:
        user = rel.user
        for verb, resource, sub in OPERATOR_CAN:
            assert can_i(cluster, user, verb, resource, watched, sub), (verb, resource, sub, watched)
            assert not can_i(cluster, user, verb, resource, elsewhere, sub), (verb, resource, sub, elsewhere)
        assert can_i(cluster, user, "list", "nodes")
        assert can_i(cluster, user, "list", "customresourcedefinitions.apiextensions.k8s.io")
        assert not can_i(cluster, user, "delete", "namespaces")
        assert not can_i(cluster, user, "list", "deployments.apps", "*")
        # a real request with its token, in a namespace it does not watch
        kubeconfig = token_kubeconfig(cluster, rel.namespace, rel.service_account, tmp_path / "ns.kubeconfig")
        result = as_service_account(cluster, kubeconfig, "create", "deployment", "x", "-n", elsewhere,
                                    "--image", "example.invalid/x", check=False)
        assert result.returncode != 0 and "forbidden" in result.stderr.lower(), result.stderr
        as_service_account(cluster, kubeconfig, "get", "deployments", "-n", watched)
    finally:
        helm("uninstall", rel.name, "--namespace", rel.namespace, "--wait", kubeconfig=cluster.kubeconfig,
             check=False)
        for ns in (rel.namespace, elsewhere):
            cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


# ---------------------------------------------------------------- the operator itself, with the chart's identity

@contextlib.contextmanager
def operator_process(kubeconfig: Path, log: Path, *namespaces: str, lease: tuple[str, str] | None = None):
    """`tei-operator run` authenticated with the chart's ServiceAccount token (outside the pod, as in `make demo`),
    electing itself leader on the release's Lease (`lease`: namespace, name), the only one the chart grants; without
    `lease`, leader election is off (a chart version that grants no Lease)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEI_OPERATOR_")}
    env.update({"KUBECONFIG": str(kubeconfig), "TEI_OPERATOR_NAMESPACES": ",".join(namespaces),
                "TEI_OPERATOR_HEALTH_PORT": str(free_port()), "TEI_OPERATOR_METRICS_PORT": str(free_port()),
                "TEI_OPERATOR_RESYNC_SECONDS": "5"})
    if lease is None:
        env["TEI_OPERATOR_LEADER_ELECTION"] = "false"
    else:
        env.update({"TEI_OPERATOR_LEADER_ELECTION_NAMESPACE": lease[0],
                    "TEI_OPERATOR_LEADER_ELECTION_LEASE_NAME": lease[1]})
    with log.open("w") as out:
        proc = subprocess.Popen([str(Path(sys.executable).with_name("tei-operator")), "run"], stdout=out,
                                stderr=subprocess.STDOUT, env=env)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(what: str, probe, log: Path, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}; operator log:\n{log.read_text()[-4000:]}")


def json_or_none(result: subprocess.CompletedProcess) -> dict | None:
    return json.loads(result.stdout) if result.returncode == 0 else None


def forbidden_lines(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if re.search(r"forbidden|status=403", line, re.I)]


def exercise_operator(cluster, namespace: str, log: Path) -> None:
    """Applies the CPU example and checks the operator creates its children, writes status and events, and
    follows `kubectl scale` (the scale subresource) to the Deployment."""
    service = yaml.safe_load((REPO / "examples" / "embedding-cpu.yaml").read_text())
    service["metadata"]["namespace"] = namespace
    name = service["metadata"]["name"]
    cluster.apply(service)
    wait_for(f"Deployment {namespace}/{name}", lambda: json_or_none(
        cluster.kubectl("get", "deployment", name, "-n", namespace, "-o", "json", check=False)), log)
    cluster.kubectl("get", "service", name, "-n", namespace)
    status = wait_for("status.conditions", lambda: (json_or_none(cluster.kubectl(
        "get", "embeddingservice", name, "-n", namespace, "-o", "json", check=False)) or {}).get("status", {})
        .get("conditions"), log)
    assert {c["type"] for c in status} >= {"Ready"}, status
    events = wait_for("an Event from the operator", lambda: json.loads(cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}", "-o", "json",
    ).stdout)["items"], log)
    assert events
    cluster.kubectl("scale", "embeddingservice", name, "-n", namespace, "--replicas", "2")
    wait_for("the Deployment to follow kubectl scale", lambda: cluster.kubectl(
        "get", "deployment", name, "-n", namespace, "-o", "jsonpath={.spec.replicas}").stdout == "2", log)


def test_operator_runs_cluster_wide_with_the_chart_identity(cluster, release, namespace, tmp_path):
    kubeconfig = token_kubeconfig(cluster, release.namespace, release.service_account, tmp_path / "sa.kubeconfig")
    log = tmp_path / "operator.log"
    with operator_process(kubeconfig, log, lease=(release.namespace, f"{release.name}-tei-operator")) as proc:
        exercise_operator(cluster, namespace, log)
        assert proc.poll() is None, log.read_text()[-4000:]
    assert forbidden_lines(log) == [], "the operator was refused something with the chart's RBAC"


def test_operator_runs_in_watch_namespaces_mode_with_the_chart_identity(cluster, release, namespace, tmp_path):
    rel = install(cluster, unique("tnr"), unique("tei-nr"), "--set", f"watchNamespaces={{{namespace}}}",
                  "--set", "crds.enabled=false")
    try:
        kubeconfig = token_kubeconfig(cluster, rel.namespace, rel.service_account, tmp_path / "ns.kubeconfig")
        log = tmp_path / "operator.log"
        with operator_process(kubeconfig, log, namespace, lease=(rel.namespace, f"{rel.name}-tei-operator")) as proc:
            exercise_operator(cluster, namespace, log)
            assert proc.poll() is None, log.read_text()[-4000:]
        assert forbidden_lines(log) == [], "the operator was refused something with the chart's namespaced RBAC"
    finally:
        helm("uninstall", rel.name, "--namespace", rel.namespace, "--wait", kubeconfig=cluster.kubeconfig,
             check=False)
        cluster.kubectl("delete", "namespace", rel.namespace, "--wait=false", check=False)


# ---------------------------------------------------------------- upgrade and uninstall (last: ends the release)

def test_upgrade_then_uninstall_keeps_the_crds(cluster, release):
    helm("upgrade", release.name, str(CHART), "--namespace", release.namespace, "--reuse-values",
         "--set", "operator.logFormat=plain", "--wait", "--timeout", "120s", kubeconfig=cluster.kubeconfig)
    env = json.loads(cluster.kubectl("get", "deployment", f"{release.name}-tei-operator", "-n", release.namespace,
                                     "-o", "jsonpath={.spec.template.spec.containers[0].env}").stdout)
    assert {"name": "TEI_OPERATOR_LOG_FORMAT", "value": "plain"} in env
    manifest = helm("get", "manifest", release.name, "--namespace", release.namespace,
                    kubeconfig=cluster.kubeconfig).stdout
    assert "kind: CustomResourceDefinition" in manifest, "the CRDs are not upgraded with the release"
    helm("uninstall", release.name, "--namespace", release.namespace, "--wait", kubeconfig=cluster.kubeconfig)
    for crd in OUR_CRDS:
        cluster.kubectl("get", "crd", crd)  # still there: services survive an uninstall
    gone = cluster.kubectl("get", "deployment", f"{release.name}-tei-operator", "-n", release.namespace,
                           check=False)
    assert gone.returncode != 0
