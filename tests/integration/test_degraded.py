"""Degraded conditions from what the scheduler and the kubelet (kwok) report, with their own messages."""

from __future__ import annotations

import pytest

from .conftest import wait_for
from .test_reconcile import embedding

pytestmark = pytest.mark.cluster


def test_more_gpus_than_the_cluster_has_is_unschedulable(operator, kube, namespace):
    # The l4 pool is one node with one GPU (CONTRACTS.md): a second replica cannot be placed.
    kube.apply(embedding("greedy", namespace, gpu_type="l4", replicas=2))
    degraded = kube.wait_condition("embsvc", "greedy", namespace, "Degraded", reason="Unschedulable", timeout=60)
    assert "Insufficient nvidia.com/gpu" in degraded["message"]
    ready = kube.condition("embsvc", "greedy", namespace, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "Unschedulable"
    warnings = [e for e in kube.events(namespace, "greedy") if e["type"] == "Warning" and e["reason"] ==
                "Unschedulable"]
    assert warnings and "Insufficient nvidia.com/gpu" in warnings[0]["message"]
    # Scaling back to what fits clears it.
    kube.kubectl("scale", "embsvc/greedy", "-n", namespace, "--replicas=1")
    kube.wait_condition("embsvc", "greedy", namespace, "Ready", timeout=60)
    assert kube.condition("embsvc", "greedy", namespace, "Degraded")["status"] == "False"


def test_crashing_tei_is_crashloopbackoff_with_its_message(operator, kube, namespace):
    kube.apply(embedding("crashy", namespace, podAnnotations={"sim.tei-operator.io/fail": "crashloop"}))
    degraded = kube.wait_condition("embsvc", "crashy", namespace, "Degraded", reason="CrashLoopBackOff", timeout=60)
    assert "Could not download model artifacts" in degraded["message"]
    assert kube.condition("embsvc", "crashy", namespace, "Ready")["status"] == "False"
    # Fixing the spec (no failure annotation) recovers.
    kube.apply(embedding("crashy", namespace))
    kube.wait_condition("embsvc", "crashy", namespace, "Ready", timeout=90)
    wait_for(lambda: kube.condition("embsvc", "crashy", namespace, "Degraded")["status"] == "False", 30,
             what="Degraded=False")
