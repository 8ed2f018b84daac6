"""Which configured model serves a model name Gemini CLI asks for, and whether it thinks. Pure.

Without `-m`, Gemini CLI (0.61) asks a router on a `gemini-*-flash-lite*` name (a non-streaming JSON call), then runs
its main loop on `gemini-*-flash*` / `gemini-*-pro*` names; its next-speaker check asks `gemini-3-flash-preview` even
with `-m` (JSON by responseSchema). Router and next-speaker are small classification calls: they run on the flash
model without thinking by default (fast, cheap). A name the config lists is served as itself, and the client's
thinkingConfig decides. Patterns are shell-style, case-insensitive, first match wins; the lead wires a config key
over the defaults.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

# (pattern, configured model name, thinking allowed). False: the request runs without thinking whatever its
# thinkingConfig says.
DEFAULT_GEMINI_MODEL_PATTERNS: tuple[tuple[str, str, bool], ...] = (
    ("gemini-*-flash-lite*", "deepseek-v4-flash", False),  # the router
    ("gemini-3-flash-preview", "deepseek-v4-flash", False),  # the next-speaker check
    ("gemini-*-flash*", "deepseek-v4-pro", True),
    ("gemini-*-pro*", "deepseek-v4-pro", True),
)

M = TypeVar("M")


@dataclass(frozen=True)
class GeminiModelChoice(Generic[M]):
    model: M
    thinking_allowed: bool  # pass to translate_gemini_request(allow_thinking=...)


def strip_model_prefix(requested: str) -> str:
    """`models/gemini-x` (the REST path form, and what the SDK sends in some calls) → `gemini-x`."""
    return requested.removeprefix("models/")


def resolve_gemini_model(
    requested: Any,
    models: Mapping[str, M],
    patterns: Sequence[tuple[str, str, bool]] = DEFAULT_GEMINI_MODEL_PATTERNS,
) -> GeminiModelChoice[M] | None:
    """The configured model for `requested`, or None (the door answers 404 NOT_FOUND)."""
    if not isinstance(requested, str) or not requested:
        return None
    name = strip_model_prefix(requested)
    if name in models:
        return GeminiModelChoice(models[name], True)
    lowered = name.lower()
    for pattern, target, thinking in patterns:
        if fnmatch.fnmatchcase(lowered, pattern.lower()) and target in models:
            return GeminiModelChoice(models[target], thinking)
    return None


def gemini_model_list(models: Mapping[str, Any]) -> dict:
    """GET /v1beta/models: the configured models as Google's `Model` objects (ModelConfig fields read by name)."""
    out = []
    for name, model in models.items():
        out.append({
            "name": f"models/{name}",
            "baseModelId": name,
            "version": "001",
            "displayName": getattr(model, "display_name", "") or name,
            "inputTokenLimit": getattr(model, "context_window", 0),
            "outputTokenLimit": getattr(model, "max_output_tokens", 0),
            "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "countTokens"],
            "thinking": bool(getattr(model, "thinking", False)),
        })
    return {"models": out}
