"""The controller's status writes never drop a condition another writer added (the autoscaler's ScalingLimited).

A JSON merge patch replaces `status.conditions` whole, so the controller writes it read-modify-write: the patch
carries the resourceVersion the list was read at, and on 409 Conflict the status is rebuilt from a fresh read.
These tests run the controller's reconcile in-process, with the session's operator stopped, so that nothing else
(the autoscaler loop, which clears ScalingLimited of services without autoscaling) writes the status meanwhile.
"""

from __future__ import annotations

import json

import pytest

from tei_operator.controller import status as st
from tei_operator.controller.reconcile import OwnerKey, Outcome, Reconciler
from tei_operator.kube import KubeClient
from tei_operator.settings import Settings

from .test_reconcile import embedding

pytestmark = pytest.mark.cluster

SCALING_LIMITED = {"type": "ScalingLimited", "status": "True", "reason": "MaxReplicas",
                   "message": "Desired 9 replicas, limited to maxReplicas 8", "lastTransitionTime": "2026-01-01T00:00:00Z",
                   "observedGeneration": 1}


def _conditions(kube, namespace, name):
    return {c["type"]: c for c in (kube.get("embsvc", name, namespace)["status"].get("conditions") or [])}


def _add_scaling_limited(kube, namespace, name):
    """What the autoscaler does: read the conditions, add its own, write the list back."""
    current = list(_conditions(kube, namespace, name).values())
    kube.kubectl("patch", "embsvc", name, "-n", namespace, "--subresource=status", "--type=merge", "-p",
                 json.dumps({"status": {"conditions": current + [SCALING_LIMITED]}}))
    assert "ScalingLimited" in _conditions(kube, namespace, name)


@pytest.fixture
def take_over(operator, kubeconfig):
    """Call it to stop the session's operator and get a Reconciler of our own (and its client) instead; the
    operator is started again after the test."""
    clients: list[KubeClient] = []

    def stop_and_replace() -> tuple[KubeClient, Reconciler]:
        operator.stop()
        clients.append(KubeClient.from_environment(kubeconfig))
        return clients[0], Reconciler(clients[0], Settings())

    try:
        yield stop_and_replace
    finally:
        for client in clients:
            client.close()
        if not operator.alive():
            operator.start()


async def test_a_controller_status_write_keeps_the_autoscalers_condition(operator, kube, namespace, take_over):
    kube.apply(embedding("keep", namespace))
    kube.wait_condition("embsvc", "keep", namespace, "Ready")
    _, reconciler = take_over()
    _add_scaling_limited(kube, namespace, "keep")
    kube.apply(embedding("keep", namespace, replicas=2))  # a spec change: the controller writes its status
    outcome = await reconciler.reconcile(OwnerKey("EmbeddingService", namespace, "keep"))
    assert outcome.status_patch.get("observedGeneration") == 2 and "conditions" in outcome.status_patch
    conditions = _conditions(kube, namespace, "keep")
    assert conditions["ScalingLimited"] == SCALING_LIMITED
    assert conditions["Ready"]["observedGeneration"] == 2
    # The STATUS column the controller writes reflects the autoscaler's limit: the service serves (one replica was
    # Ready before the change) and is held at maxReplicas.
    assert conditions["Available"]["status"] == "True"
    assert kube.get("embsvc", "keep", namespace)["status"]["summary"] == "LimitedByMaxReplicas"


async def test_a_status_computed_from_a_stale_read_is_recomputed_not_written(operator, kube, namespace, take_over):
    kube.apply(embedding("stale", namespace))
    kube.wait_condition("embsvc", "stale", namespace, "Ready")
    client, reconciler = take_over()
    stale = await client.get(reconciler.kinds["EmbeddingService"], "stale", namespace)
    _add_scaling_limited(kube, namespace, "stale")  # written after our read: the read is stale now
    generation = stale["metadata"]["generation"]
    outcome = Outcome(OwnerKey("EmbeddingService", namespace, "stale"))
    # A status that differs from the stored one in our conditions (as if the Deployment had gone).
    await reconciler.write_status(stale, outcome, lambda latest: st.build_status(
        generation=generation, deployment=None, pods=[], current=latest, now=st.now_rfc3339()))
    conditions = _conditions(kube, namespace, "stale")
    assert conditions["Ready"]["reason"] == "DeploymentMissing"  # our write happened ...
    assert conditions["ScalingLimited"] == SCALING_LIMITED       # ... on top of the autoscaler's
