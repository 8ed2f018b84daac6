"""Per-upstream quirks. The translators ask the profile; they never test which upstream they talk to.

A profile is pure (no I/O): how thinking is switched on, what a function tool may carry, which optional Chat
Completions fields the upstream accepts, and how its error texts map onto the error codes clients act on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import ModelConfig


@dataclass(frozen=True)
class ThinkingChoice:
    fields: dict[str, Any]  # top-level request fields that select the mode
    enabled: bool  # assistant turns must then carry reasoning_content


@dataclass(frozen=True)
class ErrorClass:
    code: str | None
    type: str


class OpenAICompatibleProfile:
    """A plain Chat Completions upstream (OpenAI itself, vLLM, OpenRouter, ...)."""

    name = "openai"
    accepts_parallel_tool_calls = True
    accepts_strict = True

    def thinking(self, model: ModelConfig, effort: str | None) -> ThinkingChoice:
        if not model.thinking or effort is None:
            return ThinkingChoice({}, model.thinking)
        return ThinkingChoice({"reasoning_effort": effort}, effort != "none")

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

    def classify_error(self, status: int, message: str, upstream_code: str | None) -> ErrorClass:
        if self.is_context_overflow(message):
            return ErrorClass("context_length_exceeded", "invalid_request_error")
        by_status = {
            400: ErrorClass(upstream_code, "invalid_request_error"),
            401: ErrorClass("invalid_api_key", "authentication_error"),
            402: ErrorClass("insufficient_quota", "insufficient_quota"),
            403: ErrorClass(upstream_code, "permission_error"),
            404: ErrorClass(upstream_code or "model_not_found", "invalid_request_error"),
            413: ErrorClass(upstream_code or "request_too_large", "invalid_request_error"),
            422: ErrorClass(upstream_code or "invalid_value", "invalid_request_error"),
            429: ErrorClass("rate_limit_exceeded", "rate_limit_error"),
            503: ErrorClass("server_is_overloaded", "server_error"),
        }
        return by_status.get(status, ErrorClass(upstream_code or "server_error", "server_error"))

    def stream_failure(self, error) -> tuple[str, str]:
        """(code, message) for an error chunk inside a stream that had already started."""
        if isinstance(error, dict):
            message = str(error.get("message") or "The upstream failed mid-reply.")
            code = error.get("code") if isinstance(error.get("code"), str) else None
        else:
            message, code = str(error), None
        if self.is_context_overflow(message):
            code = "context_length_exceeded"
        return code or "server_error", message


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


PROFILES = {p.name: p for p in (OpenAICompatibleProfile(), DeepSeekProfile())}


def profile_named(name: str) -> OpenAICompatibleProfile:
    return PROFILES[name]
