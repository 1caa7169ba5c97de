"""`ServiceView.counts`: a service's pod counts are kept for the view's life only while they cannot change with time."""

from __future__ import annotations

from tei_operator.api import ServiceResource
from tei_operator.autoscaling.loop import ServiceView, count_pods, service_types

from .test_loop import T0, ready_pod

BODY = {"apiVersion": "tei-operator.io/v1alpha1", "kind": "EmbeddingService",
        "metadata": {"name": "s", "namespace": "ns", "uid": "svc-uid"},
        "spec": {"model": {"id": "BAAI/bge-m3"}, "autoscaling": {"enabled": True, "maxReplicas": 4,
                                                                "startupGraceSeconds": 60}}}


def view(pods: list[dict]) -> ServiceView:
    return ServiceView(service_types()["EmbeddingService"], BODY, ServiceResource.from_body(BODY), {"spec": {}}, pods)


def test_counts_of_ready_pods_are_kept():
    v = view([ready_pod("a", "s", "n"), ready_pod("b", "s", "n")])
    first = v.counts(T0)
    assert first.timeless and len(first.ready) == 2
    assert v.counts(T0 + 3600) is first


def test_a_loading_pod_is_counted_again_at_every_time():
    loading = {**ready_pod("c", "s", "n", created=T0 - 10), "status": {"phase": "Running"}}
    v = view([ready_pod("a", "s", "n"), loading])
    assert v.counts(T0).starting == 1 and not v.counts(T0).timeless
    later = v.counts(T0 + 120)  # past the 60 s startup grace: no longer counted as starting
    assert later.starting == 0
    assert later == count_pods(v.pods, T0 + 120, 60)
