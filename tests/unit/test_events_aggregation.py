"""The pure parts of Event aggregation (tei_operator/kube_events.py): which events are "the same" Event, the
names they get, the body of a first occurrence, the patch of a repeat, and the bounded memory of recent Events.
The requests themselves (create, 409, patch, 404) are tested against the real API server in
tests/integration/test_events.py."""

from __future__ import annotations

import re

import pytest

from tei_operator.kube_events import (
    MAX_MESSAGE_CHARS, MAX_NAME_CHARS, RecentEvents, event_key, event_name, event_namespace, new_event, repeat_patch,
)

SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def service(name: str = "bge-m3", uid: str = "uid-1", namespace: str = "search") -> dict:
    return {"apiVersion": "tei-operator.io/v1alpha1", "kind": "EmbeddingService",
            "metadata": {"name": name, "namespace": namespace, "uid": uid}}


def key(obj: dict | None = None, **overrides):
    args = {"reason": "DriftReverted", "message": "Reverted a hand edit of Deployment bge-m3: env FOO added",
            "type": "Warning", "action": None, "component": "tei-operator"}
    args.update(overrides)
    return event_key(obj or service(), **args)


def test_the_same_event_about_the_same_object_gets_the_same_name():
    assert event_name(key()) == event_name(key())
    assert event_name(key()).startswith("bge-m3.")


@pytest.mark.parametrize("change", [
    {"reason": "Stalled"}, {"type": "Normal"}, {"message": "Reverted a hand edit of Deployment bge-m3: image"},
    {"component": "tei-operator-autoscaler"}, {"action": "Revert"},
])
def test_anything_that_makes_it_a_different_event_changes_the_name(change):
    assert event_name(key(**change)) != event_name(key())


@pytest.mark.parametrize("other", [
    service(uid="uid-2"),  # the same name, deleted and created again: a new object
    service(name="e5"),
    service(namespace="other"),
    {**service(), "kind": "RerankerService"},
])
def test_events_about_different_objects_get_different_names(other):
    assert event_name(key(other)) != event_name(key())


def test_fields_cannot_shift_into_each_other_and_collide():
    a = key(reason="Scaled", message="Up|x")
    b = key(reason="Scaled|Up", message="x")
    assert event_name(a) != event_name(b)


def test_the_name_is_a_valid_subdomain_even_for_a_long_or_odd_object_name():
    long = key(service(name="a" * 250 + "-b"))
    assert len(event_name(long)) <= MAX_NAME_CHARS and SUBDOMAIN.match(event_name(long))
    # Cut right after a dash or a dot: the cut must not leave a label ending in one.
    for name in ("x" * 235 + "-" + "y" * 30, "x" * 235 + "." + "y" * 30, "svc.-odd", "Upper_Case"):
        got = event_name(key(service(name=name)))
        assert SUBDOMAIN.match(got), got
        assert len(got) <= MAX_NAME_CHARS


def test_the_message_is_cut_to_the_api_servers_limit_and_the_cut_message_is_the_key():
    long_a = key(message="m" * 2000)
    long_b = key(message="m" * 3000)  # the same once cut: the same Event
    assert len(long_a.message) == MAX_MESSAGE_CHARS
    assert event_name(long_a) == event_name(long_b)


def test_bad_type_or_empty_reason_is_refused_with_the_field_named():
    with pytest.raises(ValueError, match="type 'warning' is not one of Normal, Warning"):
        key(type="warning")
    with pytest.raises(ValueError, match="reason must not be empty"):
        key(reason="")


def test_a_first_occurrence_counts_one_and_names_the_object_and_the_reporter():
    k = key()
    body = new_event(k, now="2026-01-01T00:00:00Z", reporting_instance="h" * 300)
    assert body["metadata"] == {"name": event_name(k), "namespace": "search"}
    assert body["involvedObject"] == {"apiVersion": "tei-operator.io/v1alpha1", "kind": "EmbeddingService",
                                      "name": "bge-m3", "namespace": "search", "uid": "uid-1"}
    assert (body["count"], body["firstTimestamp"], body["lastTimestamp"]) == (1, "2026-01-01T00:00:00Z",
                                                                               "2026-01-01T00:00:00Z")
    assert body["source"] == {"component": "tei-operator"} and body["reportingComponent"] == "tei-operator"
    assert body["action"] == "DriftReverted" and body["type"] == "Warning"
    assert len(body["reportingInstance"]) == 128


def test_events_about_a_cluster_scoped_object_go_to_default():
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "gpu-1", "uid": "n1"}}
    k = key(node)
    assert event_namespace(k) == "default"
    assert new_event(k, now="t", reporting_instance="h")["involvedObject"]["namespace"] is None


def test_a_repeat_counts_on_top_of_what_was_read_and_is_conditional_on_it():
    existing = {"metadata": {"resourceVersion": "42"}, "count": 4, "firstTimestamp": "2026-01-01T00:00:00Z"}
    assert repeat_patch(existing, now="2026-01-01T00:05:00Z") == {
        "count": 5, "lastTimestamp": "2026-01-01T00:05:00Z", "metadata": {"resourceVersion": "42"}}


def test_a_repeat_of_an_event_written_without_count_or_first_timestamp():
    existing = {"metadata": {"resourceVersion": "7"}, "lastTimestamp": "2026-01-01T00:00:00Z"}
    patch = repeat_patch(existing, now="2026-01-01T00:01:00Z")
    assert patch["count"] == 2 and patch["firstTimestamp"] == "2026-01-01T00:00:00Z"


def test_recent_events_remembers_what_a_repeat_needs_and_forgets_the_least_recent():
    recent = RecentEvents(capacity=2)
    for name, rv in (("a", "1"), ("b", "2")):
        recent.put({"metadata": {"name": name, "namespace": "ns", "resourceVersion": rv, "managedFields": [{}]},
                    "count": 1, "firstTimestamp": "t0", "lastTimestamp": "t0", "message": "long text"})
    assert recent.get("ns", "a") == {"metadata": {"resourceVersion": "1"}, "count": 1, "firstTimestamp": "t0",
                                     "lastTimestamp": "t0"}
    recent.put({"metadata": {"name": "c", "namespace": "ns", "resourceVersion": "3"}, "count": 1})
    assert len(recent) == 2
    assert recent.get("ns", "b") is None  # "a" was used more recently than "b"
    assert recent.get("ns", "a") is not None and recent.get("ns", "c") is not None
    recent.forget("ns", "a")
    assert recent.get("ns", "a") is None
    with pytest.raises(ValueError, match="capacity must be at least 1"):
        RecentEvents(capacity=0)
