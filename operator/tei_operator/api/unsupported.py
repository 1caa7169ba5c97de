"""Models known not to run on the TEI version the operator deploys, and why.

A service asking for one of them is not rolled out (its pods would download the weights, then crash-loop on TEI's
"model architecture not supported" at every start, holding a GPU each): the controller reports `UnsupportedModel`
instead (Ready=False, Degraded=True, Stalled=True) and applies nothing. The annotation
`models.tei-operator.io/allow-unsupported: "true"` on the service overrides the table, for an image built with the
missing support (`spec.engine.image`) or a converted copy of the model that TEI can load.

The table is matched on the model's name, the part after the Hub owner (or the last path component of a local
path), case-insensitively, so a mirror or fine-tune under another owner keeps its base model's name and is caught
too. Add a row only with a reason someone can check (TEI's supported-model list, an open issue or pull request).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

#: The TEI release the table was checked against (the default of the operator setting tei_version).
TEI_VERSION = "1.9.3"
#: Not under `tei-operator.io/`: kopf keeps its own state in annotations with that prefix and so ignores every
#: annotation under it when it decides whether a service changed; this one must trigger a reconcile at once.
ALLOW_UNSUPPORTED_ANNOTATION = "models.tei-operator.io/allow-unsupported"


@dataclass(frozen=True)
class UnsupportedModel:
    """One row: a pattern of model names and why TEI cannot serve them."""

    pattern: str
    models: str
    reason: str

    def matches(self, model_id: str) -> bool:
        name = model_id.rstrip("/").rsplit("/", 1)[-1]
        return re.fullmatch(self.pattern, name, flags=re.IGNORECASE) is not None


UNSUPPORTED_MODELS: tuple[UnsupportedModel, ...] = (
    UnsupportedModel(
        pattern=r"Qwen3-Reranker-.*",
        models="Qwen/Qwen3-Reranker-0.6B, -4B, -8B",
        reason="a causal language model (Qwen3ForCausalLM) that scores a pair by the logits of the tokens 'yes' and "
        "'no', not a *ForSequenceClassification model: TEI's /rerank cannot serve it (support is in open TEI pull "
        "requests). Serve Qwen/Qwen3-Embedding-* for embeddings and a supported reranker such as "
        "BAAI/bge-reranker-v2-m3",
    ),
    UnsupportedModel(
        pattern=r"jina-embeddings-v4(-.*)?",
        models="jinaai/jina-embeddings-v4 (and its -vllm-* variants)",
        reason="a multimodal model built on Qwen2.5-VL with task-specific LoRA adapters and custom modelling code, "
        "which TEI does not implement",
    ),
)


def unsupported_reason(model_id: str) -> UnsupportedModel | None:
    """The table's row for `model_id`, or None when the model is not known to fail."""
    for row in UNSUPPORTED_MODELS:
        if row.matches(model_id):
            return row
    return None


def allows_unsupported(annotations: Mapping[str, str] | None) -> bool:
    """Whether the service's annotations override the table (`models.tei-operator.io/allow-unsupported: "true"`)."""
    return str((annotations or {}).get(ALLOW_UNSUPPORTED_ANNOTATION, "")).strip().lower() == "true"


def refusal_message(model_id: str, annotations: Mapping[str, str] | None) -> str | None:
    """Why the service must not be rolled out, or None (a supported model, or the override annotation is set)."""
    row = unsupported_reason(model_id)
    if row is None or allows_unsupported(annotations):
        return None
    return (f"Model {model_id} does not run on TEI {TEI_VERSION}: it is {row.reason}. Nothing was applied; to try "
            f"it anyway (an image with support for it in spec.engine.image), annotate the service "
            f"{ALLOW_UNSUPPORTED_ANNOTATION}=\"true\"")
