"""The services the benchmark creates, and the same children rendered for the raw-client baseline.

N services over 20 namespaces (fewer when N < 20), alternating EmbeddingService and RerankerService; half of each
kind autoscaled (1..4 replicas, metrics from Prometheus), the other half at a fixed 1 replica. Every service asks for
one simulated A100 (gpu.count 1): the autoscaler's GPU-capacity path runs as on a real GPU cluster.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from tei_operator.api import ServiceResource
from tei_operator.render import render_children

from .fakepods import MODEL_ID

NAMESPACES = 20
GROUP_VERSION = "tei-operator.io/v1alpha1"
PLURALS = {"EmbeddingService": "embeddingservices", "RerankerService": "rerankerservices"}
RAW_MANAGER = "scale-bench-raw"
MANAGED_BY = "app.kubernetes.io/managed-by"


@dataclass(frozen=True)
class Planned:
    kind: str
    namespace: str
    name: str
    autoscaled: bool

    def manifest(self) -> dict:
        spec: dict = {"model": {"id": MODEL_ID}, "gpu": {"count": 1, "type": "a100"}}
        if self.autoscaled:
            spec["autoscaling"] = {"enabled": True, "minReplicas": 1, "maxReplicas": 4}
        return {"apiVersion": GROUP_VERSION, "kind": self.kind,
                "metadata": {"name": self.name, "namespace": self.namespace}, "spec": spec}


def namespaces(prefix: str, n: int) -> list[str]:
    return [f"{prefix}-{i:02d}" for i in range(min(NAMESPACES, max(1, n)))]


def plan(n: int, prefix: str) -> list[Planned]:
    """N services in namespaces `PREFIX-00`..`PREFIX-19`: kinds alternate, and every other pair is autoscaled, so
    each kind is half autoscaled."""
    spaces = namespaces(prefix, n)
    return [Planned("EmbeddingService" if i % 2 == 0 else "RerankerService", spaces[i % len(spaces)],
                    f"svc-{i:04d}", (i // 2) % 2 == 0) for i in range(n)]


def raw_children(service: Planned, settings) -> list[dict]:
    """The children the operator would apply for `service`, rendered by its own render functions, for a plain
    client to apply: no owner (there is no service object), and `managed-by` set to the raw client so that neither
    the operator's watches nor its autoscaler take them for its own."""
    resource = ServiceResource.from_body(service.manifest())
    out = []
    for child in render_children(resource, settings).all():
        child = copy.deepcopy(child)
        child["metadata"].pop("ownerReferences", None)
        for labels in (child["metadata"].get("labels"),
                       ((child.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels")):
            if labels and MANAGED_BY in labels:
                labels[MANAGED_BY] = RAW_MANAGER
        out.append(child)
    return out


def gpu_nodes(n: int) -> int:
    """A100 nodes (100 simulated GPUs, 110 pods each) for N services plus the raw baseline's N, with headroom."""
    return max(2, -(-2 * n * 5 // 4 // 100))
