"""Apply only on difference (controller/applied.py): the applied hash and the drift check over a cached object."""

from __future__ import annotations

import copy
import hashlib
import json

from tei_operator.api import ServiceResource
from tei_operator.controller.applied import (APPLIED_HASH_ANNOTATION, ApplyReasons, apply_reason, applied_hash,
                                             drift, quantity, with_applied_hash)
from tei_operator.render import render_children
from tei_operator.settings import Settings


def rendered() -> list[dict]:
    body = {"apiVersion": "tei-operator.io/v1alpha1", "kind": "EmbeddingService",
            "metadata": {"name": "e", "namespace": "ns", "uid": "u-1", "generation": 1},
            "spec": {"model": {"id": "BAAI/bge-small-en-v1.5"}, "gpu": {"count": 0}, "replicas": 2}}
    return [with_applied_hash(m) for m in render_children(ServiceResource.from_body(body), Settings()).all()]


def as_stored(manifest: dict) -> dict:
    """What the API server returns for an apply of `manifest`: server fields and defaults added."""
    live = copy.deepcopy(manifest)
    live["metadata"].update(resourceVersion="42", uid="x", generation=3, creationTimestamp="2026-01-01T00:00:00Z",
                            managedFields=[{"manager": "tei-operator", "operation": "Apply"}])
    spec = live.get("spec") or {}
    if manifest["kind"] == "Deployment":
        spec.setdefault("revisionHistoryLimit", 10)
        for container in spec["template"]["spec"]["containers"]:
            container["terminationMessagePath"] = "/dev/termination-log"
            for port in container.get("ports") or []:
                port.setdefault("protocol", "TCP")
        live["status"] = {"replicas": 2}
    if manifest["kind"] == "Service":
        spec["clusterIP"] = "10.0.0.7"
    return live


def test_the_hash_is_stable_and_ignores_its_own_annotation():
    manifest = rendered()[0]
    assert applied_hash(manifest) == applied_hash(copy.deepcopy(manifest))
    assert manifest["metadata"]["annotations"][APPLIED_HASH_ANNOTATION] == applied_hash(manifest)
    changed = copy.deepcopy(manifest)
    changed["spec"]["replicas"] = 3
    assert applied_hash(changed) != applied_hash(manifest)


def test_nothing_to_apply_when_the_stored_object_is_as_rendered_with_server_defaults():
    for manifest in rendered():
        assert apply_reason(manifest, as_stored(manifest)) is None, manifest["kind"]


def test_missing_child_and_a_new_render_are_applied():
    manifest = rendered()[0]
    assert apply_reason(manifest, None) == "missing"
    old = as_stored(manifest)
    old["metadata"]["annotations"][APPLIED_HASH_ANNOTATION] = "0000"
    assert apply_reason(manifest, old) == "rendered differently"
    unstamped = as_stored(manifest)
    del unstamped["metadata"]["annotations"][APPLIED_HASH_ANNOTATION]
    assert apply_reason(manifest, unstamped) == "rendered differently"


def test_a_hand_edit_of_one_of_our_fields_is_drift():
    deployment = next(m for m in rendered() if m["kind"] == "Deployment")
    live = as_stored(deployment)
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:latest"
    assert "spec.template.spec.containers[tei].image" in drift(deployment, live)
    live = as_stored(deployment)
    del live["metadata"]["labels"]["app.kubernetes.io/managed-by"]
    assert apply_reason(deployment, live).startswith("drift in metadata.labels")
    live = as_stored(deployment)
    live["spec"]["replicas"] = 5
    assert drift(deployment, live) == ["spec.replicas"]


