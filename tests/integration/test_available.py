"""Available vs Ready on the real control plane: a service that serves stays healthy for kstatus (Flux, kpt) and
`kubectl wait --for=condition=Available` while a replica waits for a GPU, and the STATUS column says why it is not
Ready."""

from __future__ import annotations

import json

import pytest

from .conftest import wait_for
from .test_reconcile import embedding
from tests.kstatus import kstatus

pytestmark = pytest.mark.cluster


def conditions(obj):
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def test_a_service_serving_while_a_replica_waits_for_a_gpu_is_available_and_current(operator, kube, namespace):
    # The l4 pool is one node with one GPU (CONTRACTS.md): one replica serves, the second cannot be placed.
    kube.apply(embedding("serving", namespace, gpu_type="l4", replicas=2))
    ready = kube.wait_condition("embsvc", "serving", namespace, "Ready", status="False", reason="Unschedulable",
                                timeout=60)
    assert "Insufficient nvidia.com/gpu" in ready["message"]
    available = kube.wait_condition("embsvc", "serving", namespace, "Available", reason="MinimumReplicasReady",
                                    timeout=60)
    assert "1 of 2 replicas ready" in available["message"]
    # kubectl wait for serving returns at once; for Ready it would block (the replica never fits).
    kube.kubectl("wait", "--for=condition=Available", "embsvc/serving", "-n", namespace, "--timeout=10s")
    blocked = kube.kubectl("wait", "--for=condition=Ready", "embsvc/serving", "-n", namespace, "--timeout=2s",
                           check=False)
    assert blocked.returncode != 0

    obj = wait_for(lambda: (o := kube.get("embsvc", "serving", namespace)) and
                   conditions(o)["Reconciling"]["reason"] == "MinimumReplicasReady" and o, 30,
                   what="Reconciling=False (MinimumReplicasReady)")
    conds = conditions(obj)
    assert conds["Reconciling"]["status"] == "False" and conds["Stalled"]["status"] == "False"
    assert "Insufficient nvidia.com/gpu" in conds["Reconciling"]["message"]  # says what the other replica waits for
    assert conds["Degraded"]["status"] == "True"  # a human still hears about the missing capacity
    assert kstatus(obj) == "Current"
    assert obj["status"]["summary"] == "Unschedulable"

    # The STATUS column is status.summary, as kubectl prints it.
    table = json.loads(kube.kubectl("get", "embsvc", "serving", "-n", namespace, "-o", "json").stdout)
    assert table["status"]["summary"] == "Unschedulable"
    printed = kube.kubectl("get", "embsvc", "serving", "-n", namespace, "--no-headers",
                           "-o", "custom-columns=STATUS:.status.summary").stdout.split()
    assert printed == ["Unschedulable"]
    wide = kube.kubectl("get", "embsvc", "serving", "-n", namespace, "-o", "wide").stdout
    header, row = wide.splitlines()[:2]
    columns = dict(zip(header.split(), row.split()))
    assert columns["STATUS"] == "Unschedulable" and columns["AVAILABLE"] == "True"

    # Asking for two serving replicas makes it stop serving: a Warning says so, once.
    kube.apply(embedding("serving", namespace, gpu_type="l4", replicas=2, minAvailable=2))
    kube.wait_condition("embsvc", "serving", namespace, "Available", status="False", timeout=30)
    warnings = wait_for(lambda: [e for e in kube.events(namespace, "serving") if e["reason"] == "Unavailable"], 30,
                        what="the Unavailable Warning")
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning"
    assert "stopped serving" in warnings[0]["message"] and "2 needed to serve" in warnings[0]["message"]
    assert kstatus(kube.get("embsvc", "serving", namespace)) == "InProgress"

    # Scaled to what fits, it is Ready as well.
    kube.kubectl("scale", "embsvc/serving", "-n", namespace, "--replicas=1")
    kube.wait_condition("embsvc", "serving", namespace, "Ready", timeout=60)
    wait_for(lambda: kube.get("embsvc", "serving", namespace)["status"].get("summary") == "AllReplicasReady", 30,
             what="summary AllReplicasReady")
