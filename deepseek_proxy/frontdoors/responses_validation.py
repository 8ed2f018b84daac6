"""The Responses front door's request validation: types and ranges, checked before anything goes upstream.

One JSON Schema document (RESPONSES_REQUEST_SCHEMA, JSON Schema 2020-12, which OpenAPI 3.1 uses as it is) states
what the proxy accepts: the fields of the openai SDK's `ResponseCreateParams` with the types and ranges the
OpenAI spec gives them (booleans are booleans, `temperature` 0–2, `top_p` 0–1, `metadata` at most 16 string
pairs, tool `parameters` an object, ...), and the input items at the level the translator reads them. The same
document is served in /openapi.json, so the description and the check cannot drift apart.

It is checked by jsonschema-rs (a compiled validator; the pure-Python `jsonschema` costs more than the whole
translation of a 1 MB Codex history). Fields that can carry client-built structures echoed back in the Response
object or sent upstream (tools, tool_choice, text, reasoning, ...) also have their nesting depth bounded: orjson,
which writes the reply, refuses structures deeper than 254 levels, and that must be a 400 now, not a 500 after
the upstream was called and billed.
"""

from __future__ import annotations

from typing import Any

import jsonschema_rs

from ..translate.responses_request import KNOWN_FIELDS
from .validation import MAX_FIELD_DEPTH, dotted_path, openai_schema_check, tool_choice_schema

__all__ = ["MAX_FIELD_DEPTH", "RESPONSES_REQUEST_SCHEMA", "dotted_path", "validate_responses_request"]

# Fields whose value may reach the reply or the upstream request as the client built it.
_DEPTH_CHECKED = ("tools", "tool_choice", "text", "reasoning", "metadata", "prompt", "client_metadata",
                  "context_management", "stream_options", "conversation")


def _nullable(schema: dict) -> dict:
    """`schema`, or null. Written as a type list rather than anyOf, so an error names the exact spot inside."""
    return {**schema, "type": [schema["type"], "null"]}


_STRING = {"type": "string"}
_OPT_STRING = {"type": ["string", "null"]}
_OPT_BOOL = {"type": ["boolean", "null"]}
_OPT_OBJECT = {"type": ["object", "null"]}

# A content part of a message or of a tool output. Only what the translator reads is typed.
_PART = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": _STRING,
        "text": _STRING,
        "refusal": _STRING,
        "image_url": _OPT_STRING,
        "file_id": _OPT_STRING,
        "detail": {"enum": ["low", "high", "auto", "original", None]},
    },
}
_PARTS = {"type": "array", "items": _PART}
_CONTENT = {"type": ["string", "array"], "items": _PART}


def _when_type(kinds: list[str], then: dict) -> dict:
    return {"if": {"properties": {"type": {"enum": kinds}}, "required": ["type"]}, "then": then}


# One item of `input`. The translator rejects item types it does not know and checks that calls and outputs have
# their ids; here every field it reads has its type. The fields are typed whatever the item's type (each name has
# one meaning across the item types the proxy translates): one pass per item, no per-type branches, which would
# cost four times as much on a long history.
_INPUT_ITEM = {
    "type": "object",
    "properties": {
        "type": _STRING,
        "id": _OPT_STRING,
        "role": {"enum": ["user", "assistant", "system", "developer"]},
        "content": {"type": ["string", "array", "null"], "items": _PART},  # a message's, or a reasoning item's
        "call_id": _STRING,
        "name": _STRING,
        "namespace": _OPT_STRING,
        "arguments": _STRING,  # function_call
        "input": _STRING,  # custom_tool_call
        "output": _CONTENT,  # function_call_output, custom_tool_call_output
        "encrypted_content": _OPT_STRING,
        "summary": _PARTS,
    },
}

# What every named tool (function, custom, namespace) has; each kind adds its own fields after these.
_TOOL_NAME_AND_DESCRIPTION = {"name": {"type": "string", "minLength": 1}, "description": _OPT_STRING}
_FUNCTION_TOOL = {
    "required": ["name"],
    "properties": {
        **_TOOL_NAME_AND_DESCRIPTION,
        # A JSON Schema document is an object (or true/false, which no function-calling API takes).
        "parameters": _OPT_OBJECT,
        "strict": _OPT_BOOL,
    },
}
_CUSTOM_TOOL = {
    "required": ["name"],
    "properties": {
        **_TOOL_NAME_AND_DESCRIPTION,
        "format": _nullable({
            "type": "object",
            "required": ["type"],
            "properties": {"type": {"enum": ["text", "grammar"]}},
            "if": {"properties": {"type": {"const": "grammar"}}},
            "then": {"required": ["syntax", "definition"],
                     "properties": {"syntax": {"enum": ["lark", "regex"]}, "definition": _STRING}},
        }),
    },
}


