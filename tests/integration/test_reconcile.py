"""The operator against a real control plane: children, placement, readiness, rollouts, scale, GC, bookkeeping.

Relies on the simulated cluster of CONTRACTS.md (a100: 2 nodes x 8 GPUs, h100: 1 x 4, l4: 1 x 1, one CPU node;
kwok marks scheduled pods Running and Ready) and on TEI.md for image tags (a100 -> `1.9`, h100 -> `hopper-`,
l4 -> `89-`).
"""

from __future__ import annotations

import json

import pytest

from .conftest import service_manifest, wait_for

pytestmark = pytest.mark.cluster

PRODUCTS = {"a100": "NVIDIA-A100-SXM4-80GB", "h100": "NVIDIA-H100-80GB-HBM3", "l4": "NVIDIA-L4"}


def embedding(name, namespace, gpu_type="a100", **spec):
    body = {"model": {"id": "BAAI/bge-m3"}, "gpu": {"count": 1, "type": gpu_type}, **spec}
    return service_manifest("EmbeddingService", name, namespace, body)


def reranker(name, namespace, gpu_type="h100", **spec):
    body = {"model": {"id": "BAAI/bge-reranker-v2-m3"}, "gpu": {"count": 1, "type": gpu_type}, **spec}
    return service_manifest("RerankerService", name, namespace, body)


def tei_container(deployment):
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return next((c for c in containers if c["name"] == "tei"), containers[0])


def controlled_by(obj, owner):
    return any(r["uid"] == owner["metadata"]["uid"] and r.get("controller") and r.get("blockOwnerDeletion")
               and r["kind"] == owner["kind"] for r in obj["metadata"].get("ownerReferences") or [])


def pods_of(kube, namespace, owner):
    return kube.list("pods", namespace, owner["status"]["selector"])


