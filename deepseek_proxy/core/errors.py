"""Neutral error kinds: what went wrong, in no client's vocabulary.

The upstream layer and the translators raise `ProxyError(kind, message, ...)`; each front door renders a kind in
its own format (the Responses door: an OpenAI error body with status and code, or a `response.failed` event; the
Messages door: Anthropic's error types). `message` is the upstream's own text whenever there is one: it is what
the user needs to read (DeepSeek's "Insufficient Balance", its context-length sentence).

`retryable` says whether sending the same request again can succeed; a door uses it to choose between an error
its client backs off from and one it stops at.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass


class ErrorKind(enum.Enum):
    INVALID_REQUEST = "invalid_request"
    AUTHENTICATION = "authentication"  # the upstream rejected the key
    PROXY_KEY_MISSING = "proxy_key_missing"  # the proxy has no upstream key to send
    PERMISSION = "permission"
    NOT_FOUND = "not_found"
    TOO_LARGE = "too_large"
    CONTEXT_OVERFLOW = "context_overflow"
    INSUFFICIENT_BALANCE = "insufficient_balance"
    RATE_LIMITED = "rate_limited"
    OVERLOADED = "overloaded"
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"  # unreachable, TLS refused, broke mid-reply, unreadable
    TIMEOUT = "timeout"
    SERVER_ERROR = "server_error"
    SHUTTING_DOWN = "shutting_down"

    @property
    def retryable(self) -> bool:
        return self in _RETRYABLE


_RETRYABLE = frozenset({ErrorKind.RATE_LIMITED, ErrorKind.OVERLOADED, ErrorKind.UPSTREAM_UNAVAILABLE,
                        ErrorKind.TIMEOUT, ErrorKind.SERVER_ERROR, ErrorKind.SHUTTING_DOWN})


@dataclass
class ProxyError(Exception):
    """A request that cannot be answered, with everything a door needs to say so in its client's terms.

    `status` is the HTTP status the upstream answered with (or the proxy chose); `upstream_code` the upstream's
    own machine code, if any. For CONTEXT_OVERFLOW, `context_limit` and `requested_tokens` are filled in when the
    upstream's text gives them; for RATE_LIMITED / OVERLOADED, `retry_after` in seconds.
    """

    kind: ErrorKind
    message: str
    status: int = 500
    upstream_code: str | None = None
    param: str | None = None
    retry_after: int | None = None
    context_limit: int | None = None
    requested_tokens: int | None = None

    def __str__(self) -> str:
        return f"{self.status} {self.kind.value}: {self.message}"


# DeepSeek (and vLLM, OpenAI) phrase it "This model's maximum context length is N tokens. However, you requested
# M tokens (...)". Both numbers are optional: other upstreams say less.
_CONTEXT_LIMIT = re.compile(r"maximum context length is (\d+)", re.IGNORECASE)
_REQUESTED = re.compile(r"you requested (\d+) tokens", re.IGNORECASE)


def context_numbers(message: str) -> tuple[int | None, int | None]:
    """(context limit, requested tokens) as stated in a context-overflow message, each None when absent."""
    limit = _CONTEXT_LIMIT.search(message)
    requested = _REQUESTED.search(message)
    return (int(limit.group(1)) if limit else None, int(requested.group(1)) if requested else None)
