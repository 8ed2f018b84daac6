"""The Chat Completions door's request validation: types and ranges, checked before anything goes upstream.

One JSON Schema document (CHAT_REQUEST_SCHEMA, 2020-12, checked by jsonschema-rs as the Responses door does)
states the fields of the OpenAI Chat Completions create call (openai SDK's `CompletionCreateParams`) with the types
and ranges the OpenAI spec gives them: `temperature` 0–2, `top_p` 0–1, penalties −2–2, `top_logprobs` 0–20, token
limits ≥ 1, `messages` a non-empty array whose entries have the shape of their role, function tools with an
object `parameters`. A bad value is a 400 naming the parameter (`messages[3].content`, `tools[0].function.name`).

Fields outside the spec are accepted and not forwarded (translate/chat_request.py): OpenAI-compatible clients send
vendor extensions (`top_k`, `repetition_penalty`, OpenRouter's `usage`) as a matter of course. DeepSeek's own
`thinking` switch is typed, since it is read.

`n` must be 1 (or absent): the upstream returns one choice per request, so more would silently come back as one.
"""

from __future__ import annotations

from typing import Any

import jsonschema_rs

from .validation import openai_schema_check, tool_choice_schema

_STRING = {"type": "string"}
_OPT_STRING = {"type": ["string", "null"]}
_OPT_BOOL = {"type": ["boolean", "null"]}
_OPT_OBJECT = {"type": ["object", "null"]}
_DEPTH_CHECKED = ("tools", "tool_choice", "response_format", "metadata", "stream_options", "logit_bias",
                  "prediction", "web_search_options", "thinking")


def _when(prop: str, values: list[str], then: dict) -> dict:
    return {"if": {"properties": {prop: {"enum": values}}, "required": [prop]}, "then": then}


_TEXT_PART = {"type": "object", "required": ["type", "text"],
              "properties": {"type": {"const": "text"}, "text": _STRING}}
_USER_PART = {
    "type": "object",
    "required": ["type"],
    "properties": {"type": {"enum": ["text", "image_url", "input_audio", "file"]}},
    "allOf": [
        _when("type", ["text"], {"required": ["text"], "properties": {"text": _STRING}}),
        _when("type", ["image_url"], {
            "required": ["image_url"],
            "properties": {"image_url": {"type": "object", "required": ["url"],
                                         "properties": {"url": _STRING,
                                                        "detail": {"enum": ["auto", "low", "high"]}}}},
        }),
        _when("type", ["input_audio"],
              {"required": ["input_audio"], "properties": {"input_audio": {"type": "object"}}}),
        _when("type", ["file"], {"required": ["file"], "properties": {"file": {"type": "object"}}}),
    ],
}
_ASSISTANT_PART = {"type": "object", "required": ["type"],
                   "properties": {"type": {"enum": ["text", "refusal"]}, "text": _STRING, "refusal": _STRING}}
_TOOL_CALL = {
    "type": "object",
    "required": ["id", "type"],
    "properties": {"id": _STRING, "type": {"enum": ["function", "custom"]}},
    "allOf": [_when("type", ["function"], {
        "required": ["function"],
        "properties": {"function": {"type": "object", "required": ["name", "arguments"],
                                    "properties": {"name": _STRING, "arguments": _STRING}}},
    })],
}
_MESSAGE = {
    "type": "object",
    "required": ["role"],
    "properties": {"role": {"enum": ["system", "developer", "user", "assistant", "tool", "function"]},
                   "name": _STRING},
    "allOf": [
        _when("role", ["system", "developer"], {
            "required": ["content"],
            "properties": {"content": {"type": ["string", "array"], "items": _TEXT_PART}},
        }),
        _when("role", ["user"], {
            "required": ["content"],
            "properties": {"content": {"type": ["string", "array"], "items": _USER_PART}},
        }),
        _when("role", ["assistant"], {
            "properties": {"content": {"type": ["string", "array", "null"], "items": _ASSISTANT_PART},
                           "tool_calls": {"type": ["array", "null"], "items": _TOOL_CALL},
                           "reasoning_content": _OPT_STRING, "refusal": _OPT_STRING},
        }),
        _when("role", ["tool"], {
            "required": ["content", "tool_call_id"],
            "properties": {"content": {"type": ["string", "array"], "items": _TEXT_PART},
                           "tool_call_id": _STRING},
        }),
    ],
}
_TOOL = {
    "type": "object",
    "required": ["type"],
    "properties": {"type": {"enum": ["function", "custom"]}},
    "allOf": [_when("type", ["function"], {
        "required": ["function"],
        "properties": {"function": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string", "minLength": 1}, "description": _OPT_STRING,
                           # A JSON Schema document is an object (true/false is no function's parameters).
                           "parameters": {"type": "object"}, "strict": _OPT_BOOL},
        }},
    })],
}
_TOOL_CHOICE = tool_choice_schema({
    "required": ["type"],
    "properties": {"type": {"enum": ["function", "allowed_tools", "custom"]}},
    "allOf": [
        _when("type", ["function"], {"required": ["function"], "properties": {
            "function": {"type": "object", "required": ["name"], "properties": {"name": _STRING}}}}),
        _when("type", ["allowed_tools"], {"required": ["allowed_tools"], "properties": {
            "allowed_tools": {"type": "object", "required": ["mode", "tools"],
                              "properties": {"mode": {"enum": ["auto", "required"]},
                                             "tools": {"type": "array", "items": {"type": "object"}}}}}}),
    ],
})
_RESPONSE_FORMAT = {
    "type": ["object", "null"],
    "required": ["type"],
    "properties": {"type": {"enum": ["text", "json_object", "json_schema"]}},
    "allOf": [_when("type", ["json_schema"], {"required": ["json_schema"], "properties": {"json_schema": {
        "type": "object",
        "required": ["name"],
        "properties": {"name": {"type": "string", "maxLength": 64, "pattern": "^[A-Za-z0-9_-]+$"},
                       "description": _STRING, "schema": {"type": "object"}, "strict": _OPT_BOOL},
    }}})],
}
_PENALTY = {"type": ["number", "null"], "minimum": -2, "maximum": 2}
_TOKENS = {"type": ["integer", "null"], "minimum": 1}

