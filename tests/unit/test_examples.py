"""Every example manifest parses, renders, and says what it is for."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tei_operator.api import KINDS, ServiceResource
from tei_operator.render import render_children
from tei_operator.settings import Settings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXPECTED = {
    "embedding-bge-m3.yaml": ("EmbeddingService", "BAAI/bge-m3", "a100"),
    "embedding-bge-m3-autoscaling.yaml": ("EmbeddingService", "BAAI/bge-m3", "a100"),
    "embedding-bge-large-en-v1.5.yaml": ("EmbeddingService", "BAAI/bge-large-en-v1.5", None),
    "embedding-qwen3-embedding-0.6b.yaml": ("EmbeddingService", "Qwen/Qwen3-Embedding-0.6B", None),
    "embedding-qwen3-embedding-4b.yaml": ("EmbeddingService", "Qwen/Qwen3-Embedding-4B", None),
    "embedding-qwen3-embedding-8b.yaml": ("EmbeddingService", "Qwen/Qwen3-Embedding-8B", "h100"),
    "reranker-bge-reranker-v2-m3.yaml": ("RerankerService", "BAAI/bge-reranker-v2-m3", None),
    "reranker-ms-marco-minilm-l-12-v2.yaml": ("RerankerService", "cross-encoder/ms-marco-MiniLM-L-12-v2", None),
    "reranker-jina-reranker-v2.yaml": ("RerankerService", "jinaai/jina-reranker-v2-base-multilingual", None),
    "embedding-cpu.yaml": ("EmbeddingService", None, None),
}


def load_all(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d]


def load(name: str) -> dict:
    (doc,) = load_all(name)
    return doc


def all_services() -> list[tuple[str, ServiceResource]]:
    return [(p.name, ServiceResource.from_body(doc)) for p in sorted(EXAMPLES.glob("*.yaml")) for doc in load_all(p.name)]


def test_the_expected_examples_exist():
    assert set(EXPECTED) <= {p.name for p in EXAMPLES.glob("*.yaml")}


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_example_parses_renders_and_is_commented(name):
    text = (EXAMPLES / name).read_text()
    assert text.startswith("#"), "each example opens with a comment saying what it runs"
    docs = load_all(name)
    for doc in docs:  # a file may hold several services (the split-pool example holds two)
        assert doc["apiVersion"] == "tei-operator.io/v1alpha1" and doc["kind"] in KINDS
        resource = ServiceResource.from_body(doc)
        children = render_children(resource, Settings())
        assert [c["kind"] for c in children.all()][:2] == ["Deployment", "Service"]
    if len(docs) > 1:
        return
    doc = docs[0]
    kind, model, gpu_type = EXPECTED.get(name, (doc["kind"], None, None))
    assert resource.kind == kind
    if model:
        assert resource.spec.model.id == model
    if gpu_type:
        assert resource.spec.gpu.type == gpu_type


def test_cpu_example_needs_no_gpu():
    resource = ServiceResource.from_body(load("embedding-cpu.yaml"))
    assert resource.spec.gpu.count == 0
    (container,) = render_children(resource, Settings()).deployment["spec"]["template"]["spec"]["containers"]
    assert ":cpu-" in container["image"] and "nvidia.com/gpu" not in container["resources"].get("limits", {})


def test_autoscaling_example():
    spec = ServiceResource.from_body(load("embedding-bge-m3-autoscaling.yaml")).spec
    assert spec.gpu.type == "a100"
    assert (spec.autoscaling.enabled, spec.autoscaling.min_replicas, spec.autoscaling.max_replicas,
            spec.autoscaling.target_queue_size) == (True, 1, 8, 16)


def test_qwen_examples_run_on_the_gpus_the_issue_names():
    assert ServiceResource.from_body(load("embedding-qwen3-embedding-0.6b.yaml")).spec.gpu.type in ("l4", "rtx4090")
    for size in ("4b", "8b"):
        assert ServiceResource.from_body(load(f"embedding-qwen3-embedding-{size}.yaml")).spec.gpu.type == "h100"


def test_every_reranker_example_accepts_a_top_100_rerank():
    """The two-stage pattern reranks the 100 nearest candidates in one call; TEI refuses more texts than
    --max-client-batch-size (default 32) with 422 (TEI.md), so every reranker example must allow 100."""
    rerankers = [(name, r) for name, r in all_services() if r.kind == "RerankerService"]
    assert len(rerankers) >= 4
    for name, resource in rerankers:
        assert (resource.spec.engine.max_client_batch_size or 32) >= 100, name
        container = render_children(resource, Settings()).deployment["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert int(env["MAX_CLIENT_BATCH_SIZE"]) >= 100, name


def test_bge_m3_examples_pin_the_revision_of_the_design():
    pinned = {name: r.spec.model.revision for name, r in all_services() if r.spec.model.id == "BAAI/bge-m3"}
    assert len(pinned) >= 3 and set(pinned.values()) == {"5617a9f61b028005a4858fdac845db406aefb181"}, pinned


def test_two_stage_example_holds_an_embedder_and_a_reranker():
    kinds = [ServiceResource.from_body(d).kind for d in load_all("two-stage-retrieval.yaml")]
    assert kinds == ["EmbeddingService", "RerankerService"]
    assert "retrieval_client.py" in (EXAMPLES / "two-stage-retrieval.yaml").read_text()


def test_split_pool_example_is_one_model_in_two_pools():
    online, ingest = (ServiceResource.from_body(d) for d in load_all("embedding-split-pools.yaml"))
    assert online.spec.model.id == ingest.spec.model.id == "Qwen/Qwen3-Embedding-8B"
    assert online.spec.model.pooling == ingest.spec.model.pooling
    # queries get small batches, documents and bulk large ones: what the benchmark's split deployment runs
    from bench.autoscaling.run import INGEST, ONLINE

    assert online.spec.engine.max_batch_tokens == ONLINE.max_batch_tokens < ingest.spec.engine.max_batch_tokens
    assert ingest.spec.engine.max_batch_tokens == INGEST.max_batch_tokens
    assert (online.spec.autoscaling.max_replicas, ingest.spec.autoscaling.max_replicas) == \
        (ONLINE.max_replicas, INGEST.max_replicas)
    assert online.name != ingest.name
