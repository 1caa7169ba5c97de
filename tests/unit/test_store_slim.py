"""What the watch-fed store keeps of the operator's own objects (controller/cache.py): everything its readers read,
without the managedFields they do not (the largest part of a stored Deployment or pod)."""

from __future__ import annotations

import copy

from tei_operator.autoscaling.loop import count_pods, pod_target
from tei_operator.controller.applied import apply_reason, with_applied_hash
from tei_operator.controller.cache import KOPF_DIFFBASE_ANNOTATION, ObjectStore, slim_owned
from tei_operator.controller.ownership import foreign_template_fields
from tei_operator import kube as k
from tei_operator.kube import DEPLOYMENT, POD, owns_field

from .test_status import OURS, edited_deployment

STATUS_FIELDS = {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status",
                 "fieldsV1": {"f:status": {"f:conditions": {}, "f:replicas": {}}}}


def test_a_deployment_keeps_what_hand_edit_detection_reads_and_nothing_else_of_its_managed_fields():
    live = edited_deployment()
    live["metadata"]["managedFields"] += [
        {"manager": "tei-operator-autoscaler", "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
        {"manager": "kube-controller-manager", "operation": "Update", "fieldsV1": {
            "f:metadata": {"f:annotations": {"f:deployment.kubernetes.io/revision": {}}}}}]  # nothing read: dropped
    slim = slim_owned(live)
    assert foreign_template_fields(slim, OURS) == foreign_template_fields(live, OURS)
    assert foreign_template_fields(slim, OURS)  # the fixture has hand edits: the comparison is not of two []
    # Who holds spec.replicas (the autoscaler's hand-over in reconcile) reads the same.
    for manager in ("tei-operator-autoscaler", "tei-operator", "kubectl-set"):
        assert owns_field(slim, manager, "spec", "replicas") == owns_field(live, manager, "spec", "replicas")
    assert owns_field(slim, "tei-operator-autoscaler", "spec", "replicas")
    kept = slim["metadata"]["managedFields"]
    assert all("subresource" not in e and list(e["fieldsV1"]) == ["f:spec"]
               and set(e["fieldsV1"]["f:spec"]) <= {"f:template", "f:replicas"} for e in kept)
    assert len(kept) == 7  # the status entry and the one of metadata only are gone
    assert {k: v for k, v in slim.items() if k != "metadata"} == {k: v for k, v in live.items() if k != "metadata"}


def test_equal_field_sets_of_many_deployments_are_held_once():
    one, two = edited_deployment(), edited_deployment()
    two["metadata"]["name"] = "other"
    a, b = slim_owned(one), slim_owned(two)
    assert a["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"] is \
        b["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]
    # ... and the stored object is a copy: changing the input afterwards does not reach it.
    one["spec"]["template"]["spec"]["containers"][0]["image"] = "changed"
    assert a["spec"]["template"]["spec"]["containers"][0]["image"] != "changed"


def our_pod() -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "svc-abc", "namespace": "ns", "uid": "u1", "resourceVersion": "9",
                         "creationTimestamp": "2026-01-01T00:00:00Z",
                         "labels": {"app.kubernetes.io/managed-by": "tei-operator", "tei-operator.io/service": "svc"},
                         "managedFields": [copy.deepcopy(STATUS_FIELDS),
                                           {"manager": "kube-scheduler", "operation": "Update",
                                            "fieldsV1": {"f:spec": {"f:nodeName": {}}}}]},
            "spec": {"nodeName": "n1", "containers": [{"name": "tei", "ports": [{"containerPort": 8080}],
                                                      "resources": {"limits": {"nvidia.com/gpu": "1"}}}]},
            "status": {"phase": "Running", "podIP": "198.18.0.7",
                       "conditions": [{"type": "Ready", "status": "True",
                                       "lastTransitionTime": "2026-01-01T00:01:00Z"}]}}


