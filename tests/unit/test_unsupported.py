"""The table of models known not to run on TEI, its override annotation, and the conditions it leads to.

TEI facts relied on (/work/shared/TEI.md, "Models"): TEI 1.9.3 does not support Qwen3-Reranker (open PRs) nor
jina-embeddings-v4; Qwen3-Embedding and bge-reranker-v2-m3 are supported.
"""

from __future__ import annotations

import pytest

from tei_operator.api.unsupported import (ALLOW_UNSUPPORTED_ANNOTATION, UNSUPPORTED_MODELS, allows_unsupported,
                                          refusal_message, unsupported_reason)
from tei_operator.controller import status as st


@pytest.mark.parametrize("model_id", [
    "Qwen/Qwen3-Reranker-0.6B", "Qwen/Qwen3-Reranker-8B", "someone/qwen3-reranker-4b-seq-cls",
    "jinaai/jina-embeddings-v4", "jinaai/jina-embeddings-v4-vllm-retrieval", "/data/models/jina-embeddings-v4",
])
def test_known_unsupported_models_are_found(model_id: str) -> None:
    row = unsupported_reason(model_id)
    assert row is not None and row in UNSUPPORTED_MODELS


@pytest.mark.parametrize("model_id", [
    "Qwen/Qwen3-Embedding-0.6B", "BAAI/bge-reranker-v2-m3", "jinaai/jina-reranker-v2-base-multilingual",
    "BAAI/bge-m3", "/data/bge-m3",
])
def test_supported_models_pass(model_id: str) -> None:
    assert unsupported_reason(model_id) is None and refusal_message(model_id, {}) is None


def test_refusal_names_model_version_reason_and_override() -> None:
    message = refusal_message("Qwen/Qwen3-Reranker-0.6B", {"other": "x"})
    assert message is not None
    assert "Qwen/Qwen3-Reranker-0.6B does not run on TEI 1.9.3" in message and "ForSequenceClassification" in message
    assert f'{ALLOW_UNSUPPORTED_ANNOTATION}="true"' in message
    assert refusal_message("Qwen/Qwen3-Reranker-0.6B", {ALLOW_UNSUPPORTED_ANNOTATION: "true"}) is None
    assert refusal_message("Qwen/Qwen3-Reranker-0.6B", {ALLOW_UNSUPPORTED_ANNOTATION: "True "}) is None
    assert not allows_unsupported({ALLOW_UNSUPPORTED_ANNOTATION: "yes"})  # only "true" overrides
    assert not allows_unsupported(None)


def test_unsupported_model_is_not_ready_degraded_and_stalled() -> None:
    message = refusal_message("jinaai/jina-embeddings-v4", None)
    conditions = {c["type"]: c for c in st.desired_conditions(generation=3, deployment=None,
                                                               unsupported_model=message)}
    assert {t: (c["status"], c["reason"]) for t, c in conditions.items()} == {
        "Ready": ("False", "UnsupportedModel"),
        "Available": ("False", "DeploymentMissing"),
        "Progressing": ("False", "UnsupportedModel"),
        "Degraded": ("True", "UnsupportedModel"),
        "Reconciling": ("False", "UnsupportedModel"),
        "Stalled": ("True", "UnsupportedModel"),
    }
    assert conditions["Stalled"]["message"] == message and conditions["Ready"]["observedGeneration"] == 3


def test_unsupported_model_still_says_whether_the_earlier_models_pods_serve() -> None:
    """Nothing is applied for a refused model, so the earlier (supported) model's pods keep serving: Available says
    so, as for an invalid spec, and a minAvailable above the Ready count says they do not."""
    message = refusal_message("Qwen/Qwen3-Reranker-0.6B", None)
    live = {"metadata": {"name": "rr", "namespace": "search", "generation": 3},
            "spec": {"replicas": 2},
            "status": {"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2,
                       "availableReplicas": 2}}
    conditions = {c["type"]: c for c in st.desired_conditions(generation=4, deployment=live,
                                                               unsupported_model=message)}
    assert conditions["Available"]["status"] == "True" and conditions["Stalled"]["status"] == "True"
    assert conditions["Ready"]["reason"] == "UnsupportedModel"
    live["status"]["readyReplicas"] = live["status"]["availableReplicas"] = 1
    conditions = {c["type"]: c for c in st.desired_conditions(generation=4, deployment=live, min_available=2,
                                                               unsupported_model=message)}
    assert conditions["Available"]["status"] == "False"
    built = st.build_status(generation=4, deployment=live, pods=[], current=None, now="2026-01-01T00:00:00Z",
                            unsupported_model=message, min_available=2)
    assert built["summary"] == "UnsupportedModel"
