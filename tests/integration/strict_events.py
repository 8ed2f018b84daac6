"""Validate what the proxy sends against the openai SDK's own typed models, rejecting unknown fields."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import jsonschema_rs
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import BaseModel, Field, TypeAdapter

_EVENT = TypeAdapter(Annotated[ResponseStreamEvent, Field(discriminator="type")])


# Fields of the Response object the Open Responses schema requires (and OpenAI's API returns) that the openai
# SDK's model does not declare: allowed on a Response, with their types checked here instead.
OPEN_RESPONSES_ONLY = {"frequency_penalty": (int, float), "presence_penalty": (int, float), "store": bool}


def _no_extra(model: Any, path: str) -> None:
    if isinstance(model, BaseModel):
        extra = dict(model.model_extra or {})
        if isinstance(model, Response):
            for name, kind in OPEN_RESPONSES_ONLY.items():
                assert name in extra, f"{path} lacks {name} (required by the Open Responses schema)"
                value = extra.pop(name)
                assert isinstance(value, kind) and not (kind is not bool and isinstance(value, bool)), \
                    f"{path}.{name} has the wrong type: {value!r}"
        assert not extra, f"{path} has fields the SDK does not know: {sorted(extra)}"
        for name in type(model).model_fields:
            _no_extra(getattr(model, name), f"{path}.{name}")
    elif isinstance(model, (list, tuple)):
        for i, value in enumerate(model):
            _no_extra(value, f"{path}[{i}]")
    elif isinstance(model, dict):
        for key, value in model.items():
            _no_extra(value, f"{path}.{key}")


# Error codes Codex acts on in `response.failed` that the SDK's (narrower) literal does not list: Codex stops at
# once on context_length_exceeded and retries server_is_overloaded. They are checked here by name, the rest of the
# event by the SDK's model.
CODEX_FAILURE_CODES = {"context_length_exceeded", "server_is_overloaded", "insufficient_quota"}


# The Open Responses `Response` object (tests/fixtures/openresponses/README.md): required fields and their types.
_OPEN_RESPONSES = jsonschema_rs.Draft202012Validator(json.loads(
    (Path(__file__).resolve().parent.parent / "fixtures" / "openresponses" / "response_resource.json").read_text()))


def validate_open_responses(response: dict) -> None:
    errors = [f"{'/'.join(map(str, e.instance_path))}: {e.message}" for e in _OPEN_RESPONSES.iter_errors(response)]
    assert not errors, f"not an Open Responses Response object: {errors}"


def validate_event(data: dict) -> Any:
    error = (data.get("response") or {}).get("error") if isinstance(data.get("response"), dict) else None
    if data.get("type") == "response.failed" and error and error.get("code") in CODEX_FAILURE_CODES:
        data = {**data, "response": {**data["response"], "error": {**error, "code": "server_error"}}}
    if isinstance(data.get("response"), dict):
        validate_open_responses(data["response"])
    event = _EVENT.validate_python(data)
    _no_extra(event, data.get("type", "event"))
    return event


def validate_response(data: dict) -> Response:
    validate_open_responses(data)
    response = Response.model_validate(data)
    _no_extra(response, "response")
    return response