def test_our_pods_and_services_lose_managed_fields_and_kopfs_copy_only():
    store = ObjectStore()
    pod = our_pod()
    store.put(pod)
    stored = store.get_now(POD, "svc-abc", "ns")
    assert "managedFields" not in stored["metadata"]
    without = copy.deepcopy(pod)
    del without["metadata"]["managedFields"]
    assert stored == without
    # What the autoscaler reads of it is the same.
    assert pod_target(stored) == pod_target(pod)
    slim_counts, whole_counts = count_pods([stored], 1.8e9, 600), count_pods([pod], 1.8e9, 600)
    assert (len(slim_counts.ready), slim_counts.starting, slim_counts.pending, slim_counts.load_seconds) == \
        (len(whole_counts.ready), whole_counts.starting, whole_counts.pending, whole_counts.load_seconds) == \
        (1, 0, 0, 60.0)
    service = {"apiVersion": "tei-operator.io/v1alpha1", "kind": "EmbeddingService",
               "metadata": {"name": "svc", "namespace": "ns", "resourceVersion": "3",
                            "annotations": {KOPF_DIFFBASE_ANNOTATION: '{"spec": {}}', "team": "search"},
                            "managedFields": [copy.deepcopy(STATUS_FIELDS)]},
               "spec": {"model": {"id": "BAAI/bge-small-en-v1.5"}}}
    slim = slim_owned(service)
    assert slim["metadata"]["annotations"] == {"team": "search"} and "managedFields" not in slim["metadata"]
    assert service["metadata"]["annotations"][KOPF_DIFFBASE_ANNOTATION]  # the input is left alone


def test_a_slimmed_child_needs_an_apply_exactly_when_the_whole_one_does():
    manifest = with_applied_hash({"apiVersion": "apps/v1", "kind": "Deployment",
                                  "metadata": {"name": "svc", "namespace": "ns", "labels": {"a": "b"}},
                                  "spec": {"replicas": 1, "template": {"spec": {"containers": [
                                      {"name": "tei", "image": "tei:1"}]}}}})
    live = copy.deepcopy(manifest)
    live["metadata"]["managedFields"] = [copy.deepcopy(STATUS_FIELDS)]
    store = ObjectStore()
    store.put(live)
    assert apply_reason(manifest, store.get_now(DEPLOYMENT, "svc", "ns")) is None
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "tei:2"
    live["metadata"]["resourceVersion"] = "2"
    store.put(live)
    assert apply_reason(manifest, store.get_now(DEPLOYMENT, "svc", "ns")) == apply_reason(manifest, live)
    assert apply_reason(manifest, live) is not None


def test_a_list_fed_page_by_page_replaces_the_store_as_the_whole_list_does():
    def pods(names, rv):
        return [{**our_pod(), "metadata": {**our_pod()["metadata"], "name": n, "resourceVersion": str(rv)}}
                for n in names]

    whole, paged = ObjectStore(), ObjectStore()
    for store in (whole, paged):
        store.put(pods(["gone"], 1)[0])
        store.put(pods(["kept"], 1)[0])
    listed = pods(["kept"], 1) + pods(["new-a", "new-b", "new-c"], 2)
    changed_whole = whole.replace(POD, None, listed)
    replacement = paged.replacement(POD, None)
    for page in (listed[:2], listed[2:]):
        replacement.add(page)
    changed_paged = replacement.finish()
    names = lambda objs: sorted(o["metadata"]["name"] for o in objs)  # noqa: E731
    assert names(changed_paged) == names(changed_whole) == ["gone", "new-a", "new-b", "new-c"]
    assert names(paged.list_now(POD)) == names(whole.list_now(POD)) == ["kept", "new-a", "new-b", "new-c"]


def test_a_new_version_that_changes_nothing_kept_is_stored_without_counting_as_a_change():
    store = ObjectStore()
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "resourceVersion": "1"},
            "status": {"allocatable": {"nvidia.com/gpu": "8"}, "conditions": [{"type": "Ready", "status": "True"}]}}
    store.put(node)
    version = store.version
    heartbeat = copy.deepcopy(node)
    heartbeat["metadata"]["resourceVersion"] = "2"
    heartbeat["status"]["conditions"][0]["lastHeartbeatTime"] = "2026-01-01T00:00:10Z"  # slimmed away
    assert store.put(heartbeat)
    assert store.version == version and store.namespace_version(None) == store.namespace_version(None)
    assert store.get_now(k.NODE, "n1", None)["metadata"]["resourceVersion"] == "2"  # the newer version is held
    cordoned = copy.deepcopy(heartbeat)
    cordoned["metadata"]["resourceVersion"] = "3"
    cordoned["spec"] = {"unschedulable": True}
    store.put(cordoned)
    assert store.version == version + 1


def _parsed_deployment(name: str, rv: int) -> dict:
    """A Deployment as one watch event delivers it: parsed from its own JSON (so its strings are its own)."""
    import json

    live = edited_deployment()
    live["metadata"].update(name=name, resourceVersion=str(rv), namespace="team-a")
    return json.loads(json.dumps(live))


