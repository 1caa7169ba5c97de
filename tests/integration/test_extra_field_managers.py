"""Tools the settings trust may edit a TEI Deployment's pod template: their fields survive, everyone else's additions
are still removed. The session's operator runs with TEI_OPERATOR_EXTRA_FIELD_MANAGERS=reloader,mesh-injector-*
(conftest.py)."""

from __future__ import annotations

import json

import pytest

from .conftest import wait_for
from .test_reconcile import embedding

pytestmark = pytest.mark.cluster

PROMPT = 15  # seconds: the operator reacts to Deployment events within seconds
RELOADED = "reloader.stakater.com/last-reloaded-from"
INJECTED = "sidecar.mesh.example.com/status"
HAND_EDIT = "team.example.com/hand-edit"


def _annotate(kube, name, namespace, key, value, *manager):
    patch = {"spec": {"template": {"metadata": {"annotations": {key: value}}}}}
    kube.kubectl("patch", "deployment", name, "-n", namespace, "--type=merge", "-p", json.dumps(patch), *manager)


def _template_annotations(kube, name, namespace):
    return kube.get("deployment", name, namespace)["spec"]["template"]["metadata"].get("annotations") or {}


def test_a_trusted_managers_template_change_survives_and_a_hand_edit_does_not(operator, kube, namespace):
    kube.apply(embedding("reloaded", namespace))
    kube.wait_condition("embsvc", "reloaded", namespace, "Ready")
    _annotate(kube, "reloaded", namespace, RELOADED, "configmap/tei-config", "--field-manager=reloader")
    _annotate(kube, "reloaded", namespace, INJECTED, "injected", "--field-manager=mesh-injector-v2")  # by prefix
    # The control: the same kind of edit by an untrusted manager (kubectl-patch). Once it is gone, the operator has
    # reconciled a Deployment holding all three.
    _annotate(kube, "reloaded", namespace, HAND_EDIT, "1")
    wait_for(lambda: HAND_EDIT not in _template_annotations(kube, "reloaded", namespace), PROMPT,
             what=f"the hand-edited pod annotation {HAND_EDIT} to be removed")
    annotations = _template_annotations(kube, "reloaded", namespace)
    assert annotations.get(RELOADED) == "configmap/tei-config"
    assert annotations.get(INJECTED) == "injected"
    reverts = [e["message"] for e in kube.events(namespace, "reloaded") if e["reason"] == "DriftReverted"]
    assert any(f"pod annotation {HAND_EDIT} added by kubectl-patch" in m for m in reverts), reverts
    assert not any("reloader" in m or "mesh-injector" in m for m in reverts), reverts

    # No fight: the rollout the trusted edit started completes, and the Deployment then stays put.
    kube.wait_condition("embsvc", "reloaded", namespace, "Ready", timeout=60)
    generation = kube.get("deployment", "reloaded", namespace)["metadata"]["generation"]
    kube.reconciled("embsvc", "reloaded", namespace, operator)  # the operator looked again at the finished rollout
    deployment = kube.get("deployment", "reloaded", namespace)
    assert deployment["metadata"]["generation"] == generation
    assert deployment["spec"]["template"]["metadata"]["annotations"].get(RELOADED) == "configmap/tei-config"
    pods = kube.list("pods", namespace, "tei-operator.io/service=reloaded")
    assert pods and all((p["metadata"].get("annotations") or {}).get(RELOADED) == "configmap/tei-config"
                        for p in pods if not p["metadata"].get("deletionTimestamp"))
