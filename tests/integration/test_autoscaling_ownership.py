"""spec.replicas of the Deployment changes hands cleanly between the operator and the autoscaler's field manager,
so the two never fight and turning autoscaling on never resets a Deployment to 1 replica."""

from __future__ import annotations


import pytest

from .conftest import wait_for
from .test_reconcile import embedding

pytestmark = pytest.mark.cluster

AUTOSCALER = "tei-operator-autoscaler"


def replicas_owner(deployment) -> set[str]:
    return {m["manager"] for m in deployment["metadata"].get("managedFields") or []
            if "f:replicas" in ((m.get("fieldsV1") or {}).get("f:spec") or {})}


def autoscaled(name, namespace, **autoscaling):
    return embedding(name, namespace, autoscaling={"enabled": True, "minReplicas": 2, "maxReplicas": 6,
                                                   **autoscaling})


def test_new_autoscaled_deployment_starts_at_min_replicas_owned_by_the_autoscaler(operator, kube, namespace):
    kube.apply(autoscaled("auto", namespace))
    dep = wait_for(lambda: kube.get("deployment", "auto", namespace), 30, what="the Deployment")
    wait_for(lambda: replicas_owner(kube.get("deployment", "auto", namespace)) == {AUTOSCALER}, 15,
             what="the autoscaler to own spec.replicas")
    assert kube.get("deployment", "auto", namespace)["spec"]["replicas"] == 2
    assert dep is not None
    # The autoscaler scales; a reconcile (spec change) must leave its count alone.
    # What the autoscaler loop does: a server-side apply of spec.replicas under its own field manager.
    kube.apply({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "auto", "namespace": namespace},
                "spec": {"replicas": 4}}, "--server-side", f"--field-manager={AUTOSCALER}", "--force-conflicts")
    kube.apply(autoscaled("auto", namespace, targetQueueSize=8))
    # observedGeneration 2 is written after the reconcile applied the Deployment: the positive sign it looked.
    wait_for(lambda: kube.get("embsvc", "auto", namespace)["status"].get("observedGeneration") == 2, 30,
             what="the spec change to be reconciled")
    assert kube.get("deployment", "auto", namespace)["spec"]["replicas"] == 4


def test_turning_autoscaling_on_keeps_the_count_and_off_takes_it_back(operator, kube, namespace):
    kube.apply(embedding("handover", namespace, replicas=3))
    kube.wait_condition("embsvc", "handover", namespace, "Ready")
    assert replicas_owner(kube.get("deployment", "handover", namespace)) == {"tei-operator"}
    kube.apply(embedding("handover", namespace, replicas=3,
                         autoscaling={"enabled": True, "minReplicas": 1, "maxReplicas": 6}))
    wait_for(lambda: replicas_owner(kube.get("deployment", "handover", namespace)) == {AUTOSCALER}, 30,
             what="the autoscaler to own spec.replicas")
    generation = kube.get("embsvc", "handover", namespace)["metadata"]["generation"]
    wait_for(lambda: kube.get("embsvc", "handover", namespace)["status"].get("observedGeneration") == generation,
             30, what="the spec change to be reconciled")
    assert kube.get("deployment", "handover", namespace)["spec"]["replicas"] == 3  # not reset to 1
    kube.apply(embedding("handover", namespace, replicas=2))  # autoscaling off again
    wait_for(lambda: kube.get("deployment", "handover", namespace)["spec"]["replicas"] == 2, 30,
             what="spec.replicas to rule again")
    assert "tei-operator" in replicas_owner(kube.get("deployment", "handover", namespace))