def test_stored_objects_share_their_keys_and_short_strings_instead_of_holding_a_copy_each():
    store = ObjectStore()
    one, two = _parsed_deployment("one", 1), _parsed_deployment("two", 2)
    assert next(iter(one["spec"])) is not next(iter(two["spec"]))  # two parses: two copies of every key
    store.put(one)
    store.put(two)
    a, b = store.get_now(DEPLOYMENT, "one", "team-a"), store.get_now(DEPLOYMENT, "two", "team-a")
    assert a == slim_owned(one) and b["metadata"]["name"] == "two"
    key_a = next(key for key in a["spec"] if key == "template")
    key_b = next(key for key in b["spec"] if key == "template")
    assert key_a is key_b  # one "template" for the fleet
    image_a = a["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image_a is b["spec"]["template"]["spec"]["containers"][0]["image"]
    # A copy all the same: what the caller does to its object later does not reach the store.
    one["spec"]["template"]["spec"]["containers"][0]["image"] = "changed"
    assert a["spec"]["template"]["spec"]["containers"][0]["image"] == image_a != "changed"


def test_a_foreign_pod_is_stored_without_references_into_its_parsed_event():
    store = ObjectStore()
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "p", "namespace": "other", "resourceVersion": "5", "labels": {"app": "x"}},
           "spec": {"nodeName": "n1", "containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]},
           "status": {"phase": "Running"}}
    store.put(pod)
    held = store.get_now(POD, "p", "other")
    assert held["metadata"]["labels"] == {"app": "x"} and held["metadata"]["labels"] is not pod["metadata"]["labels"]
    assert held["spec"]["containers"][0]["resources"] is not pod["spec"]["containers"][0]["resources"]


def test_equal_subtrees_of_stored_objects_are_held_once_and_types_are_kept():
    store = ObjectStore()
    one, two = _parsed_deployment("one", 1), _parsed_deployment("two", 2)
    store.put(one)
    store.put(two)
    a, b = store.get_now(DEPLOYMENT, "one", "team-a"), store.get_now(DEPLOYMENT, "two", "team-a")
    # The containers are equal in both Deployments: one list for both; their metadata differ: one each.
    assert a["spec"]["template"]["spec"]["containers"] is b["spec"]["template"]["spec"]["containers"]
    assert a["metadata"] is not b["metadata"] and (a["metadata"]["name"], b["metadata"]["name"]) == ("one", "two")
    assert a == slim_owned(one) and b == slim_owned(two)
    # Equal in Python is not equal in JSON: True == 1 and 1 == 1.0, but a stored true stays true.
    for value in (True, 1, 1.0, "1", None):
        obj = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"s-{value!r}", "namespace": "x"},
               "spec": {"flag": value, "list": [value]}}
        store.put(obj)
        held = store.get_now(k.SERVICE, f"s-{value!r}", "x")
        assert type(held["spec"]["flag"]) is type(value) and type(held["spec"]["list"][0]) is type(value)
    # Same keys in another order: another dict (the order is kept as received).
    store.put({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ab", "namespace": "x"},
               "spec": {"a": 1, "b": 2}})
    store.put({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ba", "namespace": "x"},
               "spec": {"b": 2, "a": 1}})
    assert list(store.get_now(k.SERVICE, "ba", "x")["spec"]) == ["b", "a"]


def test_shared_subtrees_of_objects_no_longer_stored_are_purged():
    from tei_operator.controller import cache

    store = ObjectStore()
    kept, gone = _parsed_deployment("kept", 1), _parsed_deployment("gone", 2)
    gone["spec"]["template"]["spec"]["containers"][0]["args"] = ["--only-in-gone"]
    store.put(kept)
    store.put(gone)
    only_gone = store.get_now(DEPLOYMENT, "gone", "team-a")["spec"]["template"]["spec"]["containers"][0]["args"]
    in_table = {id(node) for node in cache._SHARED.values()}
    assert id(only_gone) in in_table
    store.delete(gone)
    del only_gone
    cache.purge_shared()
    left = {id(node) for node in cache._SHARED.values()}
    held = store.get_now(DEPLOYMENT, "kept", "team-a")
    assert id(held["spec"]["template"]["spec"]["containers"]) in left  # still stored: still shared
    assert len(left) < len(in_table)  # what only "gone" held went with it
    assert not any(node == ["--only-in-gone"] for node in cache._SHARED.values())
