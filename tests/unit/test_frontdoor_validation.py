"""frontdoors/validation.py: the depth bound and schema-error reading the four doors' validation shares."""

from __future__ import annotations

import jsonschema_rs
import pytest

from deepseek_proxy.frontdoors.validation import (
    MAX_FIELD_DEPTH,
    MESSAGE_LIMIT,
    dotted_path,
    first_problem,
    openai_schema_check,
    short,
    too_deep,
    too_deep_field,
)
from deepseek_proxy.translate.errors import RequestError


def nested(depth: int, leaf=None) -> list:
    """`depth` lists, one inside the other; the innermost holds `leaf` when given."""
    value: list = [] if leaf is None else [leaf]
    for _ in range(depth - 1):
        value = [value]
    return value


def test_too_deep_counts_containers_only_by_default():
    assert not too_deep(nested(3, leaf=1), 3)
    assert too_deep(nested(4), 3)
    assert not too_deep({"a": {"b": "x"}}, 2)


def test_too_deep_with_count_values_counts_a_value_as_a_level():
    assert too_deep(nested(3, leaf=1), 3, count_values=True)
    assert not too_deep(nested(3), 3, count_values=True)  # an empty innermost list holds no value
    assert too_deep({"a": {"b": "x"}}, 2, count_values=True)


def test_too_deep_survives_a_very_deep_value():
    assert too_deep(nested(100_000), MAX_FIELD_DEPTH)


def test_too_deep_field_names_the_first_offending_key_and_skips_scalars():
    body = {"a": "x" * 10, "b": nested(MAX_FIELD_DEPTH), "c": nested(MAX_FIELD_DEPTH + 1),
            "d": nested(MAX_FIELD_DEPTH + 5)}
    assert too_deep_field(body, ("a", "b", "missing")) is None
    assert too_deep_field(body, ("a", "b", "c", "d")) == "c"
    assert too_deep_field(body, ("d", "c")) == "d"


def test_short_caps_long_messages():
    assert short("x" * MESSAGE_LIMIT) == "x" * MESSAGE_LIMIT
    assert short("x" * (MESSAGE_LIMIT + 1)) == "x" * MESSAGE_LIMIT + "…"


_SCHEMA = {"type": "object", "required": ["model"], "additionalProperties": False,
           "properties": {"model": {"type": "string"},
                          "tools": {"type": "array", "items": {"type": "object", "required": ["name"],
                                                               "properties": {"name": {"type": "string"}}}}}}
_VALIDATOR = jsonschema_rs.Draft202012Validator(_SCHEMA)


def test_first_problem_reads_missing_unknown_and_invalid():
    assert first_problem(_VALIDATOR, {"model": "m"}) is None
    missing = first_problem(_VALIDATOR, {"model": "m", "tools": [{}]})
    assert missing is not None and missing.missing and missing.path == ["tools", 0, "name"]
    unknown = first_problem(_VALIDATOR, {"model": "m", "extra": 1})
    assert unknown is not None and unknown.unknown == "extra" and not unknown.missing
    invalid = first_problem(_VALIDATOR, {"model": "m", "tools": [{"name": 3}]})
    assert invalid is not None and invalid.path == ["tools", 0, "name"] and invalid.unknown is None


@pytest.mark.parametrize("body, message, param, code", [
    ([], "the request body must be a JSON object", None, None),
    ({"model": "m", "tools": nested(MAX_FIELD_DEPTH + 1)}, f"`tools` is nested more than {MAX_FIELD_DEPTH} levels",
     "tools", "invalid_value"),
    ({"model": "m", "extra": 1}, "Unknown parameter: 'extra'.", "extra", "unknown_parameter"),
    ({}, "Missing required parameter: 'model'.", "model", "missing_required_parameter"),
    ({"model": "m", "tools": [{"name": 3}]}, "Invalid value for 'tools[0].name': ", "tools[0].name", "invalid_value"),
])
def test_openai_schema_check_words_errors_as_openai(body, message, param, code):
    with pytest.raises(RequestError) as caught:
        openai_schema_check(body, _VALIDATOR, ("tools",))
    assert caught.value.message.startswith(message)
    assert caught.value.param == param
    assert caught.value.code == code


def test_openai_schema_check_passes_a_valid_body():
    openai_schema_check({"model": "m", "tools": [{"name": "f"}]}, _VALIDATOR, ("tools",))


def test_dotted_path():
    assert dotted_path(["tools", 3, "parameters"]) == "tools[3].parameters"
    assert dotted_path([]) == ""