def test_fields_someone_else_added_are_not_drift_here():
    # (ownership.py removes those from the pod template; the apply would not)
    deployment = next(m for m in rendered() if m["kind"] == "Deployment")
    live = as_stored(deployment)
    live["spec"]["template"]["spec"]["containers"][0].setdefault("env", []).append({"name": "FOO", "value": "1"})
    live["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "2"
    assert apply_reason(deployment, live) is None


def test_quantities_compare_by_value_and_unnamed_list_items_by_content():
    assert quantity("500m") == quantity("0.5") and quantity("1Gi") == quantity(str(2**30))
    assert quantity("abc") is None and quantity(True) is None
    assert drift({"cpu": "0.5", "memory": "1024Mi"}, {"cpu": "500m", "memory": "1Gi"}) == []
    assert drift({"cpu": "1"}, {"cpu": "2"}) == ["cpu"]
    assert drift({"t": [{"key": "a"}, {"key": "b"}]}, {"t": [{"key": "b", "effect": "X"}, {"key": "a"}]}) == []
    assert drift({"t": [{"key": "a"}]}, {"t": [{"key": "b"}]}) == ["t[0]"]
    assert drift({"args": ["--a", "1"]}, {"args": ["--a", "2"]}) == ["args"]
    assert drift({"flag": True}, {"flag": "true"}) == ["flag"]
    assert drift({"empty": {}, "none": None}, {}) == []


def test_the_hash_is_the_canonical_json_of_the_manifest_without_its_annotation():
    """The hash of 0.1.0's children, spelled out: an operator whose hashing changed would re-apply every child of
    every service after an upgrade."""
    for manifest in rendered():
        body = json.loads(json.dumps(manifest))
        del body["metadata"]["annotations"][APPLIED_HASH_ANNOTATION]
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
        assert applied_hash(manifest) == hashlib.sha256(canonical.encode()).hexdigest()[:16], manifest["kind"]


def test_with_applied_hash_leaves_the_manifest_it_was_given_as_it_was():
    manifest = render_children(ServiceResource.from_body({
        "apiVersion": "tei-operator.io/v1alpha1", "kind": "EmbeddingService",
        "metadata": {"name": "e", "namespace": "ns", "uid": "u-1", "generation": 1},
        "spec": {"model": {"id": "BAAI/bge-small-en-v1.5"}, "gpu": {"count": 0}}}), Settings()).deployment
    before = copy.deepcopy(manifest)
    stamped = with_applied_hash(manifest)
    assert manifest == before
    assert stamped["metadata"]["annotations"][APPLIED_HASH_ANNOTATION] == applied_hash(manifest)
    assert {k: v for k, v in stamped["metadata"]["annotations"].items() if k != APPLIED_HASH_ANNOTATION} == \
        before["metadata"].get("annotations", {})


def test_apply_reasons_remember_an_object_version_found_as_rendered_and_nothing_else():
    reasons = ApplyReasons()
    manifest = rendered()[0]
    live = as_stored(manifest)
    assert reasons.reason(manifest, live) is None and reasons.remembered == 0
    assert reasons.reason(manifest, live) is None and reasons.remembered == 1
    # A hand edit comes with a new resourceVersion: checked again, and found.
    edited = copy.deepcopy(live)
    edited["metadata"]["resourceVersion"] = "43"
    edited["spec"]["template"]["spec"]["containers"][0]["image"] = "elsewhere/tei:1"
    assert reasons.reason(manifest, edited).startswith("drift in ")
    assert reasons.reason(manifest, edited).startswith("drift in ")  # a drift is never remembered as "nothing"
    # A new render (another hash) over the version remembered as clean: checked again.
    assert reasons.reason(manifest, live) is None
    remembered = reasons.remembered
    changed = with_applied_hash({**manifest, "spec": {**manifest["spec"], "replicas": 5}})
    assert reasons.reason(changed, live) == "rendered differently" and reasons.remembered == remembered
    # Without a resourceVersion (not from the API server) nothing is remembered.
    unversioned = copy.deepcopy(live)
    del unversioned["metadata"]["resourceVersion"]
    assert [reasons.reason(manifest, unversioned) for _ in range(2)] == [None, None]
    assert reasons.remembered == remembered


def test_apply_reasons_forget_the_least_recently_checked_children_beyond_their_size():
    reasons = ApplyReasons(size=2)
    manifests = rendered()[:3]
    lives = [as_stored(m) for m in manifests]
    for manifest, live in zip(manifests, lives):
        assert reasons.reason(manifest, live) is None
    assert reasons.remembered == 0
    assert reasons.reason(manifests[0], lives[0]) is None and reasons.remembered == 0  # forgotten: checked again
    assert reasons.reason(manifests[2], lives[2]) is None and reasons.remembered == 1
