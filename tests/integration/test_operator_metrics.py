"""The running operator's own /metrics: scraped over HTTP, the reconcile counters move when a service is created,
and the other series the alerts and dashboard read are there."""

from __future__ import annotations

import urllib.request

import pytest

from .conftest import service_manifest, wait_for

pytestmark = pytest.mark.cluster

CPU_SPEC = {"model": {"id": "BAAI/bge-small-en-v1.5"}, "gpu": {"count": 0}}


def test_reconcile_counters_move_when_a_service_is_created(kube, operator, namespace):
    with urllib.request.urlopen(operator.metrics_url, timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
    queries = {
        "success": ("tei_operator_reconciles_total", {"kind": "EmbeddingService", "result": "success"}),
        "durations": ("tei_operator_reconcile_duration_seconds_count", {"kind": "EmbeddingService"}),
        "applies": ("tei_operator_api_requests_total", {"method": "PATCH", "resource": "deployments"}),
    }

    def read() -> dict[str, float]:
        # One scrape for all three: reconciles of other tests' services may end between two scrapes.
        samples = operator.metrics()
        return {key: sum(v for (n, pairs), v in samples.items() if n == name and set(labels.items()) <= set(pairs))
                for key, (name, labels) in queries.items()}

    before = read()

    kube.apply(service_manifest("EmbeddingService", "counted", namespace, CPU_SPEC))
    kube.wait_condition("EmbeddingService", "counted", namespace, "Ready", "True", timeout=60)
    wait_for(lambda: read()["success"] > before["success"], 20,
             what="tei_operator_reconciles_total{result=success} to go up")
    after = read()
    assert after["durations"] - before["durations"] >= after["success"] - before["success"] >= 1
    # The Deployment was applied (server-side apply is a PATCH; 201 when it creates the object, which is the only
    # apply a new service's unchanged Deployment gets).
    assert after["applies"] > before["applies"]

    series = {name for name, _ in operator.metrics()}
    for name in ("tei_operator_leader", "tei_operator_queue_depth", "tei_operator_info",
                 "tei_operator_autoscaler_seconds_since_last_successful_tick", "process_resident_memory_bytes"):
        assert name in series, name
    assert operator.metric_sum("tei_operator_leader") == 1

