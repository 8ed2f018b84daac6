"""The Gemini door's request validation: the types of a GenerateContentRequest (the v1beta REST reference and
google-genai's types), checked before anything goes upstream, each refusal naming the field.

The translator (translate/gemini_request.py) already refuses what it cannot translate (a functionCall without a name,
an unknown mode, a non-object schema, …); this adds the type checks it does not need for itself but a client deserves
(a `text` that is a number, a `thought` that is a string, an `args` that is a list, a `temperature` of 7), so the
client learns of its mistake as a 400 INVALID_ARGUMENT instead of a quiet reinterpretation or an upstream 422.
"""

from __future__ import annotations

from typing import Any

from ..translate.errors import RequestError
from .validation import too_deep

# Deepest nesting accepted in the body: the reply and the upstream request wrap parts in a few more levels, and
# orjson refuses to write beyond 254.
MAX_DEPTH = 64
_RANGES = {"temperature": (0.0, 2.0), "topP": (0.0, 1.0), "topK": (1, None), "presencePenalty": (-2.0, 2.0),
           "frequencyPenalty": (-2.0, 2.0), "candidateCount": (1, None), "maxOutputTokens": (1, None),
           "seed": (None, None)}
_INTEGERS = {"topK", "candidateCount", "maxOutputTokens", "seed"}


def _fail(where: str, problem: str) -> RequestError:
    return RequestError(f"Invalid value at '{where}': {problem}", param=where)


def _get(obj: dict, camel: str, snake: str) -> tuple[str, Any]:
    if camel in obj:
        return camel, obj[camel]
    return snake, obj.get(snake)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate_gemini_request(body: Any) -> None:
    if not isinstance(body, dict):
        raise RequestError("The request body must be a JSON object (a GenerateContentRequest).")
    if too_deep(body, MAX_DEPTH, count_values=True):  # the whole body, a value counting as a level
        raise RequestError(f"The request is nested more than {MAX_DEPTH} levels deep.")
    key, contents = _get(body, "contents", "contents")
    if not isinstance(contents, list) or not contents:
        raise _fail("contents", "a non-empty array of Content objects is required")
    for i, content in enumerate(contents):
        _content(content, f"contents[{i}]", role_required=False)
    key, system = _get(body, "systemInstruction", "system_instruction")
    if system is not None and not isinstance(system, str):
        _content(system, key, role_required=False)
    key, config = _get(body, "generationConfig", "generation_config")
    if config is not None:
        _generation_config(config, key)
    key, safety = _get(body, "safetySettings", "safety_settings")
    if safety is not None and (not isinstance(safety, list) or not all(isinstance(s, dict) for s in safety)):
        raise _fail(key, "an array of SafetySetting objects is required")
    key, cached = _get(body, "cachedContent", "cached_content")
    if cached is not None:
        raise _fail(key, "cached contents are not supported by this proxy (DeepSeek caches prompt prefixes itself: "
                         "send the contents)")


def _content(content: Any, where: str, *, role_required: bool) -> None:
    if not isinstance(content, dict):
        raise _fail(where, "a Content object is required")
    role = content.get("role")
    if role is not None and not isinstance(role, str):
        raise _fail(f"{where}.role", "a string is required")
    parts = content.get("parts")
    if parts is None:
        return
    if not isinstance(parts, list):
        raise _fail(f"{where}.parts", "an array of Part objects is required")
    for j, part in enumerate(parts):
        _part(part, f"{where}.parts[{j}]")


def _part(part: Any, where: str) -> None:
    if not isinstance(part, dict):
        raise _fail(where, "a Part object is required")
    text = part.get("text")
    if text is not None and not isinstance(text, str):
        raise _fail(f"{where}.text", "a string is required")
    if "thought" in part and part["thought"] is not None and not isinstance(part["thought"], bool):
        raise _fail(f"{where}.thought", "a boolean is required")
    key, signature = _get(part, "thoughtSignature", "thought_signature")
    if signature is not None and not isinstance(signature, str):
        raise _fail(f"{where}.{key}", "a base64 string is required")
    for camel, snake in (("inlineData", "inline_data"), ("fileData", "file_data")):
        key, blob = _get(part, camel, snake)
        if blob is None:
            continue
        if not isinstance(blob, dict):
            raise _fail(f"{where}.{key}", "an object is required")
        location = ("data", "data") if camel == "inlineData" else ("fileUri", "file_uri")
        for field in (("mimeType", "mime_type"), location):
            fkey, value = _get(blob, *field)
            if value is not None and not isinstance(value, str):
                raise _fail(f"{where}.{key}.{fkey}", "a string is required")
    key, call = _get(part, "functionCall", "function_call")
    if call is not None:
        if not isinstance(call, dict):
            raise _fail(f"{where}.{key}", "a FunctionCall object is required")
        if call.get("args") is not None and not isinstance(call["args"], dict):
            raise _fail(f"{where}.{key}.args", "an object is required")
        if call.get("id") is not None and not isinstance(call["id"], str):
            raise _fail(f"{where}.{key}.id", "a string is required")
    key, response = _get(part, "functionResponse", "function_response")
    if response is not None:
        if not isinstance(response, dict):
            raise _fail(f"{where}.{key}", "a FunctionResponse object is required")
        if not isinstance(response.get("name"), str) or not response["name"]:
            raise _fail(f"{where}.{key}.name", "a non-empty string is required")
        if response.get("response") is not None and not isinstance(response["response"], dict):
            raise _fail(f"{where}.{key}.response", "an object (a google.protobuf.Struct) is required")
        if response.get("id") is not None and not isinstance(response["id"], str):
            raise _fail(f"{where}.{key}.id", "a string is required")


def _generation_config(config: Any, where: str) -> None:
    if not isinstance(config, dict):
        raise _fail(where, "a GenerationConfig object is required")
    snake_names = {"topP": "top_p", "topK": "top_k", "presencePenalty": "presence_penalty",
                   "frequencyPenalty": "frequency_penalty", "candidateCount": "candidate_count",
                   "maxOutputTokens": "max_output_tokens"}
    for name, (low, high) in _RANGES.items():
        key, value = _get(config, name, snake_names.get(name, name))
        if value is None:
            continue
        path = f"{where}.{key}"
        if name in _INTEGERS:
            if not isinstance(value, int) or isinstance(value, bool):
                raise _fail(path, "an integer is required")
        elif not _is_number(value):
            raise _fail(path, "a number is required")
        if (low is not None and value < low) or (high is not None and value > high):
            span = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise _fail(path, f"must be {span}, got {value}")
    key, mime = _get(config, "responseMimeType", "response_mime_type")
    if mime is not None and not isinstance(mime, str):
        raise _fail(f"{where}.{key}", "a string is required")
    key, stops = _get(config, "stopSequences", "stop_sequences")
    if stops is not None and (not isinstance(stops, list) or not all(isinstance(s, str) for s in stops)):
        raise _fail(f"{where}.{key}", "an array of strings is required")
    if isinstance(stops, list) and len(stops) > 5:
        raise _fail(f"{where}.{key}", f"at most 5 stop sequences are allowed, got {len(stops)}")
