"""Errors in Google's shape (issue 13): the status and body Gemini CLI acts on, parsed by the google-genai SDK's own
error classes (errors.APIError.raise_error, and the real client through an in-process httpx2 MockTransport)."""

from __future__ import annotations

import httpx2
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from deepseek_proxy.translate.gemini_errors import (
    ERROR_INFO,
    KINDS,
    RETRY_INFO,
    context_overflow_error,
    error_chunk,
    gemini_error,
    not_found_model_error,
)
from deepseek_proxy.translate.messages_errors import KINDS as MESSAGES_KINDS


def sdk_error(status: int, body: dict) -> genai_errors.APIError:
    with pytest.raises(genai_errors.APIError) as raised:
        genai_errors.APIError.raise_error(status, body, None)
    return raised.value


def test_the_same_kinds_as_the_messages_door():
    assert set(KINDS) == set(MESSAGES_KINDS)


@pytest.mark.parametrize(("kind", "status", "google_status"), [
    ("invalid_request", 400, "INVALID_ARGUMENT"), ("context_overflow", 400, "INVALID_ARGUMENT"),
    ("authentication", 400, "INVALID_ARGUMENT"), ("billing", 402, "FAILED_PRECONDITION"),
    ("permission", 403, "PERMISSION_DENIED"), ("not_found", 404, "NOT_FOUND"),
    ("request_too_large", 400, "INVALID_ARGUMENT"), ("rate_limit", 429, "RESOURCE_EXHAUSTED"),
    ("api_error", 500, "INTERNAL"), ("timeout", 504, "DEADLINE_EXCEEDED"), ("overloaded", 503, "UNAVAILABLE"),
    ("something_new", 500, "INTERNAL"),
    # the relay's OpenAI-style codes
    ("rate_limit_exceeded", 429, "RESOURCE_EXHAUSTED"), ("insufficient_quota", 402, "FAILED_PRECONDITION"),
    ("invalid_api_key", 400, "INVALID_ARGUMENT"), ("context_length_exceeded", 400, "INVALID_ARGUMENT"),
    ("server_is_overloaded", 503, "UNAVAILABLE"), ("model_not_found", 404, "NOT_FOUND"),
])
def test_kinds_map_to_google_statuses_and_parse_in_the_sdk(kind, status, google_status):
    error = gemini_error(kind, "Something happened.")
    assert error.status == status
    assert set(error.body) == {"error"} and set(error.body["error"]) == {"code", "message", "status", "details"}
    parsed = sdk_error(error.status, error.body)
    assert isinstance(parsed, genai_errors.ClientError if status < 500 else genai_errors.ServerError)
    assert (parsed.code, parsed.status, parsed.message) == (status, google_status, "Something happened.")


def test_rate_limit_carries_retry_info_that_gemini_cli_honours():
    error = gemini_error("rate_limit", "Slow down.", retry_after=1.2)
    assert error.body["error"]["details"] == [{"@type": RETRY_INFO, "retryDelay": "2s"}]
    assert error.headers == {"retry-after": "2"}
    assert sdk_error(429, error.body).details["error"]["details"][0]["retryDelay"] == "2s"
    assert gemini_error("rate_limit", "Slow down.").body["error"]["details"] == []
    assert gemini_error("billing", "Top up.", retry_after=3).body["error"]["details"] == []  # never retried


def test_a_bad_key_is_googles_api_key_invalid_and_no_status_gemini_cli_retries():
    error = gemini_error("authentication", "Authentication Fails, your DeepSeek key is invalid")
    assert error.status == 400  # Gemini CLI retries 429, 499 and 5xx only
    assert error.body["error"]["details"][0]["@type"] == ERROR_INFO
    assert error.body["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    assert gemini_error("billing", "Insufficient Balance").status == 402


def test_context_overflow_names_the_limit():
    upstream = ("This model's maximum context length is 1000000 tokens. However, you requested 1100000 tokens "
                "(1000000 in the messages, 100000 in the completion).")
    error = context_overflow_error(upstream, input_tokens=5, max_tokens=7, context_window=9)
    assert error.status == 400 and error.body["error"]["status"] == "INVALID_ARGUMENT"
    message = error.body["error"]["message"]
    assert "(1000000)" in message and "900000" in message and "1000000 tokens" in message
    estimated = context_overflow_error("too long", input_tokens=990_000, max_tokens=20_000, context_window=1_000_000)
    assert "980000" in estimated.body["error"]["message"]


def test_unknown_model_is_a_404_in_googles_words():
    error = not_found_model_error("gemini-9-ultra")
    assert error.status == 404 and "models/gemini-9-ultra is not found" in error.body["error"]["message"]


def test_the_real_client_raises_our_errors():
    def handler(request):
        error = gemini_error("billing", "Insufficient Balance")
        return httpx2.Response(error.status, json=error.body)

    client = genai.Client(api_key="k", http_options=types.HttpOptions(
        base_url="http://127.0.0.1:9", httpx_client=httpx2.Client(transport=httpx2.MockTransport(handler))))
    with pytest.raises(genai_errors.ClientError) as raised:
        client.models.generate_content(model="gemini-x", contents="q")
    assert (raised.value.code, raised.value.message) == (402, "Insufficient Balance")


def test_error_chunk_is_the_bare_error_object():
    chunk = error_chunk("timeout", "The upstream stopped answering.")
    assert set(chunk) == {"error"}
    assert chunk["error"]["code"] == 504 and chunk["error"]["status"] == "DEADLINE_EXCEEDED"
