"""Base classes shared by every API model: camelCase aliases and, for specs, no unknown fields.

Also two small tools the models use to carry CRD-only facts: `SchemaHint` (extra OpenAPI keys for one field's type,
read by the CRD generator) and `FieldError` (a cross-field error that names the exact field it is about, so the
message of `parse_spec` points at `spec.model.defaultPrompt` rather than at `spec.model`).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    """A model of the CRD's schema: camelCase on the wire, snake_case in Python, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=False,
    )

    # CEL rules (`x-kubernetes-validations`) the CRD generator attaches to this object's schema. Each model that
    # declares rules also enforces the same constraint in a pydantic validator, so `tei-operator render` refuses
    # exactly what `kubectl apply` refuses.
    CEL_RULES: ClassVar[list[dict[str, str]]] = []

    def to_wire(self) -> dict:
        """The object as the API server stores it: camelCase keys, unset optional fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class StatusModel(ApiModel):
    """A status model: tolerant of fields written by newer operator versions (no surprise on downgrade)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class FieldError(ValueError):
    """A validation error about one field of the model that raised it (a path relative to that model).

    pydantic reports a model validator's error at the model's own location; `parse_spec` appends `field` to it,
    so users read `spec.autoscaling.maxReplicas: ...` instead of `spec.autoscaling: ...`.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class SchemaHint:
    """Extra OpenAPI keys for a type, used as `Annotated[T, SchemaHint(...)]`; pydantic ignores it, the CRD
    generator merges it into the property's schema (int-or-string, formats, list types)."""

    def __init__(self, **schema: Any) -> None:
        self.schema = schema

    def __repr__(self) -> str:
        return f"SchemaHint({self.schema!r})"
