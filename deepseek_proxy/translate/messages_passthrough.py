"""For the pass-through mode (a Messages request sent on to DeepSeek's own `/anthropic` endpoint): only the
thinking repair, and what keeps the prefix cache hitting (the billing-header drop, messages in one form). Pure: no I/O.

Claude Code sends a user prompt as a plain string while it is history, but as a text block (carrying the
`cache_control` marker) while it is the newest message (tests/fixtures/claude-code/interactive_thinking_replay_turn3):
the same message in two forms from one request to the next, so the prompt rendered from it can differ there and the
cached prefix stops at the message before. A non-empty string content of a user or assistant message is therefore
sent as the one text block it stands for (Anthropic's own reading of the shorthand); then only the marker moves, and
the upstream does not render that.

DeepSeek's Anthropic endpoint refuses, in thinking mode, an assistant tool-use turn sent back without a thinking
block ("The content[].thinking in the thinking mode must be passed back to the API."): after a model switch, a
resumed session or in a sub-agent's history Claude Code sends exactly that. Such a turn gets a thinking block in
front: the reasoning DeepSeek produced for it if the reasoning cache knows it (the same fingerprint as the
translating mode), otherwise a placeholder. Everything else goes through untouched.
"""

from __future__ import annotations

from typing import Any

from .messages_request import (
    REASONING_PLACEHOLDER,
    REPAIR_MODES,
    reasoning_key,
    starts_with_billing_header,
)
from .reasoning import ReasoningCache
from .tool_history import needs_repair


def repair_passthrough_body(body: dict[str, Any], cache: ReasoningCache | None = None, *,
                            repair: str = "fallback") -> tuple[dict[str, Any], list[int]]:
    """(the body to send on, the indexes of the assistant messages that were given a thinking block).

    The client's body is never modified: a changed copy is returned when anything changed.
    """
    if repair not in REPAIR_MODES:
        raise ValueError(f"repair must be one of {REPAIR_MODES}, not {repair!r}")
    out = body
    system = body.get("system")
    if isinstance(system, list) and starts_with_billing_header(system):
        out = {**body, "system": system[1:]}
    messages = body.get("messages")
    if not isinstance(messages, list):
        return out, []
    in_blocks = text_as_blocks(messages)
    if in_blocks is not messages:
        out, messages = {**out, "messages": in_blocks}, in_blocks
    thinking = body.get("thinking")
    if repair == "off" or (isinstance(thinking, dict) and thinking.get("type") == "disabled"):
        return out, []
    repaired: list[int] = []
    new_messages = list(messages)
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") != "assistant":
            continue
        content = message.get("content")
        blocks = content if isinstance(content, list) else []
        calls = [b for b in blocks if isinstance(b, dict) and b.get("type") == "tool_use"]
        if not needs_repair(repair, bool(calls)):
            continue
        if any(isinstance(b, dict) and b.get("type") == "thinking" and b.get("thinking") for b in blocks):
            continue
        reasoning = None
        if calls and cache is not None:
            reasoning = cache.get(reasoning_key((c.get("id", ""), c.get("name", ""), c.get("input", {}))
                                                for c in calls))
        block = {"type": "thinking", "thinking": reasoning or REASONING_PLACEHOLDER, "signature": ""}
        # text_as_blocks has made any text content blocks (an empty string reads as no blocks).
        kept = [b for b in blocks if not (isinstance(b, dict) and b.get("type") in ("thinking", "redacted_thinking"))]
        new_messages[index] = {**message, "content": [block, *kept]}
        repaired.append(index)
    if repaired:
        out = {**out, "messages": new_messages}
    return out, repaired


def text_as_blocks(messages: list[Any]) -> list[Any]:
    """`messages` with each user or assistant message whose content is a non-empty string given that text as one text
    block, so a message reads the same whether the client sent it as the newest (blocks) or as history (a string).
    The same list when nothing is a string (the messages themselves are never modified)."""
    out = None
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            continue
        content = message.get("content")
        if isinstance(content, str) and content:
            out = out if out is not None else list(messages)
            out[index] = {**message, "content": [{"type": "text", "text": content}]}
    return messages if out is None else out


def reasoning_entries_of_message(message: dict[str, Any]) -> list[tuple[str, str]]:
    """(reasoning cache key, reasoning) of a complete Anthropic reply with tool calls (what the pass-through door
    stores after relaying DeepSeek's reply), keyed as the repair looks it up."""
    blocks = [b for b in message.get("content") or [] if isinstance(b, dict)]
    calls = [(b.get("id", ""), b.get("name", ""), b.get("input", {})) for b in blocks if b.get("type") == "tool_use"]
    reasoning = "".join(b.get("thinking") or "" for b in blocks if b.get("type") == "thinking")
    if not calls or not reasoning:
        return []
    return [(reasoning_key(calls), reasoning)]