def _tool(inner: bool) -> dict:
    branches = [_when_type(["function"], _FUNCTION_TOOL), _when_type(["custom"], _CUSTOM_TOOL)]
    if not inner:
        branches.append(_when_type(["namespace"], {
            "required": ["name", "tools"],
            "properties": {**_TOOL_NAME_AND_DESCRIPTION, "tools": {"type": "array", "items": _tool(inner=True)}},
        }))
    return {"type": "object", "required": ["type"], "properties": {"type": _STRING}, "allOf": branches}


_TOOL_CHOICE = tool_choice_schema({
    "required": ["type"],
    "properties": {"type": _STRING},
    "allOf": [
        _when_type(["function", "custom"], {"required": ["name"], "properties": {"name": _STRING}}),
        _when_type(["allowed_tools"], {
            "required": ["mode", "tools"],
            "properties": {"mode": {"enum": ["auto", "required"]},
                           "tools": {"type": "array", "items": {"type": "object"}}},
        }),
        _when_type(["mcp"], {"required": ["server_label"], "properties": {"server_label": _STRING}}),
    ],
})

_TEXT_FORMAT = {
    "type": "object",
    "required": ["type"],
    "properties": {"type": {"enum": ["text", "json_schema", "json_object"]}},
    "allOf": [_when_type(["json_schema"], {
        "required": ["name", "schema"],
        "properties": {"name": {"type": "string", "maxLength": 64, "pattern": "^[A-Za-z0-9_-]+$"},
                       "description": _STRING, "schema": {"type": "object"}, "strict": _OPT_BOOL},
    })],
}

# The fields' types and ranges, from the openai SDK's ResponseCreateParams and the OpenAI spec.
_TYPED_FIELDS: dict[str, Any] = {
    "model": {"type": "string", "minLength": 1},
    "input": {"type": ["string", "array"], "items": _INPUT_ITEM},
    "instructions": _OPT_STRING,
    "stream": _OPT_BOOL,
    "store": _OPT_BOOL,
    "background": _OPT_BOOL,
    "parallel_tool_calls": _OPT_BOOL,
    "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2},
    "top_p": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
    "max_output_tokens": {"type": ["integer", "null"], "minimum": 1},
    "max_tool_calls": {"type": ["integer", "null"], "minimum": 1},
    "top_logprobs": {"type": ["integer", "null"], "minimum": 0, "maximum": 20},
    "truncation": {"enum": ["auto", "disabled", None]},
    "metadata": _nullable({
        "type": "object",
        "maxProperties": 16,
        "propertyNames": {"maxLength": 64},
        "additionalProperties": {"type": "string", "maxLength": 512},
    }),
    "client_metadata": _OPT_OBJECT,  # Codex
    "tools": _nullable({"type": "array", "items": _tool(inner=False)}),
    "tool_choice": _TOOL_CHOICE,
    "text": _nullable({
        "type": "object",
        "properties": {"format": _nullable(_TEXT_FORMAT),
                       "verbosity": {"enum": ["low", "medium", "high", None]}},
    }),
    "reasoning": _nullable({
        "type": "object",
        "properties": {
            "effort": {"enum": ["none", "minimal", "low", "medium", "high", "xhigh", "max", None]},
            "summary": {"enum": ["auto", "concise", "detailed", None]},
            "generate_summary": {"enum": ["auto", "concise", "detailed", None]},
        },
    }),
    "include": _nullable({"type": "array", "items": _STRING}),
    "previous_response_id": _OPT_STRING,
    "conversation": {"type": ["string", "object", "null"]},
    "prompt": _OPT_OBJECT,
    "prompt_cache_key": _OPT_STRING,
    "prompt_cache_retention": _OPT_STRING,
    "safety_identifier": {"type": ["string", "null"], "maxLength": 128},
    "user": _OPT_STRING,
    "service_tier": _OPT_STRING,
    "stream_options": _nullable({"type": "object", "properties": {"include_obfuscation": {"type": "boolean"}}}),
    "access_programs": _OPT_OBJECT, "background_options": _OPT_OBJECT, "image": _OPT_OBJECT,
    "moderation": _OPT_OBJECT, "prompt_cache_options": _OPT_OBJECT,
    "context_management": _nullable({"type": "array", "items": {"type": "object", "required": ["type"],
                                                                "properties": {"type": _STRING}}}),
}

RESPONSES_REQUEST_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "CreateResponse",
    "description": "POST /v1/responses, as this proxy accepts it (the OpenAI Responses API's create call).",
    "type": "object",
    "required": ["model"],
    # Every field the translator knows; those the proxy does not read are accepted as they come.
    "properties": {field: _TYPED_FIELDS.get(field, {}) for field in sorted(KNOWN_FIELDS)},
    "additionalProperties": False,
}

_VALIDATOR = jsonschema_rs.Draft202012Validator(RESPONSES_REQUEST_SCHEMA)


def validate_responses_request(body: Any) -> None:
    """Raise RequestError (400, `param` the dotted path of the first offending value) unless `body` is a
    Responses create request this proxy can translate."""
    openai_schema_check(body, _VALIDATOR, _DEPTH_CHECKED)
