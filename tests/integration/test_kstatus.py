"""What kstatus-based tools (Flux's default health checks, `kpt live status`, Config Sync) make of a service: they
read only deletionTimestamp, status.observedGeneration and the conditions Reconciling and Stalled."""

from __future__ import annotations

import time

import pytest

from .conftest import wait_for
from .test_reconcile import embedding
from tests.kstatus import kstatus

pytestmark = pytest.mark.cluster

CRASH = {"sim.tei-operator.io/fail": "crashloop"}


def conditions(obj):
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def test_a_ready_service_is_current_with_reconciling_and_stalled_false(operator, kube, namespace):
    kube.apply(embedding("calm", namespace))
    kube.wait_condition("embsvc", "calm", namespace, "Ready", timeout=60)
    obj = kube.get("embsvc", "calm", namespace)
    conds = conditions(obj)
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    assert (conds["Reconciling"]["status"], conds["Reconciling"]["reason"]) == ("False", "AllReplicasReady")
    assert (conds["Stalled"]["status"], conds["Stalled"]["reason"]) == ("False", "NotStalled")
    assert all(c["observedGeneration"] == obj["metadata"]["generation"] for c in conds.values())
    assert kstatus(obj) == "Current"


def test_an_unschedulable_service_is_in_progress_with_the_schedulers_message(operator, kube, namespace):
    # The l4 pool has one GPU (CONTRACTS.md): the second replica waits for a node, which a cluster autoscaler could
    # add, so kstatus says InProgress rather than Failed (until the Deployment's progress deadline). minAvailable 2:
    # one replica is not enough to serve (with the default of 1 it is: test_available.py).
    kube.apply(embedding("waiting", namespace, gpu_type="l4", replicas=2, minAvailable=2))
    reconciling = kube.wait_condition("embsvc", "waiting", namespace, "Reconciling", reason="Unschedulable",
                                      timeout=60)
    assert "Insufficient nvidia.com/gpu" in reconciling["message"]
    obj = kube.get("embsvc", "waiting", namespace)
    assert conditions(obj)["Stalled"]["status"] == "False"
    assert conditions(obj)["Available"]["status"] == "False"
    assert kstatus(obj) == "InProgress"


def test_a_crash_looping_service_is_stalled_and_a_fix_is_never_reported_failed(operator, kube, namespace):
    kube.apply(embedding("stuck", namespace, podAnnotations=CRASH))
    stalled = kube.wait_condition("embsvc", "stuck", namespace, "Stalled", reason="CrashLoopBackOff", timeout=60)
    assert "Could not download model artifacts" in stalled["message"]
    obj = kube.get("embsvc", "stuck", namespace)
    assert conditions(obj)["Reconciling"]["status"] == "False"
    assert kstatus(obj) == "Failed"
    events = [e for e in kube.events(namespace, "stuck") if e["reason"] == "CrashLoopBackOff"]
    assert len(events) == 1, "Degraded and Stalled turning True together make one Warning, not two"

    # Fix it. Until the Deployment has replaced the crash-looping pod, a Flux sync of the fix polls this object: it
    # must read InProgress (or Current once done), never Failed at the fixed generation.
    kube.apply(embedding("stuck", namespace))
    fixed_generation = kube.get("embsvc", "stuck", namespace)["metadata"]["generation"]
    seen: list[str] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        obj = kube.get("embsvc", "stuck", namespace)
        if obj["status"].get("observedGeneration") == fixed_generation:
            seen.append(kstatus(obj))
            if seen[-1] == "Current" and conditions(obj)["Ready"]["status"] == "True":
                break
        time.sleep(0.2)
    assert seen and seen[-1] == "Current", f"never became Current after the fix: {seen[-5:]}"
    assert "Failed" not in seen, f"reported Failed after the fix: {seen}"
    wait_for(lambda: conditions(kube.get("embsvc", "stuck", namespace))["Stalled"]["status"] == "False", 10,
             what="Stalled=False")
