"""pydantic model tree -> OpenAPI v3 schema that the API server accepts as a *structural* CRD schema.

pydantic's own JSON schema uses `$ref`, `anyOf` with null for Optional and `const`, none of which a CRD may hold.
This converter walks the models' fields instead: Optional becomes "not required", Literal becomes `enum`,
Field bounds become minimum/maximum/maxLength/maxItems, dict[str, X] becomes additionalProperties, free-form
dicts become `x-kubernetes-preserve-unknown-fields`, int | str becomes int-or-string, defaults become `default:`
(nested models as `{}` so the API server applies their own defaults), and each model's CEL_RULES become
`x-kubernetes-validations`.
"""

from __future__ import annotations

import copy
import inspect
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from .base import SchemaHint

_CONSTRAINTS = {
    "ge": "minimum", "le": "maximum", "gt": "minimum", "lt": "maximum", "pattern": "pattern",
}


class SchemaError(TypeError):
    """A model uses a type the converter cannot express in a structural schema."""


def describe(model: type[BaseModel]) -> str:
    """A model's description: its docstring, as one paragraph."""
    return " ".join((inspect.getdoc(model) or "").split())


def _apply_constraints(schema: dict[str, Any], metadata: list[Any]) -> None:
    """Merge Field/annotated-types constraints and SchemaHints into `schema`, by the schema's type."""
    kind = schema.get("type")
    for meta in metadata:
        if isinstance(meta, FieldInfo):  # Annotated[str, Field(...)] nested in a list or dict
            _apply_constraints(schema, list(meta.metadata))
            continue
        if isinstance(meta, SchemaHint):
            schema.update(copy.deepcopy(meta.schema))
            continue
        for attr in ("ge", "gt", "le", "lt", "pattern", "min_length", "max_length"):
            value = getattr(meta, attr, None)
            if value is None:
                continue
            if attr in ("min_length", "max_length"):
                key = {"string": "Length", "array": "Items", "object": "Properties"}.get(kind or "")
                if key is None:
                    raise SchemaError(f"{attr} on a schema of type {kind}")
                schema[("min" if attr == "min_length" else "max") + key] = value
            else:
                schema[_CONSTRAINTS[attr]] = value
                if attr == "gt":
                    schema["exclusiveMinimum"] = True
                if attr == "lt":
                    schema["exclusiveMaximum"] = True


def schema_for_type(tp: Any, metadata: list[Any] | None = None) -> dict[str, Any]:
    """The OpenAPI schema of one Python type (with its constraint metadata)."""
    metadata = list(metadata or [])
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        inner, *extra = typing.get_args(tp)
        return schema_for_type(inner, metadata + extra)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return schema_for_type(args[0], metadata)
        if set(args) == {int, str}:
            schema: dict[str, Any] = {"anyOf": [{"type": "integer"}, {"type": "string"}],
                                      "x-kubernetes-int-or-string": True}
            _apply_constraints(schema, metadata)
            return schema
        raise SchemaError(f"unions other than Optional and int | str are not structural: {tp}")
    if origin is typing.Literal:
        values = list(typing.get_args(tp))
        kinds = {type(v) for v in values}
        if kinds != {str}:
            raise SchemaError(f"only string Literals are supported: {tp}")
        schema = {"type": "string", "enum": values}
    elif tp is bool:
        schema = {"type": "boolean"}
    elif tp is int:
        schema = {"type": "integer"}
    elif tp is float:
        schema = {"type": "number"}
    elif tp is str:
        schema = {"type": "string"}
    elif origin is list:
        (item,) = typing.get_args(tp)
        schema = {"type": "array", "items": schema_for_type(item)}
    elif origin is dict:
        key, value = typing.get_args(tp)
        if schema_for_type(key).get("type") != "string":
            raise SchemaError(f"dict keys must be strings: {tp}")
        if value is Any:
            schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        else:
            schema = {"type": "object", "additionalProperties": schema_for_type(value)}
    elif isinstance(tp, type) and issubclass(tp, BaseModel):
        schema = schema_for_model(tp)
    else:
        raise SchemaError(f"unsupported type in a CRD schema: {tp!r}")
    _apply_constraints(schema, metadata)
    return schema


def _default(field: FieldInfo) -> Any:
    """The field's default as the API server should apply it, or PydanticUndefined for none."""
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    else:
        value = field.default
    if value is PydanticUndefined or value is None:
        return PydanticUndefined
    if isinstance(value, BaseModel):
        return value.model_dump(by_alias=True, exclude_unset=True, mode="json")
    if isinstance(value, (list, dict)) and not value:
        return PydanticUndefined
    if isinstance(value, list):
        return [v.model_dump(by_alias=True, exclude_none=True, mode="json") if isinstance(v, BaseModel) else v
                for v in value]
    return value


def schema_for_field(field: FieldInfo) -> dict[str, Any]:
    """The schema of one model field: its type, constraints, description, default and extra keys."""
    schema = schema_for_type(field.annotation, list(field.metadata))
    description = field.description
    if description is None:
        model = _model_of(field.annotation)
        description = describe(model) if model else None
    result: dict[str, Any] = {"description": description} if description else {}
    result.update(schema)
    if "description" in schema and description:
        result["description"] = description
    default = _default(field)
    if default is not PydanticUndefined:
        result["default"] = default
    extra = field.json_schema_extra
    if isinstance(extra, dict):
        for key, value in extra.items():
            if key == "x-kubernetes-validations":
                result.setdefault(key, []).extend(copy.deepcopy(value))
            else:
                result[key] = copy.deepcopy(value)
    return result


def _model_of(tp: Any) -> type[BaseModel] | None:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        for arg in typing.get_args(tp):
            found = _model_of(arg)
            if found:
                return found
        return None
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def schema_for_model(model: type[BaseModel]) -> dict[str, Any]:
    """The object schema of a model: properties by camelCase alias, required fields, CEL rules."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, field in model.model_fields.items():
        alias = field.alias or name
        properties[alias] = schema_for_field(field)
        if field.is_required():
            required.append(alias)
    schema: dict[str, Any] = {"description": describe(model), "type": "object", "properties": properties}
    if required:
        schema["required"] = required
    rules = getattr(model, "CEL_RULES", None)
    if rules:
        schema["x-kubernetes-validations"] = copy.deepcopy(list(rules))
    return schema
