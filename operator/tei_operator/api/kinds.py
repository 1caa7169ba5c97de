"""The API group, version and the two kinds the operator serves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .spec import EmbeddingServiceSpec, RerankerServiceSpec, ServiceSpec

GROUP = "tei-operator.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "tei"


@dataclass(frozen=True)
class KindInfo:
    """Names of one kind, its spec model and the app.kubernetes.io/component of its pods."""

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    spec_model: type[ServiceSpec]
    component: Literal["embedding", "reranker"]
    description: str

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


KINDS: dict[str, KindInfo] = {
    "EmbeddingService": KindInfo(
        kind="EmbeddingService", plural="embeddingservices", singular="embeddingservice", short_names=("embsvc",),
        spec_model=EmbeddingServiceSpec, component="embedding",
        description="An embedding model served by Hugging Face Text Embeddings Inference (TEI) on GPUs: the "
        "operator runs it as a Deployment and a Service, and can scale it from TEI's queue and batch metrics.",
    ),
    "RerankerService": KindInfo(
        kind="RerankerService", plural="rerankerservices", singular="rerankerservice", short_names=("rrsvc",),
        spec_model=RerankerServiceSpec, component="reranker",
        description="A reranker (cross-encoder) served by Hugging Face Text Embeddings Inference (TEI) on GPUs: the "
        "operator runs it as a Deployment and a Service, and can scale it from TEI's queue and batch metrics.",
    ),
}
