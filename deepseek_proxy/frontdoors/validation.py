"""What the four doors' request validation shares: the nesting-depth bound and reading the first JSON Schema error.

Each door keeps its own schema (or, for Gemini, its own checks) and its own wording of a refusal, since each
client expects its API's: OpenAI's (`Invalid value for 'tools[0].name': …`, used by the Chat and Responses
doors: `openai_schema_check`), Anthropic's (`messages.0.role: …`). What is the same everywhere is here:

- the depth bound. Fields that can carry client-built structures echoed back in a reply or sent upstream have
  their nesting bounded: orjson, which writes replies and upstream bodies, refuses structures deeper than 254
  levels, and that must be a 400 now, not a 500 after the upstream was called and billed;
- the first schema error, as (path to the offending value, whether a required field is missing, message):
  the fast path validates once without building error objects;
- an error message quotes at most MESSAGE_LIMIT characters of the offending value.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jsonschema_rs

from ..translate.errors import RequestError

# Deepest nesting accepted under a top-level field (a tool's JSON Schema is rarely deeper than 10). The reply
# wraps an echoed field in about 4 more levels; orjson's limit is 254.
MAX_FIELD_DEPTH = 64
MESSAGE_LIMIT = 200  # an error message quotes at most this much of the offending value


def too_deep(value: Any, limit: int, *, count_values: bool = False) -> bool:
    """Whether `value` nests more than `limit` containers deep (iterative: a hostile value cannot exhaust the
    stack). `count_values`: a non-container value inside counts as one more level too (the Gemini door's bound,
    which checks the whole body)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(node, dict):
            children: Iterable[Any] = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        stack.extend((child, depth + 1) for child in children if count_values or isinstance(child, (dict, list)))
    return False


def too_deep_field(body: dict, keys: Iterable[str], limit: int = MAX_FIELD_DEPTH) -> str | None:
    """The first of `keys` whose value in `body` nests more than `limit` levels deep, or None."""
    for key in keys:
        value = body.get(key)
        if isinstance(value, (dict, list)) and too_deep(value, limit):
            return key
    return None


def short(message: str) -> str:
    return message if len(message) <= MESSAGE_LIMIT else message[:MESSAGE_LIMIT] + "…"


@dataclass(frozen=True)
class SchemaProblem:
    """The first way a body fails its schema."""

    path: list  # to the offending value; for a missing field, ending with that field's name
    missing: bool  # a required field is absent
    unknown: str | None  # a top-level field the schema does not allow (additionalProperties: false)
    message: str  # the validator's message, shortened


def first_problem(validator: Any, body: Any) -> SchemaProblem | None:
    """None when `body` is valid (the common case: one pass, no error objects built), else its first problem."""
    if validator.is_valid(body):
        return None
    error = next(iter(validator.iter_errors(body)))
    path = list(error.instance_path)
    kind = error.kind
    if isinstance(kind, jsonschema_rs.ValidationErrorKind.Required):
        return SchemaProblem(path + [kind.property], True, None, short(error.message))
    if isinstance(kind, jsonschema_rs.ValidationErrorKind.AdditionalProperties) and not path:
        return SchemaProblem(path, False, kind.unexpected[0], short(error.message))
    return SchemaProblem(path, False, None, short(error.message))


def tool_choice_schema(object_form: dict) -> dict:
    """`tool_choice` as both OpenAI APIs take it: "none", "auto" or "required", an object of `object_form` (each
    API's own shapes), or null."""
    return {"type": ["string", "object", "null"], "if": {"type": "string"},
            "then": {"enum": ["none", "auto", "required"]}, "else": object_form}


def dotted_path(path: Any) -> str:
    """['tools', 3, 'parameters'] → 'tools[3].parameters' (how OpenAI names a parameter in its errors)."""
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else str(step))
    return out


def openai_schema_check(body: Any, validator: Any, depth_checked: Iterable[str]) -> None:
    """The Chat and Responses doors' check: raise RequestError (400, worded as OpenAI words it, `param` the
    dotted path of the first offending value) unless `body` is an object of `validator`'s schema whose
    `depth_checked` fields nest at most MAX_FIELD_DEPTH levels."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    key = too_deep_field(body, depth_checked)
    if key is not None:
        raise RequestError(f"`{key}` is nested more than {MAX_FIELD_DEPTH} levels deep", param=key,
                           code="invalid_value")
    problem = first_problem(validator, body)
    if problem is None:
        return
    if problem.unknown is not None:  # as OpenAI (and the Responses translator) name it
        raise RequestError(f"Unknown parameter: '{problem.unknown}'.", param=problem.unknown,
                           code="unknown_parameter")
    param = dotted_path(problem.path)
    if problem.missing:  # the missing parameter is the one to name
        raise RequestError(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")
    raise RequestError(f"Invalid value for '{param}': {problem.message}", param=param or None,
                       code="invalid_value" if param else None)
