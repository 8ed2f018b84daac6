"""The Responses front door's validation layer: what passes (every captured Codex request), what is a 400, and
which parameter the 400 names (OpenAI's `param`: the dotted path of the offending value)."""

from __future__ import annotations

import copy

import pytest

from deepseek_proxy.frontdoors.responses_validation import (
    MAX_FIELD_DEPTH,
    RESPONSES_REQUEST_SCHEMA,
    dotted_path,
    validate_responses_request,
)
from deepseek_proxy.translate.errors import RequestError
from tests.conftest import CODEX_FIXTURES, codex_fixture

# Every captured Codex POST /v1/responses body (the GET of the catalog URL is also a "request" fixture).
CODEX_REQUESTS = sorted(str(p.relative_to(CODEX_FIXTURES)) for p in CODEX_FIXTURES.rglob("*request*.json")
                        if p.name != "get_request.json")
BASE = {"model": "deepseek-v4-pro", "input": "hi"}


def rejected(body) -> RequestError:
    with pytest.raises(RequestError) as caught:
        validate_responses_request(body)
    assert caught.value.status == 400
    return caught.value


def nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


@pytest.mark.parametrize("relative", CODEX_REQUESTS)
def test_every_captured_codex_request_passes(relative):
    body = codex_fixture(relative)
    if not (isinstance(body, dict) and "input" in body):
        pytest.fail(f"{relative} is not a Responses request body")  # the glob must only find request bodies
    validate_responses_request(body)


def test_the_fixture_glob_finds_codex_requests():
    assert len(CODEX_REQUESTS) >= 10


@pytest.mark.parametrize("extra, param", [
    ({"stream": "false"}, "stream"),
    ({"stream": 1}, "stream"),
    ({"store": "yes"}, "store"),
    ({"parallel_tool_calls": "true"}, "parallel_tool_calls"),
    ({"temperature": -3}, "temperature"),
    ({"temperature": 2.5}, "temperature"),
    ({"temperature": "hot"}, "temperature"),
    ({"top_p": 7}, "top_p"),
    ({"top_p": -0.1}, "top_p"),
    ({"max_output_tokens": 0}, "max_output_tokens"),
    ({"max_output_tokens": True}, "max_output_tokens"),
    ({"max_output_tokens": 1.5}, "max_output_tokens"),
    ({"top_logprobs": 21}, "top_logprobs"),
    ({"truncation": "sometimes"}, "truncation"),
    ({"instructions": ["a"]}, "instructions"),
    ({"model": 5}, "model"),
    ({"model": ""}, "model"),
    ({"input": 5}, "input"),
    ({"input": [5]}, "input[0]"),
    ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
    ({"input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": 5}]}]},
     "input[0].content[0].text"),
    ({"input": [{"type": "message", "role": "user", "content": [{"text": "no type"}]}]}, "input[0].content[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": {"url": "x"}}]}]},
     "input[0].content[0].image_url"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x", "detail": "huge"}]}]},
     "input[0].content[0].detail"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "n", "arguments": {}}]}, "input[0].arguments"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "n", "arguments": "{}", "namespace": 3}]},
     "input[0].namespace"),
    ({"input": [{"type": "custom_tool_call", "call_id": "c", "name": "n", "input": {"patch": 1}}]},
     "input[0].input"),
    ({"input": [{"type": "function_call_output", "call_id": "c", "output": {"x": 1}}]}, "input[0].output"),
    ({"input": [{"type": "function_call_output", "call_id": "c", "output": [{"type": "input_text", "text": None}]}]},
     "input[0].output[0].text"),
    ({"input": [{"type": "reasoning", "encrypted_content": 5, "summary": []}]}, "input[0].encrypted_content"),
    ({"input": [{"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": [1]}]}]},
     "input[0].content[0].text"),
    ({"tools": {"type": "function"}}, "tools"),
    ({"tools": [{"name": "x"}]}, "tools[0].type"),
    ({"tools": [{"type": "function", "name": "f", "parameters": {}}, {"type": "function", "name": "g"},
                {"type": "function", "name": "h"}, {"type": "function", "name": "i", "parameters": "notaschema"}]},
     "tools[3].parameters"),
    ({"tools": [{"type": "function", "name": "f", "strict": "yes"}]}, "tools[0].strict"),
    ({"tools": [{"type": "function", "name": ""}]}, "tools[0].name"),
    ({"tools": [{"type": "custom", "name": "apply_patch", "format": {"type": "grammar", "syntax": "ebnf",
                                                                     "definition": "x"}}]}, "tools[0].format.syntax"),
    ({"tools": [{"type": "namespace", "name": "mcp", "tools": "abc"}]}, "tools[0].tools"),
    ({"tools": [{"type": "namespace", "name": "mcp", "tools": [{"type": "function", "name": "f",
                                                                "parameters": [1]}]}]}, "tools[0].tools[0].parameters"),
    ({"tool_choice": "sometimes"}, "tool_choice"),
    ({"tool_choice": 3}, "tool_choice"),
    ({"tool_choice": {"type": "function"}}, "tool_choice.name"),
    ({"tool_choice": {"type": "allowed_tools", "mode": "maybe", "tools": []}}, "tool_choice.mode"),
    ({"metadata": {"a": {"b": "c"}}}, "metadata.a"),
    ({"metadata": {"a": 1}}, "metadata.a"),
    ({"metadata": {str(i): "v" for i in range(17)}}, "metadata"),
    ({"metadata": {"k": "v" * 513}}, "metadata.k"),
    ({"metadata": {"k" * 65: "v"}}, "metadata"),
    ({"metadata": nested(400)}, "metadata"),
    ({"tools": [{"type": "function", "name": "f", "parameters": nested(300)}]}, "tools"),
    ({"text": {"format": {"type": "json_schema", "name": "x", "schema": nested(500)}}}, "text"),
    ({"text": {"format": {"type": "yaml"}}}, "text.format.type"),
    ({"text": {"format": {"type": "json_schema", "name": "x", "schema": "notaschema"}}}, "text.format.schema"),
    ({"text": {"verbosity": "loud"}}, "text.verbosity"),
    ({"reasoning": {"effort": "extreme"}}, "reasoning.effort"),
    ({"reasoning": "high"}, "reasoning"),
    ({"include": "reasoning.encrypted_content"}, "include"),
    ({"safety_identifier": "x" * 129}, "safety_identifier"),
])
def test_a_bad_value_is_a_400_naming_its_parameter(extra, param):
    error = rejected({**BASE, **extra})
    assert error.param == param, error.message
    assert param in error.message


