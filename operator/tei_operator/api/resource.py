"""A service resource as the operator handles it: its identity plus a validated spec.

`parse_spec` enforces the same rules as the CRD's schema and CEL rules, so input refused by `kubectl apply` is
refused by `tei-operator render` with the same field path; the controller uses it as a last line of defence
against objects stored before a stricter CRD was installed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from pydantic import ValidationError

from .errors import InvalidSpecError, spec_errors
from .kinds import KINDS
from .spec import ServiceSpec
from .types import DNS_LABEL_PATTERN

_NAME_RE = re.compile(DNS_LABEL_PATTERN)
NAME_MAX_LENGTH = 63


def without_nulls(value: Any) -> Any:
    """The object without fields set to null, as the API server stores it: it prunes a null field (one not marked
    nullable, and none of ours is) before defaulting, so `count: null` means "unset". List items stay."""
    if isinstance(value, Mapping):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def parse_spec(kind: str, spec: Any) -> ServiceSpec:
    """Validate `spec` (a dict as stored by the API server, camelCase) as the spec of `kind`.

    Strict: no coercion of "1" to 1 or "true" to true, exactly as the API server's schema validation.
    Raises InvalidSpecError naming every bad field by its full path (`spec.gpu.count: must be <= 1 (got 2)`).
    """
    info = KINDS.get(kind)
    if info is None:
        raise InvalidSpecError([f"kind: must be one of: {', '.join(KINDS)} (got {kind!r})"])
    if not isinstance(spec, Mapping):
        raise InvalidSpecError([f"spec: must be an object (got {type(spec).__name__})"])
    try:
        return info.spec_model.model_validate(without_nulls(spec), strict=True)
    except ValidationError as exc:
        raise InvalidSpecError(spec_errors(exc, info.spec_model)) from None


def check_name(name: Any) -> list[str]:
    """Problems with a service's name: it names the Service, so it must be a DNS-1035 label (the CRD checks this
    with a CEL rule on metadata.name)."""
    if not isinstance(name, str) or not name:
        return ["metadata.name: is required"]
    if len(name) > NAME_MAX_LENGTH or not _NAME_RE.match(name):
        return [f"metadata.name: must be a DNS-1035 label: at most {NAME_MAX_LENGTH} lowercase letters, digits "
                f"and '-', starting with a letter and ending with a letter or digit (got {name!r})"]
    return []


@dataclass
class ServiceResource:
    """An EmbeddingService or RerankerService: identity, generation and validated spec."""

    kind: str
    name: str
    namespace: str
    uid: str | None
    generation: int | None
    spec: ServiceSpec

    @classmethod
    def from_body(cls, body: Mapping[str, Any], default_namespace: str = "default") -> "ServiceResource":
        """Build from a kopf body or a plain manifest dict. Raises InvalidSpecError on a bad name or spec."""
        kind = body.get("kind")
        meta = body.get("metadata") or {}
        name = meta.get("name")
        errors = check_name(name)
        try:
            spec = parse_spec(str(kind), body.get("spec"))
        except InvalidSpecError as exc:
            errors += exc.errors
        if errors:
            raise InvalidSpecError(errors)
        return cls(
            kind=str(kind), name=name, namespace=meta.get("namespace") or default_namespace,
            uid=meta.get("uid") or None, generation=meta.get("generation"), spec=spec,
        )

    @property
    def component(self) -> str:
        """app.kubernetes.io/component of its pods: embedding or reranker."""
        return KINDS[self.kind].component
