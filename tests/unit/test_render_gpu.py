"""GPU type -> node affinity and TEI image: the image must always match the GPU the pod lands on."""

from __future__ import annotations

import pytest

from tei_operator.api import ServiceResource, parse_spec
from tei_operator.api.gpu import GPU_TYPES
from tei_operator.render import image_for, render_children
from tei_operator.settings import Settings

SETTINGS = Settings()
# The simulated cluster's GPU nodes (docs/dev/CONTRACTS.md): product label -> the type that must select it.
SIMULATED_PRODUCTS = {"NVIDIA-A100-SXM4-80GB": "a100", "NVIDIA-H100-80GB-HBM3": "h100", "NVIDIA-L4": "l4"}


def affinity_for(gpu: dict, affinity: dict | None = None) -> dict | None:
    spec = {"model": {"id": "BAAI/bge-m3"}, "gpu": gpu, **({"affinity": affinity} if affinity else {})}
    body = {"kind": "EmbeddingService", "metadata": {"name": "svc"}, "spec": spec}
    return render_children(ServiceResource.from_body(body), SETTINGS).deployment["spec"]["template"]["spec"].get(
        "affinity")


def products(affinity: dict) -> list[str]:
    (term,) = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    (expression,) = term["matchExpressions"]
    assert expression["key"] == "nvidia.com/gpu.product" and expression["operator"] == "In"
    return expression["values"]


def test_a100_and_h100_select_different_nodes():
    a100, h100 = products(affinity_for({"type": "a100"})), products(affinity_for({"type": "h100"}))
    assert "NVIDIA-A100-SXM4-80GB" in a100 and "NVIDIA-H100-80GB-HBM3" not in a100
    assert "NVIDIA-H100-80GB-HBM3" in h100 and "NVIDIA-A100-SXM4-80GB" not in h100


@pytest.mark.parametrize("product", sorted(SIMULATED_PRODUCTS))
def test_each_simulated_node_is_selected_by_exactly_its_type(product):
    selecting = [name for name in GPU_TYPES if product in products(affinity_for({"type": name}))]
    assert selecting == [SIMULATED_PRODUCTS[product]]


def test_no_type_and_cpu_mean_no_node_affinity():
    assert affinity_for({"count": 1}) is None
    assert affinity_for({"count": 0}) is None


def test_gpu_requirement_joins_every_user_term():
    user = {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["a"]}]},
            {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["b"]}]},
        ]},
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 1, "preference": {"matchExpressions": [{"key": "x", "operator": "Exists"}]}}],
    }, "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}}
    merged = affinity_for({"type": "l4"}, user)
    terms = merged["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert len(terms) == 2
    for term, zone in zip(terms, ["a", "b"]):
        assert term["matchExpressions"] == [
            {"key": "topology.kubernetes.io/zone", "operator": "In", "values": [zone]},
            {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-L4"]},
        ]
    assert merged["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["weight"] == 1
    assert merged["podAntiAffinity"] == {"preferredDuringSchedulingIgnoredDuringExecution": []}


# TEI.md's architecture table: type -> tag prefix.
@pytest.mark.parametrize(("gpu_type", "tag"), [
    ("t4", "turing-1.9.3"), ("a100", "1.9.3"), ("a30", "1.9.3"), ("a10", "86-1.9.3"), ("a10g", "86-1.9.3"),
    ("a40", "86-1.9.3"), ("rtx3090", "86-1.9.3"), ("l4", "89-1.9.3"), ("l40s", "89-1.9.3"), ("rtx4090", "89-1.9.3"),
    ("h100", "hopper-1.9.3"), ("h200", "hopper-1.9.3"), ("h20", "hopper-1.9.3"), ("b200", "100-1.9.3"),
    ("rtx5090", "120-1.9.3"),
])
def test_image_tag_per_type(gpu_type, tag):
    spec = parse_spec("EmbeddingService", {"model": {"id": "m"}, "gpu": {"type": gpu_type}})
    assert image_for(spec, SETTINGS) == f"ghcr.io/huggingface/text-embeddings-inference:{tag}"


def test_image_without_type_cpu_version_and_override():
    def image(spec: dict, settings: Settings = SETTINGS) -> str:
        return image_for(parse_spec("EmbeddingService", {"model": {"id": "m"}, **spec}), settings)

    assert image({}) == "ghcr.io/huggingface/text-embeddings-inference:cuda-1.9.3"
    assert image({"gpu": {"count": 0}}) == "ghcr.io/huggingface/text-embeddings-inference:cpu-1.9.3"
    assert image({"gpu": {"type": "h100"}, "engine": {"version": "1.8"}}).endswith(":hopper-1.8")
    mirror = Settings(image_repository="registry.local/tei", tei_version="1.9.2")
    assert image({"gpu": {"type": "l4"}}, mirror) == "registry.local/tei:89-1.9.2"
    pinned = "registry.local/tei@sha256:" + "a" * 64
    assert image({"gpu": {"type": "l4"}, "engine": {"image": pinned}}) == pinned


def test_every_type_is_consistent():
    """Each product belongs to one type, and types that share an image prefix share a compute capability."""
    seen: dict[str, str] = {}
    by_prefix: dict[str, set] = {}
    for gpu_type in GPU_TYPES.values():
        for product in gpu_type.products:
            assert product not in seen, f"{product} in {seen.get(product)} and {gpu_type.name}"
            seen[product] = gpu_type.name
        by_prefix.setdefault(gpu_type.image_prefix, set()).add(gpu_type.compute)
    assert all(len(computes) == 1 for computes in by_prefix.values()), by_prefix
