"""Chat chunks → the Chat Completions client's stream (the Chat door's `DoorStream`), and the blocking reply.

Nearly identity: each upstream chunk leaves as it came (`reasoning_content` deltas included: Cline and others show
them), with these changes only:
- `model` is the name the client asked for (an alias of a configured model comes back as sent);
- tool names the upstream could not take (cleaned by the request translator) are restored;
- usage is normalised: `prompt_tokens_details.cached_tokens` from DeepSeek's `prompt_cache_hit_tokens` and
  `completion_tokens_details.reasoning_tokens` (0 when the upstream says nothing), DeepSeek's own fields kept;
  it leaves only when the client asked for it (`stream_options.include_usage`; the upstream is always asked);
- chunks replayed from a non-streaming upstream get the id / object / created a stream carries.
Keep-alives through upstream silences are SSE comments (`: keep-alive`, as DeepSeek itself sends); a failure after
the first byte is one `data: {"error": {...}}` event and the end (the openai SDK raises it as APIError).

The translator also remembers the reasoning of the reply and the ids of its tool calls (`calls_with_reasoning`),
so the door can fill the reasoning cache: a client that sends the assistant turn back without `reasoning_content`
(most do) gets it restored by the upstream layer. Pure: no I/O.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from ..core.errors import ProxyError
from ..jsonfast import dumps

KEEPALIVE = b": keep-alive\n\n"
DONE = b"data: [DONE]\n\n"


class ChatCompletionStream:
    def __init__(self, *, model: str, include_usage: bool, tool_names: dict[str, str] | None = None,
                 error_fields: Any = None):
        self.model = model
        self.include_usage = include_usage
        self.tool_names = tool_names or {}
        # (ProxyError) → (type, code): the door's OpenAI error vocabulary, passed in to keep this module pure.
        self.error_fields = error_fields or (lambda error: ("server_error", None))
        self.id: str | None = None
        self.created: int | None = None
        self.reasoning: list[str] = []
        self.call_ids: list[str] = []
        self.usage: dict | None = None
        self.finish_reason: str | None = None
        self.finished = False
        self.failed: ProxyError | None = None

    # ---- DoorStream ----------------------------------------------------------------------------------------------
    def start(self) -> list[Any]:
        return []

    def feed(self, chunk: dict) -> list[Any]:
        first = self.id is None
        if first:
            self.id = chunk.get("id") or f"chatcmpl-{uuid.uuid4().hex}"
            self.created = chunk.get("created") or int(time.time())
        if "id" not in chunk or "object" not in chunk or "created" not in chunk:
            # Replayed from a complete reply (core.chat.completion_as_chunks), or an upstream that leaves fields
            # out: the openai SDK's chunk model requires all three.
            replayed = "id" not in chunk
            chunk = {"id": chunk.get("id") or self.id, "object": "chat.completion.chunk",
                     "created": chunk.get("created") or self.created,
                     **{k: v for k, v in chunk.items() if k not in ("id", "object", "created")}}
            if replayed and first and chunk.get("choices"):
                chunk["choices"][0]["delta"].setdefault("role", "assistant")
        chunk["model"] = self.model
        for choice in chunk.get("choices") or ():
            self._note(choice.get("delta") or {}, choice)
        usage = chunk.get("usage")
        if usage:
            self.usage = normalised_usage(usage)
            if self.include_usage:
                chunk["usage"] = self.usage
            elif chunk.get("choices"):
                del chunk["usage"]
            else:
                return []  # the usage-only chunk the client did not ask for
        return [chunk]

    def keepalive(self) -> list[Any]:
        return [KEEPALIVE]

    def finish(self) -> list[Any]:
        self.finished = True
        return [DONE]

    def fail(self, error: ProxyError) -> list[Any]:
        self.failed = error
        kind, code = self.error_fields(error)
        return [{"error": {"message": error.message, "type": kind, "param": error.param, "code": code}}]

    @staticmethod
    def encode(events: list[Any]) -> bytes:
        return b"".join(e if type(e) is bytes else b"data: " + dumps(e) + b"\n\n" for e in events)

    # ---- what the door keeps ------------------------------------------------------------------------------------
    def calls_with_reasoning(self) -> list[tuple[str, str]]:
        """(tool call id, the reasoning that led to it) for the reasoning cache; empty without reasoning."""
        reasoning = "".join(self.reasoning)
        return [(call_id, reasoning) for call_id in self.call_ids] if reasoning else []

    def _note(self, delta: dict, choice: dict) -> None:
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]
        reasoning = delta.get("reasoning_content")
        if reasoning:
            self.reasoning.append(reasoning)
        for call in delta.get("tool_calls") or ():
            if call.get("id"):
                self.call_ids.append(call["id"])
            function = call.get("function")
            if self.tool_names and function and function.get("name") in self.tool_names:
                function["name"] = self.tool_names[function["name"]]


def client_completion(completion: dict, stream: ChatCompletionStream) -> dict:
    """The blocking path: the upstream's chat.completion for the client (the same changes as the stream), noting
    the reasoning and tool-call ids in `stream` for the reasoning cache."""
    completion["model"] = stream.model
    for choice in completion.get("choices") or ():
        message = choice.get("message") or {}
        if message.get("reasoning_content"):
            stream.reasoning.append(message["reasoning_content"])
        for call in message.get("tool_calls") or ():
            if call.get("id"):
                stream.call_ids.append(call["id"])
            function = call.get("function") or {}
            if function.get("name") in stream.tool_names:
                function["name"] = stream.tool_names[function["name"]]
        if choice.get("finish_reason"):
            stream.finish_reason = choice["finish_reason"]
    if completion.get("usage"):
        completion["usage"] = stream.usage = normalised_usage(completion["usage"])
    stream.finished = True
    return completion


def normalised_usage(usage: dict) -> dict:
    """OpenAI's usage fields filled in from DeepSeek's (`prompt_cache_hit_tokens`); DeepSeek's own kept."""
    prompt = usage.get("prompt_tokens_details")
    completion = usage.get("completion_tokens_details")
    if (isinstance(prompt, dict) and prompt.get("cached_tokens") is not None
            and isinstance(completion, dict) and completion.get("reasoning_tokens") is not None):
        return usage  # already complete (DeepSeek V4 sends both)
    out = dict(usage)
    prompt = dict(prompt) if isinstance(prompt, dict) else {}
    if prompt.get("cached_tokens") is None:
        prompt["cached_tokens"] = usage.get("prompt_cache_hit_tokens") or 0
    completion = dict(completion) if isinstance(completion, dict) else {}
    if completion.get("reasoning_tokens") is None:
        completion["reasoning_tokens"] = 0
    out["prompt_tokens_details"] = prompt
    out["completion_tokens_details"] = completion
    return out
