"""Which configured model serves a model name a Messages client asks for. Pure.

Claude Code asks for Claude models by default (`claude-opus-4-8`, `claude-sonnet-…`, and `claude-haiku-4-5-…` for
its Explore sub-agent) unless the user sets ANTHROPIC_MODEL / ANTHROPIC_DEFAULT_*_MODEL. A name the config lists is
served as itself; otherwise the first matching pattern (shell-style, case-insensitive) names the configured model.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from typing import TypeVar

# (pattern, configured model name), first match wins. The lead wires a config key over these defaults.
DEFAULT_MODEL_PATTERNS: tuple[tuple[str, str], ...] = (
    ("claude-opus-*", "deepseek-v4-pro"),
    ("claude-sonnet-*", "deepseek-v4-pro"),
    ("claude-haiku-*", "deepseek-v4-flash"),
    # older naming: claude-3-5-sonnet-…, claude-3-opus-…, claude-3-haiku-…
    ("claude-*-opus*", "deepseek-v4-pro"),
    ("claude-*-sonnet*", "deepseek-v4-pro"),
    ("claude-*-haiku*", "deepseek-v4-flash"),
)
# Claude Code's marker for a 1M-context variant in model settings (`deepseek-v4-pro[1m]`); not part of the name.
_CONTEXT_SUFFIX = "[1m]"

M = TypeVar("M")


def resolve_model(
    requested: str,
    models: Mapping[str, M],
    patterns: Sequence[tuple[str, str]] = DEFAULT_MODEL_PATTERNS,
) -> M | None:
    """The configured model for `requested`, or None (the door answers 404 not_found_error)."""
    if not isinstance(requested, str) or not requested:
        return None
    name = requested[: -len(_CONTEXT_SUFFIX)] if requested.lower().endswith(_CONTEXT_SUFFIX) else requested
    if name in models:
        return models[name]
    lowered = name.lower()
    for pattern, target in patterns:
        if fnmatch.fnmatchcase(lowered, pattern.lower()) and target in models:
            return models[target]
    return None
