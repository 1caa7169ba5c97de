"""`spec.model`: which model TEI serves, and the Secret holding a Hugging Face token for gated models."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from .base import ApiModel, FieldError
from .types import DnsSubdomain

# A hub id ("BAAI/bge-m3", "sentence-transformers/all-MiniLM-L6-v2") or a path inside the cache volume ("/data/...").
# No \s, \d or \w in a pattern: Python's re reads them as Unicode classes and the API server's RE2 as ASCII ones,
# so pydantic and the CRD would disagree (tests/unit/test_crds.py checks every pattern).
MODEL_ID_PATTERN = r"^(/data/[^ \t\n\r\f\v]+|[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?)$"
REVISION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/-]*$"


class SecretKeyRef(ApiModel):
    """A key of a Secret in the service's namespace. Only the reference is copied into the pod spec: the value
    reaches the container as an environment variable set by the kubelet, never through the operator."""

    name: DnsSubdomain = Field(..., description="Name of the Secret, in the same namespace as the service.")
    key: str = Field(
        "token", min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$",
        description="Key inside the Secret whose value is used.",
    )


class ModelSpec(ApiModel):
    """The model TEI loads at start."""

    id: str = Field(
        ..., min_length=1, max_length=256, pattern=MODEL_ID_PATTERN,
        description="Hugging Face Hub model id (for example BAAI/bge-m3), or an absolute path under /data (the "
        "cache volume) to a model saved with save_pretrained. Passed to TEI as MODEL_ID.",
    )
    revision: str | None = Field(
        None, max_length=128, pattern=REVISION_PATTERN,
        description="Hub revision: a commit sha (recommended: pins the weights for reproducible rollouts), a tag or "
        "a branch such as refs/pr/2. Unset: the default branch at download time.",
    )
    dtype: Literal["float16", "float32"] | None = Field(
        None, description="Precision the weights are cast to. Unset: TEI's default (float16 on GPUs, float32 on CPU).",
    )
    served_model_name: str | None = Field(
        None, min_length=1, max_length=256,
        description="Model name reported by the OpenAI-compatible /v1/embeddings endpoint. Unset: the model id.",
    )
    token_secret_ref: SecretKeyRef | None = Field(
        None,
        description="Secret key holding a Hugging Face token, for gated or private models. Reaches TEI as HF_TOKEN "
        "through secretKeyRef; the operator never reads or copies its value.",
    )


class EmbeddingModelSpec(ModelSpec):
    """The embedding model TEI loads at start, with its pooling and default prompt."""

    CEL_RULES: ClassVar[list[dict[str, str]]] = [
        {
            "rule": "!(has(self.defaultPromptName) && has(self.defaultPrompt))",
            "message": "defaultPromptName and defaultPrompt are mutually exclusive: set at most one",
            "fieldPath": ".defaultPrompt",
        },
    ]

    pooling: Literal["cls", "mean", "splade", "last-token"] | None = Field(
        None,
        description="Pooling method. Unset: the model's own 1_Pooling/config.json. splade needs a masked-LM model "
        "and serves /embed_sparse.",
    )
    default_prompt_name: str | None = Field(
        None, min_length=1, max_length=256,
        description="Name of a prompt in the model's sentence-transformers configuration, prepended to every input "
        "by default (for example query). Mutually exclusive with defaultPrompt.",
    )
    default_prompt: str | None = Field(
        None, min_length=1, max_length=4096,
        description="Prompt text prepended to every input by default (for example 'query: '). Mutually exclusive "
        "with defaultPromptName.",
    )

    @model_validator(mode="after")
    def _one_prompt(self) -> "EmbeddingModelSpec":
        if self.default_prompt_name is not None and self.default_prompt is not None:
            raise FieldError("defaultPrompt", "defaultPromptName and defaultPrompt are mutually exclusive: set at most one")
        return self
