"""Turning pydantic's validation errors into messages that name each bad field by its path in the manifest.

The messages follow what `kubectl apply` prints for the same mistake: `spec.gpu.count: must be <= 1 (got 2)`,
and say what is allowed (the enum values, the known fields), so a user can fix the manifest without the docs.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Iterable

from pydantic import BaseModel, ValidationError

from .base import FieldError


class InvalidSpecError(ValueError):
    """A resource's spec (or name) is invalid; `errors` holds one `path: message` line per problem."""

    def __init__(self, errors: Iterable[str]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(self.errors))


def format_path(loc: Iterable[Any], root: str = "spec") -> str:
    """`("gpu", "count")` -> `spec.gpu.count`; list indexes as `[3]`."""
    out = root
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _unwrap(annotation: Any) -> Any:
    """The model, list or dict type inside Optional[...] / Annotated[...]."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that the object at `loc` (inside an instance of `model`) is validated against."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = next((f for n, f in current.model_fields.items() if (f.alias or n) == part or n == part), None)
            if field is None:
                return None
            current = field.annotation
        elif typing.get_origin(current) in (list, dict):
            current = typing.get_args(current)[-1]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _message(err: dict[str, Any], model: type[BaseModel]) -> tuple[tuple[Any, ...], str]:
    """The location and the human message of one pydantic error."""
    loc, kind, ctx, value = tuple(err["loc"]), err["type"], err.get("ctx") or {}, err.get("input")
    got = f" (got {value!r})" if not isinstance(value, (dict, list)) else ""
    if kind == "value_error" and isinstance(ctx.get("error"), FieldError):
        fe: FieldError = ctx["error"]
        parts: list[Any] = []
        for piece in fe.field.replace("]", "").replace("[", ".[").split("."):
            parts.append(int(piece[1:]) if piece.startswith("[") else piece)
        return loc + tuple(parts), fe.message
    if kind == "value_error":
        return loc, str(ctx.get("error", err["msg"]))
    if kind == "missing":
        return loc, "is required"
    if kind == "extra_forbidden":
        parent = _model_at(model, loc[:-1])
        allowed = ", ".join(f.alias or n for n, f in parent.model_fields.items()) if parent else ""
        return loc, "unknown field" + (f" (allowed: {allowed})" if allowed else "")
    if kind == "literal_error":
        return loc, f"must be one of: {ctx.get('expected', '')}{got}"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        op = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}[kind]
        bound = next(iter(ctx.values()), "")
        return loc, f"must be {op} {bound}{got}"
    if kind == "string_pattern_mismatch":
        return loc, f"must match the pattern {ctx.get('pattern')}{got}"
    if kind == "string_too_long":
        return loc, f"must be at most {ctx.get('max_length')} characters"
    if kind == "string_too_short":
        return loc, f"must be at least {ctx.get('min_length')} characters"
    if kind == "too_long":
        return loc, f"must have at most {ctx.get('max_length')} items"
    if kind == "too_short":
        return loc, f"must have at least {ctx.get('min_length')} items"
    if kind in ("int_type", "int_from_float", "int_parsing"):
        return loc, f"must be an integer{got}"
    if kind in ("float_type", "float_parsing"):
        return loc, f"must be a number{got}"
    if kind in ("string_type",):
        return loc, f"must be a string{got}"
    if kind in ("bool_type", "bool_parsing"):
        return loc, f"must be true or false{got}"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return loc, f"must be an object{got}"
    if kind == "list_type":
        return loc, f"must be a list{got}"
    return loc, err["msg"] + got


def spec_errors(exc: ValidationError, model: type[BaseModel], root: str = "spec") -> list[str]:
    """One `path: message` line per error of `exc`, raised while validating `model` at `root`."""
    lines = []
    for err in exc.errors(include_url=False):
        loc, msg = _message(err, model)
        line = f"{format_path(loc, root)}: {msg}"
        if line not in lines:
            lines.append(line)
    return lines