@pytest.mark.parametrize("kind,gpu_type,short", [
    ("EmbeddingService", "a100", "embsvc"),
    ("RerankerService", "h100", "rrsvc"),
    ("EmbeddingService", "l4", "embsvc"),
])
def test_service_gets_children_lands_on_its_gpu_and_turns_ready(operator, kube, namespace, kind, gpu_type, short):
    make = embedding if kind == "EmbeddingService" else reranker
    kube.apply(make("svc", namespace, gpu_type))
    kube.kubectl("wait", "--for=condition=Ready", f"{short}/svc", "-n", namespace, "--timeout=60s")
    owner = kube.get(short, "svc", namespace)
    deployment = kube.get("deployment", "svc", namespace)
    service = kube.get("service", "svc", namespace)
    assert deployment is not None and service is not None
    assert controlled_by(deployment, owner) and controlled_by(service, owner)
    assert deployment["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "tei-operator"
    limits = tei_container(deployment)["resources"]["limits"]
    assert str(limits["nvidia.com/gpu"]) == "1"

    status = owner["status"]
    assert status["observedGeneration"] == owner["metadata"]["generation"]
    assert status["readyReplicas"] == status["replicas"] == 1
    assert status["endpoint"].startswith(f"http://svc.{namespace}.svc")
    assert status["image"] == tei_container(deployment)["image"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["observedGeneration"] == owner["metadata"]["generation"] and ready["lastTransitionTime"]

    pods = pods_of(kube, namespace, owner)
    assert len(pods) == 1
    node = kube.get("node", pods[0]["spec"]["nodeName"])
    assert node["metadata"]["labels"]["nvidia.com/gpu.product"] == PRODUCTS[gpu_type]

    reasons = {e["reason"] for e in kube.events(namespace, "svc") if e["involvedObject"]["kind"] == kind}
    assert "Created" in reasons


def test_spec_change_rolls_out_and_observed_generation_follows(operator, kube, namespace):
    kube.apply(embedding("roll", namespace, engine={"maxBatchTokens": 16384}))
    kube.wait_condition("embsvc", "roll", namespace, "Ready")
    before = kube.get("deployment", "roll", namespace)
    kube.apply(embedding("roll", namespace, engine={"maxBatchTokens": 32768}))
    owner = kube.get("embsvc", "roll", namespace)
    assert owner["metadata"]["generation"] == 2

    def rolled():
        dep = kube.get("deployment", "roll", namespace)
        env = {e["name"]: e.get("value") for e in tei_container(dep).get("env") or []}
        return dep if "32768" in str(env) or "32768" in str(tei_container(dep).get("args")) else None
    after = wait_for(rolled, 30, what="the Deployment to carry maxBatchTokens 32768")
    assert after["metadata"]["generation"] > before["metadata"]["generation"]
    wait_for(lambda: (kube.get("embsvc", "roll", namespace)["status"].get("observedGeneration") == 2
                      and kube.condition("embsvc", "roll", namespace, "Ready")["status"] == "True"),
             60, what="observedGeneration 2 and Ready")
    reasons = [e["message"] for e in kube.events(namespace, "roll") if e["reason"] == "Updated"]
    assert any("Updated Deployment roll" in m for m in reasons)


def test_noop_resync_writes_nothing(operator, kube, namespace):
    kube.apply(embedding("quiet", namespace))
    kube.wait_condition("embsvc", "quiet", namespace, "Ready")
    # The baseline is taken once the rollout is over (the Deployment controller's last status write) and the
    # operator has reconciled that state.
    wait_for(lambda: deployment_settled(kube.get("deployment", "quiet", namespace)), 30,
             what="the Deployment's rollout to be complete")
    kube.reconciled("embsvc", "quiet", namespace, operator)
    dep_rv = kube.get("deployment", "quiet", namespace)["metadata"]["resourceVersion"]
    svc_rv = kube.get("service", "quiet", namespace)["metadata"]["resourceVersion"]
    status_before = kube.get("embsvc", "quiet", namespace)["status"]
    # A metadata-only change queues a full reconcile; once the operator logged it as done, whatever it wrote is
    # visible now, and had it written nothing, no watch event can echo.
    kube.reconciled("embsvc", "quiet", namespace, operator)
    assert kube.get("deployment", "quiet", namespace)["metadata"]["resourceVersion"] == dep_rv
    assert kube.get("service", "quiet", namespace)["metadata"]["resourceVersion"] == svc_rv
    assert kube.get("embsvc", "quiet", namespace)["status"]["conditions"] == status_before["conditions"]


def deployment_settled(dep: dict | None) -> bool:
    """The Deployment controller is done with it: every replica updated, ready and available, rollout complete."""
    if not dep:
        return False
    spec, status = dep.get("spec") or {}, dep.get("status") or {}
    want = spec.get("replicas", 1)
    progressing = next((c for c in status.get("conditions") or [] if c.get("type") == "Progressing"), {})
    return (status.get("observedGeneration") == dep["metadata"]["generation"]
            and status.get("updatedReplicas", 0) == status.get("readyReplicas", 0)
            == status.get("availableReplicas", 0) == status.get("replicas", 0) == want
            and progressing.get("reason") == "NewReplicaSetAvailable")


def test_no_bookkeeping_on_the_service_and_no_finalizer(operator, kube, namespace):
    kube.apply(embedding("books", namespace))
    kube.wait_condition("embsvc", "books", namespace, "Ready")
    kube.reconciled("embsvc", "books", namespace, operator)  # a metadata change handled too
    owner = kube.get("embsvc", "books", namespace)
    meta = owner["metadata"]
    assert not meta.get("finalizers"), meta.get("finalizers")
    annotations = meta.get("annotations") or {}
    # Event handlers only: kopf writes neither its diff base (last-handled-configuration) nor progress.
    assert not [a for a in annotations if "kopf.zalando.org" in a or a.startswith("tei-operator.io/")], annotations
    metadata_writers = {m["manager"] for m in meta.get("managedFields") or [] if m.get("subresource") != "status"}
    assert not {"tei-operator", "kopf"} & metadata_writers, meta.get("managedFields")
    assert set(owner["spec"]) <= {"model", "gpu", "engine", "replicas", "autoscaling", "resources", "nodeSelector",
                                  "tolerations", "affinity", "priorityClassName", "podLabels", "podAnnotations",
                                  "serviceAccountName", "podSecurityContext", "securityContext", "cache", "service",
                                  "rollout", "minAvailable", "automountServiceAccountToken", "networkPolicy",
                                  "topologySpreadConstraints"}
    managers = {m["manager"] for m in meta.get("managedFields") or []}
    assert "tei-operator" in managers  # the status writes
    spec_writers = {m["manager"] for m in meta.get("managedFields") or []
                    if "f:spec" in (m.get("fieldsV1") or {}) and m.get("subresource") != "status"}
    assert "tei-operator" not in spec_writers


def test_kubectl_scale_drives_the_deployment_and_pdb(operator, kube, namespace):
    kube.apply(embedding("scaled", namespace))
    kube.wait_condition("embsvc", "scaled", namespace, "Ready")
    kube.kubectl("scale", "embsvc/scaled", "-n", namespace, "--replicas=3")
    wait_for(lambda: kube.get("deployment", "scaled", namespace)["spec"]["replicas"] == 3, 30,
             what="the Deployment to follow kubectl scale")
    wait_for(lambda: (kube.get("embsvc", "scaled", namespace)["status"].get("replicas") == 3
                      and kube.get("embsvc", "scaled", namespace)["status"].get("readyReplicas") == 3), 60,
             what="status.replicas 3")
    pdb = wait_for(lambda: kube.get("pdb", "scaled", namespace), 30, what="a PodDisruptionBudget")
    assert controlled_by(pdb, kube.get("embsvc", "scaled", namespace))
    scale = kube.kubectl("get", "embsvc/scaled", "-n", namespace, "-o",
                         "jsonpath={.status.replicas}/{.status.selector}").stdout
    assert scale.startswith("3/") and "scaled" in scale
    kube.wait_condition("embsvc", "scaled", namespace, "Ready")
    # Back to one replica: the PDB is no longer needed and goes.
    kube.kubectl("scale", "embsvc/scaled", "-n", namespace, "--replicas=1")
    wait_for(lambda: kube.get("pdb", "scaled", namespace) is None, 30, what="the PDB to be removed")


def test_deleting_the_service_removes_its_children(operator, kube, namespace):
    kube.apply(embedding("gone", namespace))
    kube.wait_condition("embsvc", "gone", namespace, "Ready")
    kube.kubectl("delete", "embsvc", "gone", "-n", namespace, "--wait=true", "--timeout=30s")
    wait_for(lambda: kube.get("deployment", "gone", namespace) is None and kube.get("service", "gone", namespace)
             is None, 60, what="the garbage collector to delete the Deployment and Service")
    wait_for(lambda: not kube.list("pods", namespace), 60, what="the pods to go")



# What kopf (the diff-based handlers of 0.1.0) left on every service it handled.
KOPF_010_ANNOTATIONS = {
    "tei-operator.io/last-handled-configuration": json.dumps(
        {"spec": {"model": {"id": "BAAI/bge-small-en-v1.5"}, "gpu": {"count": 1, "type": "l4"}}}),
    "tei-operator.io/reconcile-on-update": json.dumps(
        {"started": "2026-01-01T00:00:00.000000Z", "retries": 3, "success": False, "failure": False,
         "message": "Conflicting write, will retry"}),
}


def test_a_service_carrying_the_annotations_of_010_reconciles_normally(operator, kube, namespace):
    """0.1.0's kopf bookkeeping (a stale handled spec, a handler half-way through its retries) means nothing now:
    the service reconciles to its current spec, and the annotations are left as they are."""
    manifest = embedding("upgraded", namespace)
    manifest["metadata"]["annotations"] = dict(KOPF_010_ANNOTATIONS)
    kube.apply(manifest)
    kube.wait_condition("embsvc", "upgraded", namespace, "Ready")
    owner = kube.get("embsvc", "upgraded", namespace)
    assert owner["status"]["observedGeneration"] == owner["metadata"]["generation"]
    assert controlled_by(kube.get("deployment", "upgraded", namespace), owner)
    pods = pods_of(kube, namespace, owner)  # on an a100, the current spec (0.1.0's record says l4)
    assert [kube.get("node", p["spec"]["nodeName"])["metadata"]["labels"]["nvidia.com/gpu.product"]
            for p in pods] == [PRODUCTS["a100"]]
    kube.reconciled("embsvc", "upgraded", namespace, operator)
    annotations = kube.get("embsvc", "upgraded", namespace)["metadata"]["annotations"]
    assert {k: annotations.get(k) for k in KOPF_010_ANNOTATIONS} == KOPF_010_ANNOTATIONS


def test_a_child_the_api_server_refuses_is_reported_and_not_retried_hot(operator, kube, namespace):
    """The CRD accepts 64 pod annotations of 4 KiB each; their sum is over the 256 KiB the API server allows on
    a Deployment's pod template: a permanent 422. The service says so (Degraded/Stalled, ApplyRejected, with the
    API server's message, and a Warning Event); the queue does not retry it."""
    annotations = {f"example.com/a{n}": "x" * 4096 for n in range(64)}
    kube.apply(embedding("refused", namespace, podAnnotations=annotations), "--server-side")  # no last-applied copy
    degraded = kube.wait_condition("embsvc", "refused", namespace, "Degraded", reason="ApplyRejected")
    assert "refused a child" in degraded["message"] and "Too long" in degraded["message"], degraded["message"]
    assert kube.condition("embsvc", "refused", namespace, "Stalled")["status"] == "True"
    wait_for(lambda: [e for e in kube.events(namespace, "refused")
                      if e["reason"] == "ApplyRejected" and e["type"] == "Warning"], 20, what="the Warning Event")
    # Not retried: one error line for it, still one after a later reconcile of another service has ended.
    line = f"Failed to reconcile EmbeddingService {namespace}/refused, not retrying"
    assert operator.log_text().count(line) == 1
    kube.apply(embedding("after-refused", namespace))
    kube.wait_condition("embsvc", "after-refused", namespace, "Ready")
    kube.reconciled("embsvc", "after-refused", namespace, operator)
    assert operator.log_text().count(line) == 1
    assert f"reconcile EmbeddingService {namespace}/refused (attempt" not in operator.log_text()
    # Fixing the spec reconciles it once more, and it turns Ready.
    kube.kubectl("patch", "embsvc", "refused", "-n", namespace, "--type=json",
                 "-p", json.dumps([{"op": "remove", "path": "/spec/podAnnotations"}]))
    kube.wait_condition("embsvc", "refused", namespace, "Ready")
