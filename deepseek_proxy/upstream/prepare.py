"""The Chat-side clean-up every request gets before it leaves, whichever front door built it.

A door translates its client's request into the hub form (`core.chat.ChatRequest`) and stops there; what the
upstream needs on top of that is done here, once, driven by the upstream's profile:

- every assistant tool call is answered right after its message (DeepSeek 400s otherwise): missing answers are
  filled in, answers whose call is unknown become user text, images a tool returned follow as a user message
  (translate/tool_history.py, whose pieces the Messages and Gemini translators also use on their clients' shapes);
- in thinking mode every assistant turn carries `reasoning_content` (DeepSeek rejects a tool-call turn without
  it): what the door passed on, else what this proxy produced for one of the turn's calls (the reasoning cache),
  else ""; outside thinking mode none does;
- tool names are within the upstream's `[A-Za-z0-9_-]{1,64}`; `strict` and `parallel_tool_calls` only where the
  profile accepts them; `max_tokens` clamped to the model's limit;
- the keys are written in one fixed order, so the same request is always the same bytes (prefix cache).

Pure: no I/O. The reasoning cache is only read.
"""

from __future__ import annotations

from typing import Any

from ..config import ModelConfig
from ..core.chat import ChatMessage, ChatRequest
from ..translate.reasoning import ReasoningCache
from ..translate.tool_history import NO_TOOL_OUTPUT, answer_every_tool_call
from ..translate.tools import flat_tool_name
from .profiles import OpenAICompatibleProfile

__all__ = ["NO_TOOL_OUTPUT", "answer_every_tool_call", "prepare_request"]

# The order keys leave in. A door may build its dict in any order; the bytes sent never depend on it.
_KEY_ORDER = ("model", "messages", "response_format", "tools", "tool_choice", "parallel_tool_calls", "thinking",
              "reasoning_effort", "max_tokens", "temperature", "top_p", "stream", "stream_options")


def prepare_request(chat: ChatRequest, *, model: ModelConfig, profile: OpenAICompatibleProfile, thinking: bool,
                    cache: ReasoningCache | None = None) -> ChatRequest:
    """The request as the upstream must get it. `thinking`: the request runs in thinking mode (the profile's
    `thinking()` choice for it). `chat` is not modified; its message dicts may be shared with the result."""
    fields: dict[str, Any] = dict(chat)
    fields["messages"] = _with_reasoning(answer_every_tool_call(chat.get("messages") or []), thinking, cache)
    tools = fields.get("tools")
    if tools:
        fields["tools"] = [_clean_tool(tool, profile) for tool in tools]
    if not profile.accepts_parallel_tool_calls or not tools:
        fields.pop("parallel_tool_calls", None)
    if fields.get("max_tokens") is not None:
        fields["max_tokens"] = min(fields["max_tokens"], model.max_output_tokens)
    ordered = {key: fields.pop(key) for key in _KEY_ORDER if key in fields}
    ordered.update(fields)  # anything a door added beyond the usual keys, in its own order
    return ordered  # type: ignore[return-value]


def _clean_tool(tool: dict, profile: OpenAICompatibleProfile) -> dict:
    function = tool.get("function")
    if tool.get("type") != "function" or not isinstance(function, dict):
        return tool
    name = function.get("name")
    clean = flat_tool_name(name) if isinstance(name, str) else name
    if clean == name and (profile.accepts_strict or "strict" not in function):
        return tool  # the common case: nothing to change, nothing copied
    function = {k: v for k, v in function.items() if k != "strict" or profile.accepts_strict}
    function["name"] = clean
    return {**tool, "function": function}


def _with_reasoning(messages: list[ChatMessage], thinking: bool, cache: ReasoningCache | None) -> list[ChatMessage]:
    out: list[ChatMessage] = []
    for message in messages:
        if message.get("role") != "assistant":
            out.append(message)
            continue
        if not thinking:
            if "reasoning_content" in message:
                message = {k: v for k, v in message.items() if k != "reasoning_content"}  # type: ignore[assignment]
            out.append(message)
            continue
        reasoning = message.get("reasoning_content")
        if not reasoning and cache is not None:
            calls = message.get("tool_calls") or ()
            reasoning = next((r for r in (cache.get(c["id"]) for c in calls) if r), None) or reasoning
        reasoning = reasoning or ""
        if message.get("reasoning_content") == reasoning and "reasoning_content" in message:
            out.append(message)
            continue
        # reasoning_content right after content, where the doors put it: the same turn, the same bytes.
        rebuilt: dict[str, Any] = {}
        for key, value in message.items():
            if key == "reasoning_content":
                continue
            rebuilt[key] = value
            if key == "content":
                rebuilt["reasoning_content"] = reasoning
        rebuilt.setdefault("reasoning_content", reasoning)
        out.append(rebuilt)  # type: ignore[arg-type]
    return out
