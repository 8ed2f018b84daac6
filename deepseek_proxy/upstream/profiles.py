"""Per-upstream quirks. The translators ask the profile; they never test which upstream they talk to.

A profile is pure (no I/O): how thinking is switched on, what a function tool may carry, which optional Chat
Completions fields the upstream accepts, and how its errors map onto the neutral error kinds (core/errors.py);
each front door then says a kind in its own client's terms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import ModelConfig
from ..core.errors import ErrorKind, ProxyError, context_numbers


@dataclass(frozen=True)
class ThinkingChoice:
    fields: dict[str, Any]  # top-level request fields that select the mode
    enabled: bool  # assistant turns must then carry reasoning_content


_KIND_BY_STATUS = {
    400: ErrorKind.INVALID_REQUEST,
    401: ErrorKind.AUTHENTICATION,
    402: ErrorKind.INSUFFICIENT_BALANCE,
    403: ErrorKind.PERMISSION,
    404: ErrorKind.NOT_FOUND,
    413: ErrorKind.TOO_LARGE,
    422: ErrorKind.INVALID_REQUEST,
    429: ErrorKind.RATE_LIMITED,
    502: ErrorKind.UPSTREAM_UNAVAILABLE,
    503: ErrorKind.OVERLOADED,
    504: ErrorKind.TIMEOUT,
}


class OpenAICompatibleProfile:
    """A plain Chat Completions upstream (OpenAI itself, vLLM, OpenRouter, ...)."""

    name = "openai"
    accepts_parallel_tool_calls = True
    accepts_strict = True
    accepts_top_k = False  # OpenAI has no top_k; an upstream that takes it (vLLM, SGLang) says so in its profile

    def thinking(self, model: ModelConfig, effort: str | None) -> ThinkingChoice:
        if not model.thinking or effort is None:
            return ThinkingChoice({}, model.thinking)
        return ThinkingChoice({"reasoning_effort": effort}, effort != "none")

    def thinking_off(self, model: ModelConfig) -> ThinkingChoice:
        """The fields that switch thinking off (a client that asked for none): a plain Chat upstream has no switch."""
        return ThinkingChoice({}, False)

    def function_tool(self, name: str, description: str | None, parameters: Any, strict: Any) -> dict:
        function: dict[str, Any] = {"name": name}
        if description:
            function["description"] = description
        function["parameters"] = parameters if parameters is not None else {"type": "object", "properties": {}}
        if strict is not None and self.accepts_strict:
            function["strict"] = strict
        return {"type": "function", "function": function}

    @staticmethod
    def is_context_overflow(message: str) -> bool:
        lowered = message.lower()
        return "context length" in lowered or "context_length" in lowered or "too many tokens" in lowered

    def classify_error(self, status: int, message: str, upstream_code: str | None, *,
                       param: str | None = None) -> ProxyError:
        """The upstream refused a request (HTTP `status`, its own `message` and code): a neutral error."""
        if self.is_context_overflow(message):
            limit, requested = context_numbers(message)
            return ProxyError(ErrorKind.CONTEXT_OVERFLOW, message, status, upstream_code, param,
                              context_limit=limit, requested_tokens=requested)
        kind = _KIND_BY_STATUS.get(status, ErrorKind.SERVER_ERROR if status >= 500 else ErrorKind.INVALID_REQUEST)
        return ProxyError(kind, message, status, upstream_code, param)

    def stream_failure(self, error: Any) -> ProxyError:
        """An error chunk inside a stream that had already started."""
        if isinstance(error, dict):
            message = str(error.get("message") or "The upstream failed mid-reply.")
            code = error.get("code") if isinstance(error.get("code"), str) else None
        else:
            message, code = str(error), None
        if self.is_context_overflow(message):
            limit, requested = context_numbers(message)
            return ProxyError(ErrorKind.CONTEXT_OVERFLOW, message, 400, code,
                              context_limit=limit, requested_tokens=requested)
        return ProxyError(ErrorKind.SERVER_ERROR, message, 500, code)


class DeepSeekProfile(OpenAICompatibleProfile):
    """DeepSeek V4: thinking on by default, switched by `thinking` + `reasoning_effort`; no `strict` outside
    the beta base URL; no `parallel_tool_calls` parameter; context errors phrased as
    "This model's maximum context length is N tokens ..."."""

    name = "deepseek"
    accepts_parallel_tool_calls = False
    accepts_strict = False

    def thinking(self, model: ModelConfig, effort: str | None) -> ThinkingChoice:
        if not model.thinking:
            return ThinkingChoice({}, False)
        target = model.effort_map.get(effort) if effort else None
        if target == "disabled":
            return ThinkingChoice({"thinking": {"type": "disabled"}}, False)
        fields: dict[str, Any] = {"thinking": {"type": "enabled"}}
        if target:
            fields["reasoning_effort"] = target
        return ThinkingChoice(fields, True)

    def thinking_off(self, model: ModelConfig) -> ThinkingChoice:
        # DeepSeek thinks by default: off must be said.
        return ThinkingChoice({"thinking": {"type": "disabled"}} if model.thinking else {}, False)


PROFILES = {p.name: p for p in (OpenAICompatibleProfile(), DeepSeekProfile())}


def profile_named(name: str) -> OpenAICompatibleProfile:
    return PROFILES[name]
