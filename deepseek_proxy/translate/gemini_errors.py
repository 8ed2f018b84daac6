"""Errors in Google's shape, with the status Gemini CLI acts on. Pure: no Flask, no I/O.

    {"error": {"code": 429, "message": "...", "status": "RESOURCE_EXHAUSTED", "details": [...]}}

What Gemini CLI (0.61, google-genai JS SDK inside) does with them: it retries 429, 499 and 5xx up to 10 times
(5 s first delay, doubling), waits a `google.rpc.RetryInfo` `retryDelay` from the body when there is one and
**ignores** the HTTP `Retry-After` header; 400 and 402 are not retried (exit code = status mod 256).

Choices made here:
- a wrong key is Google's own answer to one: 400 INVALID_ARGUMENT with an `ErrorInfo` reason API_KEY_INVALID. Gemini
  CLI stops at once and prints the message; a 401 would be taken for an expired login by its auth flows.
- an empty balance (DeepSeek's 402) stays a 402 (Google has no billing status code; the CLI does not retry it).
- a request too large is a 400, as Google answers an oversized payload.

The relay speaks in neutral kinds, the same as the Messages door's (messages_errors.KINDS and ALIASES);
`gemini_error` turns a kind into (status, headers, body), `error_chunk` into the mid-stream error object.
"""

from __future__ import annotations

from dataclasses import dataclass

from .messages_errors import ALIASES, overflow_numbers

# kind → (HTTP status, google.rpc.Code name)
KINDS: dict[str, tuple[int, str]] = {
    "invalid_request": (400, "INVALID_ARGUMENT"),
    "context_overflow": (400, "INVALID_ARGUMENT"),
    "authentication": (400, "INVALID_ARGUMENT"),
    "billing": (402, "FAILED_PRECONDITION"),
    "permission": (403, "PERMISSION_DENIED"),
    "not_found": (404, "NOT_FOUND"),
    "request_too_large": (400, "INVALID_ARGUMENT"),
    "rate_limit": (429, "RESOURCE_EXHAUSTED"),
    "api_error": (500, "INTERNAL"),
    "timeout": (504, "DEADLINE_EXCEEDED"),
    "overloaded": (503, "UNAVAILABLE"),
}
RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
_RETRYABLE = ("rate_limit", "overloaded", "api_error", "timeout")


@dataclass(frozen=True)
class GeminiError:
    status: int
    headers: dict[str, str]
    body: dict


def _kind(kind: str) -> str:
    kind = ALIASES.get(kind, kind)
    return kind if kind in KINDS else "api_error"


def error_object(kind: str, message: str, *, retry_after: float | None = None) -> dict:
    """The `error` object of a Google error body for a neutral error kind (unknown kinds are INTERNAL)."""
    kind = _kind(kind)
    code, status = KINDS[kind]
    details: list[dict] = []
    if kind == "authentication":
        details.append({"@type": ERROR_INFO, "reason": "API_KEY_INVALID", "domain": "googleapis.com",
                        "metadata": {"service": "generativelanguage.googleapis.com"}})
    if retry_after is not None and kind in _RETRYABLE:
        # Whole seconds, rounded up: the CLI waits exactly this before its next attempt.
        details.append({"@type": RETRY_INFO, "retryDelay": f"{max(0, int(retry_after + 0.999))}s"})
    return {"code": code, "message": message, "status": status, "details": details}


def gemini_error(kind: str, message: str, *, retry_after: float | None = None) -> GeminiError:
    """A neutral error kind → the response Gemini CLI expects. `retry_after` (seconds) becomes a RetryInfo detail,
    which the CLI honours, and a Retry-After header for other clients."""
    error = error_object(kind, message, retry_after=retry_after)
    headers: dict[str, str] = {}
    if any(d.get("@type") == RETRY_INFO for d in error["details"]):
        headers["retry-after"] = error["details"][-1]["retryDelay"][:-1]
    return GeminiError(error["code"], headers, {"error": error})


def error_chunk(kind: str, message: str) -> dict:
    """What ends a stream that had already started: the bare `{"error": ...}` object. Both SDKs recognise it only
    outside an SSE `data:` line (the JS SDK parses each network read that is a whole JSON object), so the stream
    encoder writes it bare and the door must flush it as its own write (gemini_stream.encode_sse)."""
    return {"error": error_object(kind, message)}


def not_found_model_error(requested: str) -> GeminiError:
    """Google's wording for a model it does not serve."""
    return gemini_error("not_found", f"models/{requested} is not found for API version v1beta, or is not supported "
                                     f"for generateContent. Call ListModels to see the list of available models.")


def context_overflow_error(upstream_message: str, *, input_tokens: int, max_tokens: int,
                           context_window: int) -> GeminiError:
    """400 INVALID_ARGUMENT naming the limit, in Google's words ("The input token count (A) exceeds the maximum
    number of tokens allowed (C)."), with the numbers from the upstream's message when it states them."""
    a, b, c = overflow_numbers(upstream_message, input_tokens=input_tokens, max_tokens=max_tokens,
                               context_window=context_window)
    limit = c - b if b < c else c
    message = (f"The input token count ({a}) exceeds the maximum number of tokens allowed ({limit}) "
               f"(context window {c} tokens, {b} reserved for the output).")
    return gemini_error("context_overflow", message)
