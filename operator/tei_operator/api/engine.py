"""`spec.engine`: the TEI image and the launcher settings the operator passes to it.

Every TEI flag that has a field here travels as its environment variable (TEI.md: env var = the flag in
UPPER_SNAKE case). Those variables, and the flags that would carry a secret in clear or move the port the probes
and the Service rely on, are refused in `env` and `extraArgs`: one setting, one place.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from .base import ApiModel, FieldError
from .model import SecretKeyRef
from .types import DnsSubdomain

# Environment variables the operator sets itself (render/pod.py): refused in spec.engine.env.
RESERVED_ENV = (
    "MODEL_ID", "REVISION", "DTYPE", "POOLING", "SERVED_MODEL_NAME", "DEFAULT_PROMPT_NAME", "DEFAULT_PROMPT",
    "MAX_BATCH_TOKENS", "MAX_CONCURRENT_REQUESTS", "MAX_BATCH_REQUESTS", "MAX_CLIENT_BATCH_SIZE", "AUTO_TRUNCATE",
    "TOKENIZATION_WORKERS", "PAYLOAD_LIMIT", "HF_TOKEN", "HF_API_TOKEN", "API_KEY", "PORT",
    "HUGGINGFACE_HUB_CACHE", "JSON_OUTPUT",
)
# Launcher flags refused in spec.engine.extraArgs: secrets (TEI logs its arguments), the port and cache path the
# pod depends on, and every flag that has its own field (an extra arg would silently override that field).
RESERVED_FLAGS = (
    "--api-key", "--hf-token", "--hf-api-token", "--port", "-p", "--hostname", "--huggingface-hub-cache",
    "--model-id", "--revision", "--dtype", "--pooling", "--served-model-name", "--default-prompt-name",
    "--default-prompt", "--max-batch-tokens", "--max-concurrent-requests", "--max-batch-requests",
    "--max-client-batch-size", "--auto-truncate", "--tokenization-workers", "--payload-limit", "--json-output",
)


def _cel_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def reserved_flag(arg: str) -> str | None:
    """The reserved flag `arg` sets (as `--flag` or `--flag=value`), or None."""
    for flag in RESERVED_FLAGS:
        if arg == flag or arg.startswith(flag + "="):
            return flag
    return None


class LocalObjectReference(ApiModel):
    """A reference to an object in the same namespace, by name."""

    name: DnsSubdomain = Field(..., description="Name of the referenced object.")


class EnvVar(ApiModel):
    """An environment variable of the TEI container, as in a Pod's container spec."""

    CEL_RULES: ClassVar[list[dict[str, str]]] = [
        {"rule": "!(has(self.value) && has(self.valueFrom))", "message": "set value or valueFrom, not both"},
    ]

    name: str = Field(
        ..., min_length=1, max_length=256, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$",
        description="Name of the variable. Variables the operator sets from other fields are refused.",
    )
    value: str | None = Field(None, max_length=32768, description="Literal value.")
    value_from: dict[str, Any] | None = Field(
        None,
        description="Source of the value (secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef), as in a Pod.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> "EnvVar":
        if self.value is not None and self.value_from is not None:
            raise FieldError("valueFrom", "set value or valueFrom, not both")
        return self


ExtraArg = Annotated[str, Field(min_length=1, max_length=512)]


class EngineSpec(ApiModel):
    """The TEI image and launcher settings. Unset fields keep TEI's own defaults (TEI.md)."""

    version: str | None = Field(
        None, max_length=64, pattern=r"^[0-9A-Za-z][0-9A-Za-z._-]*$",
        description="TEI version (for example 1.9.3). The image tag is the GPU architecture's prefix plus this "
        "version. Unset: the operator's default TEI version (its teiVersion setting).",
    )
    image: str | None = Field(
        None, min_length=1, max_length=512, pattern=r"^[!-~]+$",
        description="Full image reference that replaces the computed one (mirrors, air-gapped registries, "
        "digests): printable ASCII, no spaces. It must still match the GPU architecture the service lands on.",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        None, description="Image pull policy of the TEI container. Unset: Kubernetes' default.",
    )
    image_pull_secrets: list[LocalObjectReference] = Field(
        default_factory=list, max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        description="Secrets used to pull the image from a private registry.",
    )
    max_batch_tokens: int = Field(
        16384, ge=1, le=16777216,
        description="Most tokens in one batch (TEI --max-batch-tokens): the main throughput knob; raise it until "
        "the GPU is compute bound. The autoscaler's targetBatchFill is a fraction of this value.",
    )
    max_concurrent_requests: int | None = Field(
        None, ge=1, le=1000000,
        description="Most inputs in flight before TEI answers 429 (--max-concurrent-requests). Unset: 512.",
    )
    max_batch_requests: int | None = Field(
        None, ge=1, le=1000000, description="Most inputs in one batch (--max-batch-requests). Unset: no limit.",
    )
    max_client_batch_size: int | None = Field(
        None, ge=1, le=100000,
        description="Most inputs (or rerank texts) in one client request (--max-client-batch-size). Unset: 32.",
    )
    auto_truncate: bool | None = Field(
        None,
        description="Truncate inputs longer than the model's maximum instead of refusing them (--auto-truncate). "
        "Unset: TEI's default (true since 1.9.0).",
    )
    tokenization_workers: int | None = Field(
        None, ge=1, le=512, description="Tokenizer threads (--tokenization-workers). Unset: CPU count.",
    )
    payload_limit: int | None = Field(
        None, ge=1, le=1000000000, description="Largest request body in bytes (--payload-limit). Unset: 2000000.",
    )
    api_key_secret_ref: SecretKeyRef | None = Field(
        None,
        description="Secret key holding an API key that clients must send as a Bearer token (GET /health stays "
        "open for probes). Reaches TEI only as the API_KEY variable through secretKeyRef. TEI logs its arguments "
        "at start, the key included, so when this is set the operator lowers the log level of that one startup "
        "line (LOG_LEVEL); setting LOG_LEVEL in env yourself lifts that protection.",
    )
    extra_args: list[ExtraArg] = Field(
        default_factory=list, max_length=64,
        json_schema_extra={"x-kubernetes-validations": [{
            "rule": f"self.all(a, !{_cel_list(RESERVED_FLAGS)}.exists(f, a == f || a.startsWith(f + '=')))",
            "message": "extraArgs must not set a flag that has its own field, carries a secret, or moves the port "
            "(--api-key, --hf-token, --port, --model-id, --max-batch-tokens, ...): use the field instead",
        }]},
        description="Extra TEI launcher arguments (for example --dense-path=2_Dense_1024). Flags that carry a "
        "secret, move the port or cache path, or have their own field here are refused.",
    )
    env: list[EnvVar] = Field(
        default_factory=list, max_length=64,
        json_schema_extra={
            "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
            "x-kubernetes-validations": [{
                "rule": f"self.all(e, !(e.name in {_cel_list(RESERVED_ENV)}))",
                "message": "env must not set a variable the operator derives from other fields (MODEL_ID, API_KEY, "
                "HF_TOKEN, MAX_BATCH_TOKENS, PORT, ...): use the field instead",
            }],
        },
        description="Extra environment variables of the TEI container (for example HF_HUB_OFFLINE, LOG_LEVEL). "
        "Variables the operator sets from other fields are refused.",
    )

    @model_validator(mode="after")
    def _reserved(self) -> "EngineSpec":
        for i, arg in enumerate(self.extra_args):
            flag = reserved_flag(arg)
            if flag is not None:
                raise FieldError(f"extraArgs[{i}]", f"flag {flag} is not allowed here: it has its own field, carries "
                                 "a secret, or moves the port")
        seen: set[str] = set()
        for i, var in enumerate(self.env):
            if var.name in RESERVED_ENV:
                raise FieldError(f"env[{i}].name", f"{var.name} is set by the operator from other fields; use the "
                                 "field instead")
            if var.name in seen:
                raise FieldError(f"env[{i}].name", f"duplicate variable {var.name}")
            seen.add(var.name)
        names = [s.name for s in self.image_pull_secrets]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise FieldError(f"imagePullSecrets[{i}].name", f"duplicate secret {name}")
        return self


class RerankerEngineSpec(EngineSpec):
    """TEI settings of a reranker. A reranker scores (query, document) pairs, long inputs that all need full
    cross-attention, so its default batch holds fewer tokens to keep one rerank call's latency low."""

    max_batch_tokens: int = Field(
        8192, ge=1, le=16777216,
        description="Most tokens in one batch (TEI --max-batch-tokens). Rerankers default to 8192 (TEI's own "
        "default is 16384) to keep per-call latency low. The autoscaler's targetBatchFill is a fraction of it.",
    )

