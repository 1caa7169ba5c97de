"""The operator against a real control plane: children, placement, readiness, rollouts, scale, GC, bookkeeping.

Relies on the simulated cluster of CONTRACTS.md (a100: 2 nodes x 8 GPUs, h100: 1 x 4, l4: 1 x 1, one CPU node;
kwok marks scheduled pods Running and Ready) and on TEI.md for image tags (a100 -> `1.9`, h100 -> `hopper-`,
l4 -> `89-`).
"""

from __future__ import annotations

import time

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
    time.sleep(2)  # let the last status write and its echoes settle
    dep_rv = kube.get("deployment", "quiet", namespace)["metadata"]["resourceVersion"]
    svc_rv = kube.get("service", "quiet", namespace)["metadata"]["resourceVersion"]
    status_before = kube.get("embsvc", "quiet", namespace)["status"]
    # A metadata-only change triggers a full reconcile through kopf's update handler.
    kube.kubectl("annotate", "embsvc", "quiet", "-n", namespace, "example.com/touched=yes")
    # kopf records what it handled (under our prefix): once the touch shows there, the update reconcile ran.
    wait_for(lambda: "example.com/touched" in (kube.get("embsvc", "quiet", namespace)["metadata"].get(
        "annotations") or {}).get("tei-operator.io/last-handled-configuration", ""), 20,
        what="kopf's update handler to handle the touch")
    time.sleep(2)  # and any echo through the child watches
    assert kube.get("deployment", "quiet", namespace)["metadata"]["resourceVersion"] == dep_rv
    assert kube.get("service", "quiet", namespace)["metadata"]["resourceVersion"] == svc_rv
    assert kube.get("embsvc", "quiet", namespace)["status"]["conditions"] == status_before["conditions"]


def test_bookkeeping_only_under_our_prefix_and_no_finalizer(operator, kube, namespace):
    kube.apply(embedding("books", namespace))
    kube.wait_condition("embsvc", "books", namespace, "Ready")
    owner = kube.get("embsvc", "books", namespace)
    meta = owner["metadata"]
    assert not meta.get("finalizers"), meta.get("finalizers")
    annotations = meta.get("annotations") or {}
    assert not [a for a in annotations if "kopf.zalando.org" in a], annotations
    ours = [a for a in annotations if a.startswith("tei-operator.io/")]
    assert ours, f"expected kopf's bookkeeping under tei-operator.io/, got {annotations}"
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