def test_an_unknown_parameter_is_named_like_openai_names_it():
    error = rejected({**BASE, "temperature": 1, "frobnicate": 1, "zzz": 2})
    assert (error.param, error.code, error.message) == ("frobnicate", "unknown_parameter",
                                                        "Unknown parameter: 'frobnicate'.")


def test_every_field_the_translator_knows_is_described():
    from deepseek_proxy.translate.responses_request import KNOWN_FIELDS

    assert set(RESPONSES_REQUEST_SCHEMA["properties"]) == KNOWN_FIELDS


def test_missing_model_is_named():
    error = rejected({"input": "hi"})
    assert error.param == "model" and error.code == "missing_required_parameter"


@pytest.mark.parametrize("body", [None, [], "hi", 5])
def test_a_body_that_is_not_an_object_is_a_400(body):
    assert rejected(body).param is None


@pytest.mark.parametrize("extra", [
    {"stream": True}, {"stream": False}, {"stream": None},
    {"temperature": 0}, {"temperature": 2}, {"temperature": 0.7}, {"top_p": 0}, {"top_p": 1}, {"top_p": None},
    {"max_output_tokens": 1}, {"max_output_tokens": None},
    {"metadata": {str(i): "v" * 512 for i in range(16)}}, {"metadata": None}, {"metadata": {}},
    {"tool_choice": "auto"}, {"tool_choice": None}, {"tool_choice": {"type": "web_search"}},
    {"tool_choice": {"type": "function", "name": "f"}},
    {"tool_choice": {"type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "f"}]}},
    {"tools": [{"type": "function", "name": "f", "parameters": None, "strict": None}]},
    {"tools": [{"type": "web_search", "external_web_access": False}]},
    {"tools": [{"type": "function", "name": "f", "parameters": nested(MAX_FIELD_DEPTH - 3)}]},
    {"text": {"format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}, "strict": True}}},
    {"text": None}, {"reasoning": {"effort": "max", "summary": "auto"}}, {"reasoning": None},
    {"input": [{"role": "user", "content": "hi"}]},
    {"input": [{"type": "message", "role": "user", "content": [{"type": "input_image", "image_url": "data:x",
                                                                  "detail": "original"}]}]},
    {"input": [{"type": "function_call_output", "call_id": "c", "output": "ok"}]},
    {"input": [{"type": "reasoning", "summary": [], "content": None, "encrypted_content": None}]},
    {"input": [{"type": "item_reference", "id": "x"}]},  # the translator's to refuse, with its own message
    {"client_metadata": {"x-codex-turn-metadata": "{}"}, "prompt_cache_key": "k", "service_tier": "priority"},
])
def test_legal_values_pass(extra):
    validate_responses_request({**BASE, **extra})


def test_validation_does_not_change_the_body():
    body = codex_fixture("normal/turn3_request.json")
    before = copy.deepcopy(body)
    validate_responses_request(body)
    assert body == before


def test_a_long_offending_value_is_not_quoted_whole():
    error = rejected({**BASE, "input": [{"type": "function_call_output", "call_id": "c", "output": {"x": "y" * 100_000}}]})
    assert error.param == "input[0].output"
    assert len(error.message) < 400


@pytest.mark.parametrize("path, dotted", [
    (["tools", 3, "parameters"], "tools[3].parameters"),
    (["input", 0, "content", 2, "text"], "input[0].content[2].text"),
    (["metadata"], "metadata"),
    ([], ""),
])
def test_dotted_path(path, dotted):
    assert dotted_path(path) == dotted


def test_the_schema_is_a_valid_2020_12_schema():
    import jsonschema  # the reference validator (a test dependency through schemathesis) checks our document

    jsonschema.Draft202012Validator.check_schema(RESPONSES_REQUEST_SCHEMA)
