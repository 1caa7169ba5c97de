"""Hand edits and deletions of children are undone promptly (child watches, not the periodic resync: the session's
operator resyncs only every 10 minutes and these tests allow 15 s); a restarted operator converges without duplicates."""

from __future__ import annotations

import json

import pytest

from .conftest import wait_for
from .test_reconcile import embedding, tei_container

pytestmark = pytest.mark.cluster

PROMPT = 15  # seconds: "within seconds, not minutes"


def _env(deployment):
    return {e["name"]: e.get("value") for e in tei_container(deployment).get("env") or []}


def test_hand_edited_image_is_reverted(operator, kube, namespace):
    kube.apply(embedding("drift", namespace))
    kube.wait_condition("embsvc", "drift", namespace, "Ready")
    original = tei_container(kube.get("deployment", "drift", namespace))["image"]
    kube.kubectl("set", "image", "deployment/drift", "-n", namespace, f"{tei_container(kube.get('deployment', 'drift', namespace))['name']}=example.com/hacked:1")
    wait_for(lambda: tei_container(kube.get("deployment", "drift", namespace))["image"] == original, PROMPT,
             what="the image to be put back")
    events = [e for e in kube.events(namespace, "drift") if e["reason"] == "DriftReverted"]
    assert events and "example.com/hacked:1" in events[-1]["message"]


def test_hand_edited_env_value_is_reverted(operator, kube, namespace):
    kube.apply(embedding("envdrift", namespace))
    kube.wait_condition("embsvc", "envdrift", namespace, "Ready")
    dep = kube.get("deployment", "envdrift", namespace)
    env = _env(dep)
    name = next(n for n, v in env.items() if v is not None)
    container = tei_container(dep)["name"]
    kube.kubectl("set", "env", "deployment/envdrift", "-n", namespace, "-c", container, f"{name}=tampered")
    wait_for(lambda: _env(kube.get("deployment", "envdrift", namespace)).get(name) == env[name], PROMPT,
             what=f"env {name} to be put back")


def test_deleted_deployment_is_recreated(operator, kube, namespace):
    kube.apply(embedding("phoenix", namespace))
    kube.wait_condition("embsvc", "phoenix", namespace, "Ready")
    uid = kube.get("deployment", "phoenix", namespace)["metadata"]["uid"]
    kube.kubectl("delete", "deployment", "phoenix", "-n", namespace, "--wait=false")
    wait_for(lambda: (kube.get("deployment", "phoenix", namespace) or {"metadata": {"uid": uid}})["metadata"]["uid"]
             != uid, PROMPT, what="a new Deployment")
    kube.wait_condition("embsvc", "phoenix", namespace, "Ready")
    assert any(e["reason"] == "Recreated" and "Deployment phoenix" in e["message"]
               for e in kube.events(namespace, "phoenix"))


def test_deleted_service_is_recreated(operator, kube, namespace):
    kube.apply(embedding("svcgone", namespace))
    kube.wait_condition("embsvc", "svcgone", namespace, "Ready")
    uid = kube.get("service", "svcgone", namespace)["metadata"]["uid"]
    kube.kubectl("delete", "service", "svcgone", "-n", namespace, "--wait=false")
    wait_for(lambda: (kube.get("service", "svcgone", namespace) or {"metadata": {"uid": uid}})["metadata"]["uid"]
             != uid, PROMPT, what="a new Service")


def test_restart_mid_way_converges_without_duplicates(operator, kube, namespace):
    kube.apply(embedding("restart", namespace))
    kube.apply(embedding("restart2", namespace, gpu_type="h100"))
    operator.stop()  # possibly in the middle of reconciling
    try:
        # While it is down: a spec change and a deleted child, to be caught up with on resume.
        kube.apply(embedding("restart", namespace, replicas=2))
        kube.kubectl("delete", "service", "restart2", "-n", namespace, "--ignore-not-found", "--wait=false")
    finally:
        operator.start()
    for name in ("restart", "restart2"):
        kube.wait_condition("embsvc", name, namespace, "Ready", timeout=60)
    wait_for(lambda: kube.get("service", "restart2", namespace), 30, what="Service restart2 recreated")
    assert kube.get("deployment", "restart", namespace)["spec"]["replicas"] == 2
    for kind in ("deployments", "services", "replicasets"):
        names = [o["metadata"]["name"] for o in kube.list(kind, namespace)]
        if kind == "replicasets":
            assert len(names) == len(set(names))
            continue
        assert sorted(names) == ["restart", "restart2"], f"{kind}: {json.dumps(names)}"
