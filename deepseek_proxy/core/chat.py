"""The hub form: a Chat Completions request and stream chunk, as typed dicts.

Every front door translates its client's request into a `ChatRequest` and the upstream's `ChatChunk`s back into
its client's events. They are TypedDicts, not classes, on purpose: the request is sent as it is, serialized with
`jsonfast.dumps`, whose output follows dict insertion order. The same history therefore always becomes the same
bytes, so turn N's request is a byte prefix of turn N+1's and DeepSeek's prefix cache keeps hitting. Build the
dicts in a fixed key order; never sort or re-create them on the way out.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict


class ChatFunction(TypedDict):
    name: str
    arguments: str


class ChatToolCall(TypedDict, total=False):
    id: str
    type: Literal["function"]
    function: ChatFunction
    index: int  # in stream deltas only


class ChatMessage(TypedDict, total=False):
    role: Literal["system", "user", "assistant", "tool"]
    content: Any  # str, or a list of content parts (text / image_url) for user messages
    reasoning_content: str  # assistant turns in thinking mode (DeepSeek requires it back on tool-call turns)
    tool_calls: list[ChatToolCall]
    tool_call_id: str  # tool messages


class ChatRequest(TypedDict, total=False):
    model: str
    messages: list[ChatMessage]
    response_format: dict[str, Any]
    tools: list[dict[str, Any]]
    tool_choice: Any
    parallel_tool_calls: bool
    thinking: dict[str, Any]  # DeepSeek: {"type": "enabled" | "disabled"}
    reasoning_effort: str
    max_tokens: int
    temperature: float
    top_p: float
    stream: bool
    stream_options: dict[str, Any]


class ChatDelta(TypedDict, total=False):
    role: str
    content: str | None
    reasoning_content: str | None
    tool_calls: list[ChatToolCall]


class ChatChoice(TypedDict, total=False):
    index: int
    delta: ChatDelta
    message: ChatMessage  # a non-streamed completion's choice
    finish_reason: str | None


class ChatChunk(TypedDict, total=False):
    id: str
    object: str
    created: int
    model: str
    choices: list[ChatChoice]
    usage: dict[str, Any] | None
    error: Any  # an error reported inside an already started stream


# A door may put the images a tool returned on its `tool` message under this key (Chat tool messages carry text
# only); the upstream layer moves them into a user message right after the answers. Never sent as it is.
TOOL_IMAGES = "_images"


def completion_as_chunks(completion: dict) -> list[ChatChunk]:
    """A complete (non-streamed) chat.completion as the chunks a stream would have carried, so one stream
    translator per door serves both paths: the same events, the same final object."""
    chunks: list[ChatChunk] = []
    for choice in completion.get("choices") or ():
        message = choice.get("message") or {}
        delta: ChatDelta = {}
        if message.get("reasoning_content"):
            delta["reasoning_content"] = message["reasoning_content"]
        if message.get("content"):
            delta["content"] = message["content"]
        if message.get("tool_calls"):
            delta["tool_calls"] = [{**call, "index": i} for i, call in enumerate(message["tool_calls"])]
        chunks.append({"choices": [{"index": choice.get("index", 0), "delta": delta,
                                    "finish_reason": choice.get("finish_reason")}]})
    if completion.get("usage"):
        chunks.append({"choices": [], "usage": completion["usage"]})
    return chunks
