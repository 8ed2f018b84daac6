"""Anthropic-shaped errors with the status and headers Claude Code acts on; bodies validate against the SDK."""

from __future__ import annotations

import re

import pytest
from anthropic.types.beta_error_response import BetaErrorResponse

from deepseek_proxy.translate.messages_errors import (
    ALIASES,
    KINDS,
    anthropic_error,
    context_overflow_error,
    error_event,
    overflow_numbers,
)

# What Claude Code matches to shrink max_tokens and retry (CLIENTS.md).
CLAUDE_CODE_OVERFLOW = re.compile(r"input length and `max_tokens` exceed context limit: (\d+) \+ (\d+) > (\d+)")
DEEPSEEK_OVERFLOW = ("This model's maximum context length is 131072 tokens. However, you requested 140000 tokens "
                     "(130000 in the messages, 10000 in the completion). Please reduce the length of the messages "
                     "or completion.")


def strict(body: dict) -> None:
    model = BetaErrorResponse.model_validate(body)
    assert not model.model_extra and not model.error.model_extra


@pytest.mark.parametrize(("kind", "status", "error_type"), [
    ("invalid_request", 400, "invalid_request_error"),
    ("authentication", 401, "authentication_error"),
    ("billing", 402, "billing_error"),
    ("permission", 403, "permission_error"),
    ("not_found", 404, "not_found_error"),
    ("rate_limit", 429, "rate_limit_error"),
    ("api_error", 500, "api_error"),
    ("timeout", 504, "timeout_error"),
    ("overloaded", 529, "overloaded_error"),
    ("something new", 500, "api_error"),
])
def test_kinds_map_to_anthropic_status_and_type(kind, status, error_type):
    error = anthropic_error(kind, "what happened")
    assert (error.status, error.body) == (status, {"type": "error",
                                                   "error": {"type": error_type, "message": "what happened"}})
    if error_type != "request_too_large":
        strict(error.body)


def test_every_kind_validates_against_the_sdk():
    for kind in KINDS:
        if kind != "request_too_large":  # a type Anthropic sends that the SDK's union does not list yet
            strict(anthropic_error(kind, "m").body)
        strict(error_event(kind, "m") if kind != "request_too_large" else error_event("api_error", "m"))


def test_no_retry_for_a_bad_key_or_an_empty_balance():
    assert anthropic_error("authentication", "bad key").headers == {"x-should-retry": "false"}
    assert anthropic_error("billing", "Insufficient Balance").headers == {"x-should-retry": "false"}
    assert "x-should-retry" not in anthropic_error("rate_limit", "slow").headers


def test_retry_after_on_rate_limit_and_overload_in_whole_seconds():
    assert anthropic_error("rate_limit", "slow", retry_after=2).headers == {"retry-after": "2"}
    assert anthropic_error("overloaded", "busy", retry_after=0.3).headers == {"retry-after": "1"}
    assert anthropic_error("invalid_request", "no", retry_after=5).headers == {}


def test_openai_style_codes_are_understood_too():
    assert anthropic_error("server_is_overloaded", "busy").status == 529
    assert anthropic_error("insufficient_quota", "pay").headers == {"x-should-retry": "false"}
    assert error_event("context_length_exceeded", "long")["error"]["type"] == "invalid_request_error"
    assert set(ALIASES.values()) <= set(KINDS)


def test_context_overflow_uses_deepseeks_numbers():
    error = context_overflow_error(DEEPSEEK_OVERFLOW, input_tokens=1, max_tokens=2, context_window=3,
                                   request_id="req_1")
    assert error.status == 400
    match = CLAUDE_CODE_OVERFLOW.search(error.body["error"]["message"])
    assert match and match.groups() == ("130000", "10000", "131072")
    assert error.body["request_id"] == "req_1"
    strict(error.body)


def test_context_overflow_without_numbers_uses_the_estimate_and_the_config():
    assert overflow_numbers("context length exceeded", input_tokens=990_000, max_tokens=32_000,
                            context_window=1_000_000) == (990_000, 32_000, 1_000_000)
    # the upstream said it overflowed: the sum is made to say so too when the estimate falls short
    a, b, c = overflow_numbers("too long", input_tokens=900_000, max_tokens=32_000, context_window=1_000_000)
    assert (b, c) == (32_000, 1_000_000) and a + b > c
    # "requested M tokens" without the split: the input is what is left after max_tokens
    assert overflow_numbers("This model's maximum context length is 1000 tokens. However, you requested 1500 "
                            "tokens.", input_tokens=0, max_tokens=500, context_window=9) == (1000, 500, 1000)
