"""Errors in Anthropic's shape, with the status and headers Claude Code acts on. Pure: no Flask, no I/O.

    {"type": "error", "error": {"type": "<error type>", "message": "..."}}

What Claude Code (2.1.x) does with them: it retries 408/409/429/5xx/529 (and 401) with backoff, honours
`retry-after`, stops at once on `x-should-retry: false`, and answers a 400 whose message reads
"input length and `max_tokens` exceed context limit: A + B > C" by retrying with a smaller max_tokens.

The relay speaks in neutral kinds (the names below); `anthropic_error` turns a kind into (status, headers, body).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# kind → (HTTP status, Anthropic error type). Types are those of the anthropic SDK's ErrorObject union.
KINDS: dict[str, tuple[int, str]] = {
    "invalid_request": (400, "invalid_request_error"),
    "context_overflow": (400, "invalid_request_error"),
    "authentication": (401, "authentication_error"),
    "billing": (402, "billing_error"),  # DeepSeek's 402 "Insufficient Balance"
    "permission": (403, "permission_error"),
    "not_found": (404, "not_found_error"),  # also an unknown model
    "request_too_large": (413, "request_too_large"),
    "rate_limit": (429, "rate_limit_error"),
    "api_error": (500, "api_error"),
    "timeout": (504, "timeout_error"),
    "overloaded": (529, "overloaded_error"),  # the upstream's 503, or it ran out of capacity mid-reply
}
# The OpenAI-style codes the relay and the profiles use today (profile.stream_failure, classify_error), so either
# vocabulary works until the lead settles on one.
ALIASES: dict[str, str] = {
    "server_error": "api_error",
    "context_length_exceeded": "context_overflow",
    "server_is_overloaded": "overloaded",
    "rate_limit_exceeded": "rate_limit",
    "insufficient_quota": "billing",
    "invalid_api_key": "authentication",
    "model_not_found": "not_found",
    "request_too_large": "request_too_large",
}
# Retrying cannot help: a wrong key or an empty balance stays so (Claude Code would otherwise retry 10 times).
_NO_RETRY = {"authentication", "billing"}

# DeepSeek (and OpenAI-style servers): "This model's maximum context length is 131072 tokens. However, you requested
# 140000 tokens (130000 in the messages, 10000 in the completion). ..."
_DEEPSEEK_OVERFLOW = re.compile(
    r"maximum context length is (?P<limit>\d+) tokens.*?requested (?P<total>\d+) tokens"
    r"(?: \((?P<input>\d+) in the messages, (?P<output>\d+) in the completion\))?",
    re.DOTALL,
)


@dataclass(frozen=True)
class AnthropicError:
    status: int
    headers: dict[str, str]
    body: dict


def anthropic_error(
    kind: str,
    message: str,
    *,
    retry_after: float | None = None,
    request_id: str | None = None,
) -> AnthropicError:
    """A neutral error kind (see KINDS; anything unknown is an api_error) → the response Claude Code expects."""
    kind = ALIASES.get(kind, kind)
    status, error_type = KINDS.get(kind, KINDS["api_error"])
    headers: dict[str, str] = {}
    if kind in _NO_RETRY:
        headers["x-should-retry"] = "false"
    if retry_after is not None and kind in ("rate_limit", "overloaded", "api_error", "timeout"):
        headers["retry-after"] = str(max(0, int(retry_after + 0.999)))  # whole seconds, rounded up
    body: dict = {"type": "error", "error": {"type": error_type, "message": message}}
    if request_id:
        body["request_id"] = request_id
    return AnthropicError(status, headers, body)


def error_event(kind: str, message: str) -> dict:
    """The `error` event that ends a stream which had already started."""
    error_type = KINDS.get(ALIASES.get(kind, kind), KINDS["api_error"])[1]
    return {"type": "error", "error": {"type": error_type, "message": message}}


def context_overflow_error(
    upstream_message: str,
    *,
    input_tokens: int,
    max_tokens: int,
    context_window: int,
    request_id: str | None = None,
) -> AnthropicError:
    """The 400 Claude Code recovers from by itself: "input length and `max_tokens` exceed context limit: A + B > C".

    The numbers come from the upstream's message when it states them (DeepSeek does); otherwise from our estimate of
    the input, the request's max_tokens and the model's configured window. The upstream has the last word that the
    sum is over the limit, so A is raised to make the inequality true when our estimate falls short of its count.
    """
    a, b, c = overflow_numbers(upstream_message, input_tokens=input_tokens, max_tokens=max_tokens,
                               context_window=context_window)
    message = f"input length and `max_tokens` exceed context limit: {a} + {b} > {c}, decrease input length or " \
              f"`max_tokens` and try again"
    return anthropic_error("context_overflow", message, request_id=request_id)


def overflow_numbers(upstream_message: str, *, input_tokens: int, max_tokens: int,
                     context_window: int) -> tuple[int, int, int]:
    a, b, c = input_tokens, max_tokens, context_window
    match = _DEEPSEEK_OVERFLOW.search(upstream_message or "")
    if match:
        c = int(match["limit"])
        if match["input"] is not None:
            a, b = int(match["input"]), int(match["output"])
        else:
            a = int(match["total"]) - b
    if a + b <= c:
        a = c - b + 1
    return max(a, 0), b, c