CHAT_REQUEST_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "CreateChatCompletion",
    "description": "POST /v1/chat/completions, as this proxy accepts it (the OpenAI Chat Completions create call).",
    "type": "object",
    "required": ["model", "messages"],
    "properties": {
        "model": {"type": "string", "minLength": 1},
        "messages": {"type": "array", "minItems": 1, "items": _MESSAGE},
        "stream": _OPT_BOOL,
        "stream_options": {"type": ["object", "null"],
                           "properties": {"include_usage": {"type": "boolean"},
                                          "include_obfuscation": {"type": "boolean"}}},
        "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2},
        "top_p": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
        "n": {"type": ["integer", "null"], "minimum": 1, "maximum": 128},
        "max_tokens": _TOKENS,
        "max_completion_tokens": _TOKENS,
        "presence_penalty": _PENALTY,
        "frequency_penalty": _PENALTY,
        "logprobs": _OPT_BOOL,
        "top_logprobs": {"type": ["integer", "null"], "minimum": 0, "maximum": 20},
        "seed": {"type": ["integer", "null"]},
        # OpenAI allows up to 4 stop sequences; DeepSeek up to 16, so 16 it is.
        "stop": {"type": ["string", "array", "null"], "items": _STRING, "maxItems": 16},
        "tools": {"type": ["array", "null"], "items": _TOOL},
        "tool_choice": _TOOL_CHOICE,
        "parallel_tool_calls": _OPT_BOOL,
        "response_format": _RESPONSE_FORMAT,
        "reasoning_effort": {"enum": ["none", "minimal", "low", "medium", "high", "xhigh", "max", None]},
        "thinking": {"type": ["object", "null"], "properties": {"type": {"enum": ["enabled", "disabled"]}}},
        "user": _OPT_STRING,
        "safety_identifier": {"type": ["string", "null"], "maxLength": 128},
        "prompt_cache_key": _OPT_STRING,
        "metadata": {"type": ["object", "null"], "maxProperties": 16, "propertyNames": {"maxLength": 64},
                     "additionalProperties": {"type": "string", "maxLength": 512}},
        "store": _OPT_BOOL,
        "service_tier": _OPT_STRING,
        "logit_bias": {"type": ["object", "null"], "additionalProperties": {"type": "number", "minimum": -100,
                                                                          "maximum": 100}},
        "modalities": {"type": ["array", "null"], "items": {"enum": ["text", "audio"]}},
        "verbosity": {"enum": ["low", "medium", "high", None]},
        "audio": _OPT_OBJECT,
        "prediction": _OPT_OBJECT,
        "web_search_options": _OPT_OBJECT,
        "functions": {"type": ["array", "null"]},
        "function_call": {"type": ["string", "object", "null"]},
    },
}

_VALIDATOR = jsonschema_rs.Draft202012Validator(CHAT_REQUEST_SCHEMA)


def validate_chat_request(body: Any) -> None:
    """Raise RequestError (400, `param` the dotted path of the first offending value) unless `body` is a Chat
    Completions create request this proxy can forward."""
    openai_schema_check(body, _VALIDATOR, _DEPTH_CHECKED)
