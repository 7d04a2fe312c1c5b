"""Turn pydantic's validation errors into regtune issues: dotted field path, rule, value."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from tuner.errors import Issue

FIELD_MARK = "\x1f"  # separates a field name from its message in model-level errors
RULES = {  # pydantic's words for a strict type, said as the rule the spec holds to
    "finite_number": "must be a finite number (not inf or NaN)",
    "int_type": "must be an integer (not a boolean, a fraction or text)",
    "bool_type": "must be true or false",
    "float_type": "must be a number (not a boolean or text)",
    "string_type": "must be text",
}


def _model_at(root: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The pydantic model that owns the field at ``loc`` (to list its valid fields)."""
    model: type[BaseModel] | None = root
    for part in loc:
        if model is None:
            return None
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        model = _inner_model(field.annotation)
    return model


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list):
        for arg in typing.get_args(annotation):
            found = _inner_model(arg)
            if found is not None:
                return found
    return None


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after", "function-before", "function-wrap") or "[" in str(part):
            continue  # pydantic's own markers for union members and validators
        else:
            out += ("." if out else "") + str(part)
    return out


def issues_from_validation_error(exc: ValidationError, root: type[BaseModel]) -> list[Issue]:
    issues: list[Issue] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        kind = err["type"]
        value = err.get("input")
        if kind == "extra_forbidden":
            owner = _model_at(root, loc[:-1])
            valid = ", ".join(owner.model_fields) if owner is not None else "see DESIGN.md"
            msg = f"unknown field {str(loc[-1])!r}; valid fields here are: {valid}"
        elif kind == "missing":
            msg = "this field is required"
            value = None
        elif kind in RULES:
            msg = f"{RULES[kind]}, but got {value!r}"
        else:
            msg = str(err["msg"]).removeprefix("Value error, ")
            if kind not in ("value_error", "assertion_error"):
                msg = f"{msg}, but got {value!r}"
        if msg.startswith(FIELD_MARK):
            _, field, msg = msg.split(FIELD_MARK, 2)
            loc = (*loc, field)
            value = value.get(field) if isinstance(value, dict) else getattr(value, field, None)
        issues.append(Issue(_path(loc), msg, value if not isinstance(value, (dict, BaseModel)) else None))
    return issues
