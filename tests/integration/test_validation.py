"""Bad manifests never reach the operator: the API server refuses them (CRD schema and CEL rules), and kubectl's
message names the field."""

from __future__ import annotations

import pytest

from .conftest import service_manifest

pytestmark = pytest.mark.cluster

GOOD_MODEL = {"id": "BAAI/bge-m3"}

# (kind, spec, a string that must appear in kubectl's stderr: the field's path)
INVALID = [
    ("EmbeddingService", {"model": GOOD_MODEL, "gpu": {"count": 2}}, "spec.gpu.count"),
    ("EmbeddingService", {"model": GOOD_MODEL, "gpu": {"count": 1, "type": "v100"}}, "spec.gpu.type"),
    ("EmbeddingService", {"model": GOOD_MODEL, "gpu": {"count": 0, "type": "a100"}}, "spec.gpu.type"),
    ("EmbeddingService", {"model": GOOD_MODEL, "gpu": {"type": "a100", "resourceName": "nvidia.com/mig-1g.10gb"}},
     "spec.gpu.type: Invalid value: gpu.type selects whole GPUs by product; with a MIG resourceName leave type unset"),
    ("EmbeddingService", {"gpu": {"count": 1}}, "spec.model"),
    ("EmbeddingService", {"model": {"revision": "main"}}, "spec.model.id"),
    ("EmbeddingService", {"model": GOOD_MODEL, "replicas": -1}, "spec.replicas"),
    ("EmbeddingService", {"model": GOOD_MODEL, "autoscaling": {"enabled": True}}, "spec.autoscaling.maxReplicas"),
    ("EmbeddingService", {"model": GOOD_MODEL, "autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}},
     "spec.autoscaling.minReplicas"),
    ("EmbeddingService", {"model": GOOD_MODEL, "engine": {"maxBatchTokens": "lots"}}, "spec.engine.maxBatchTokens"),
    ("EmbeddingService", {"model": {**GOOD_MODEL, "pooling": "max"}}, "spec.model.pooling"),
    ("EmbeddingService", {"model": {**GOOD_MODEL, "dtype": "bfloat16"}}, "spec.model.dtype"),
    ("EmbeddingService", {"model": GOOD_MODEL, "service": {"port": 70000}}, "spec.service.port"),
    ("EmbeddingService", {"model": GOOD_MODEL, "colour": "blue"}, "spec.colour"),
    ("RerankerService", {"model": {"id": "BAAI/bge-reranker-v2-m3", "pooling": "cls"}}, "spec.model.pooling"),
    # scale to zero (autoscaling/activation.py): minReplicas 0 only on a Throughput pool with scaleToZero
    ("EmbeddingService", {"model": GOOD_MODEL, "autoscaling": {"enabled": True, "minReplicas": 0, "maxReplicas": 2}},
     "spec.autoscaling.minReplicas: Invalid value: minReplicas 0 is allowed only with objective "
     "Throughput and scaleToZero"),
    ("EmbeddingService", {"model": GOOD_MODEL, "autoscaling": {
        "enabled": True, "minReplicas": 1, "maxReplicas": 2, "objective": "Throughput",
        "scaleToZero": {"activationQuery": "sum(backlog)"}}}, "spec.autoscaling.scaleToZero: Invalid value"),
    ("EmbeddingService", {"model": GOOD_MODEL, "autoscaling": {
        "enabled": True, "minReplicas": 0, "maxReplicas": 2, "objective": "Throughput", "scaleToZero": {}}},
     "spec.autoscaling.scaleToZero.activationQuery"),
    ("EmbeddingService", {"model": GOOD_MODEL, "autoscaling": {
        "enabled": True, "minReplicas": 0, "maxReplicas": 2, "objective": "Throughput",
        "scaleToZero": {"activationQuery": "sum(backlog)", "wakeReplicas": 3}}},
     "spec.autoscaling.scaleToZero.wakeReplicas"),
]


@pytest.mark.parametrize("kind,spec,field", INVALID, ids=[f"{i}-{case[2]}" for i, case in enumerate(INVALID)])
def test_invalid_manifest_is_refused_naming_the_field(crds, kube, namespace, kind, spec, field):
    result = kube.apply(service_manifest(kind, "bad", namespace, spec), check=False)
    assert result.returncode != 0, f"the API server accepted an invalid {kind}: {spec}"
    assert field in result.stderr, result.stderr
    short = "embsvc" if kind == "EmbeddingService" else "rrsvc"
    assert kube.get(short, "bad", namespace) is None
