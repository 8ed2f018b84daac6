"""The Messages front door's request validation: types and ranges, checked before anything goes upstream.

One JSON Schema (2020-12) states what the door accepts, with the types and ranges of Anthropic's Messages API
(the anthropic SDK's `MessageCreateParams`): `max_tokens` a positive integer and required, `temperature` 0–1,
`top_p` 0–1, `top_k` a non-negative integer, `messages` a list of turns whose role is user, assistant or system
(Claude Code puts `role: "system"` entries inside `messages`), content a string or a list of typed blocks,
`tool_choice` one of auto / any / tool / none, `thinking` enabled / adaptive / disabled. A failure is a 400
`invalid_request_error` whose message starts with the offending field, as Anthropic words it
("max_tokens: Field required"). Fields outside the schema are accepted: Claude Code adds beta fields often and
the translator ignores what it does not read.

count_tokens bodies are checked by the same schema without `max_tokens` (that call carries none).
"""

from __future__ import annotations

from typing import Any

import jsonschema_rs

from ..translate.errors import RequestError
from .validation import MAX_FIELD_DEPTH, first_problem, too_deep_field

# Fields whose value may reach the reply or the upstream request as the client built it.
_DEPTH_CHECKED = ("tools", "tool_choice", "metadata", "system", "output_config", "thinking", "context_management")

_STRING = {"type": "string"}
_BLOCK = {"type": "object", "required": ["type"], "properties": {"type": _STRING}}
_CONTENT = {"type": ["string", "array"], "items": _BLOCK}

_FIELDS: dict[str, Any] = {
    "model": {"type": "string", "minLength": 1},
    "max_tokens": {"type": "integer", "minimum": 1},
    "messages": {
        "type": "array",
        "minItems": 1,
        "items": {
            "type": "object",
            "required": ["role", "content"],
            "properties": {"role": {"enum": ["user", "assistant", "system"]}, "content": _CONTENT},
        },
    },
    "system": {"type": ["string", "array"], "items": _BLOCK},
    "stream": {"type": "boolean"},
    "temperature": {"type": "number", "minimum": 0, "maximum": 1},
    "top_p": {"type": "number", "minimum": 0, "maximum": 1},
    "top_k": {"type": "integer", "minimum": 0},
    "stop_sequences": {"type": "array", "items": _STRING},
    "metadata": {"type": "object", "properties": {"user_id": {"type": ["string", "null"]}}},
    "tools": {
        "type": "array",
        "items": {"type": "object", "properties": {"name": _STRING, "type": _STRING,
                                                    "input_schema": {"type": "object"},
                                                    "description": _STRING}},
    },
    "tool_choice": {
        "type": "object",
        "required": ["type"],
        "properties": {"type": {"enum": ["auto", "any", "tool", "none"]}, "name": _STRING,
                       "disable_parallel_tool_use": {"type": "boolean"}},
        "if": {"properties": {"type": {"const": "tool"}}},
        "then": {"required": ["name"]},
    },
    "thinking": {
        "type": "object",
        "required": ["type"],
        "properties": {"type": {"enum": ["enabled", "adaptive", "disabled"]},
                       "budget_tokens": {"type": "integer", "minimum": 0}},
    },
    "output_config": {"type": "object", "properties": {"effort": {"type": ["string", "null"]},
                                                       "format": {"type": ["object", "null"]}}},
}


def _schema(required: list[str]) -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": required,
        "properties": _FIELDS,
    }


MESSAGES_REQUEST_SCHEMA = _schema(["model", "messages", "max_tokens"])
COUNT_TOKENS_SCHEMA = _schema(["model", "messages"])
_VALIDATORS = {False: jsonschema_rs.Draft202012Validator(MESSAGES_REQUEST_SCHEMA),
               True: jsonschema_rs.Draft202012Validator(COUNT_TOKENS_SCHEMA)}


def validate_messages_request(body: Any, *, count_tokens: bool = False) -> None:
    """Raise RequestError (400, `param` the dotted path of the first offending value) unless `body` is a Messages
    create (or count_tokens) request of the right types and ranges."""
    if not isinstance(body, dict):
        raise RequestError("The request body must be a JSON object.")
    key = too_deep_field(body, _DEPTH_CHECKED)
    if key is not None:
        raise RequestError(f"{key}: nested more than {MAX_FIELD_DEPTH} levels deep", param=key)
    problem = first_problem(_VALIDATORS[count_tokens], body)
    if problem is None:
        return
    param = _dotted(problem.path)
    if problem.missing:
        raise RequestError(f"{param}: Field required", param=param)
    raise RequestError(f"{param}: {problem.message}" if param else problem.message, param=param or None)


def _dotted(path: list) -> str:
    """['messages', 3, 'role'] → 'messages.3.role' (how Anthropic names a field in its errors)."""
    return ".".join(str(step) for step in path)
